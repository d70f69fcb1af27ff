# QLoRA: which parts load as bitsandbytes 4-bit NF4, the checks that stop a run whose engine or optimizer cannot
# carry them, bitsandbytes' 8-bit optimizers, and de-quantising a 4-bit state dict back to plain weights.
from __future__ import annotations

import logging

from ..errors import RecipeError

# bitsandbytes (which peft imports) warns at import, on CPUs with AVX512-BF16, that it could not fetch an optional
# kernel from the hub: nothing here reaches the hub, and its built-in kernel runs instead. Set before peft loads.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# Module-name prefixes of each part (SmolVLMForConditionalGeneration); parts not in qlora mode stay unquantized.
PART_MODULES = {"vision": ("model.vision_model",), "connector": ("model.connector",),
                "text": ("model.text_model",), "embeddings": ("model.text_model.embed_tokens", "lm_head")}
_QUANT_STATE = ".quant_state.bitsandbytes__"


def qlora_parts(phase) -> list[str]:
    return sorted(p for p, t in phase.parts.items() if t.mode == "qlora")


def quantization_config(phase, bf16: bool):
    """transformers' BitsAndBytesConfig for the phase's qlora parts (NF4, double quantisation, bf16 compute on a
    bf16 GPU, fp32 otherwise), or None when the phase has none. Every other part, and lm_head, is skipped."""
    parts = qlora_parts(phase)
    if not parts:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    skip = sorted({m for p, mods in PART_MODULES.items() if p not in parts for m in mods} | {"lm_head"})
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32,
                              llm_int8_skip_modules=skip)


def device_map(dist) -> dict | None:
    """Quantize straight onto this rank's GPU (bitsandbytes quantizes when a weight reaches its device)."""
    import torch

    return {"": f"cuda:{dist.local_rank}"} if torch.cuda.is_available() else None


def prepare(model, phase):
    """peft's preparation of a k-bit model (fp32 layer norms, frozen base); gradient checkpointing stays the
    engine's to switch on, non-reentrant, which needs no input gradients."""
    if not qlora_parts(phase):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def check(ds: dict, optimizer: str, phase) -> None:
    """Stop before the model loads when the DeepSpeed config or the machine cannot run the phase's QLoRA or the
    recipe's 8-bit optimizer. Every rank reaches the same verdict at the same point: the error is agreed."""
    try:
        _check(ds, optimizer, phase)
    except RecipeError as e:
        e.agreed = True
        raise


def _check(ds: dict, optimizer: str, phase) -> None:
    import importlib.util

    import torch

    if (qlora_parts(phase) or optimizer != "adamw") and importlib.util.find_spec("bitsandbytes") is None:
        what = "mode qlora" if qlora_parts(phase) else f"train.optimizer {optimizer}"
        raise RecipeError(f"phase '{phase.name}' uses {what}, which needs bitsandbytes (not installed)",
                          "pip install 'smolvlm-cli[qlora]'")
    zero = ds.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if qlora_parts(phase) and stage == 3:
        raise RecipeError(f"phase '{phase.name}' trains QLoRA (4-bit {', '.join(qlora_parts(phase))}) but ZeRO-3 "
                          "partitions weights, which bitsandbytes' packed 4-bit weights cannot be",
                          "use --deepspeed zero0 or zero2 (one GPU: zero0), or mode lora with zero3")
    if optimizer == "adamw":
        return
    offload = (zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme")
    if offload or zero.get("cpu_offload") is True:
        raise RecipeError(f"train.optimizer {optimizer} cannot run under ZeRO-Offload, which steps only with "
                          "DeepSpeed's CPU Adam", "set train.optimizer=adamw, or use --deepspeed zero0 or zero2")
    if optimizer == "paged_adamw_8bit" and not torch.cuda.is_available():
        raise RecipeError("train.optimizer paged_adamw_8bit pages optimizer state through CUDA memory and this "
                          "machine has no GPU", "set train.optimizer=adamw_8bit (it runs on the CPU)")


def optimizer_8bit(groups: list[dict], name: str, betas: tuple[float, float]):
    """bitsandbytes' AdamW with 8-bit state (blockwise quantized moments), paged to CPU memory under pressure or
    not; the per-part groups (learning rates, weight-decay split) as given."""
    import bitsandbytes as bnb

    cls = {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}[name]
    return cls(groups, betas=betas, eps=1e-8)


def is_quantized(state: dict) -> bool:
    return any(_QUANT_STATE in k for k in state)


def dequantized(state: dict) -> dict:
    """A state dict with every 4-bit weight (packed bytes + its quant-state entries) replaced by the fp32 weight it
    stands for, so that a plain (peft-wrapped) model loads it; other entries pass unchanged."""
    import torch
    from bitsandbytes.functional import QuantState, dequantize_4bit

    out = dict(state)
    for marker in [k for k in state if _QUANT_STATE in k]:
        weight = marker.split(".quant_state.")[0]
        parts = {k[len(weight) + 1:]: out.pop(k) for k in list(out) if k.startswith(weight + ".")}
        quant = QuantState.from_dict(parts, device=out[weight].device)
        out[weight] = dequantize_4bit(out[weight], quant).to(torch.float32)
    return out
