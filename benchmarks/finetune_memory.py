"""Fine-tuning memory and speed at the released SmolVLM2-256M's shapes (random weights): full, LoRA, DoRA and QLoRA
as the finetune-*.yaml recipes set them (vision frozen, connector full, the LM's projections adapted; full: all but
vision), 1 process, micro batch 1, one 512 px image (64 image tokens) + a 16-token prompt + 64 answer tokens.

For each mode, in its own process: model-state memory measured from the tensors themselves (weights as stored:
4-bit packed + quant state for QLoRA; fp32 gradients of the trainable parameters; the optimizer's state after a
step: fp32 AdamW, or bitsandbytes' 8-bit AdamW for QLoRA), the process's peak memory (GPU: max allocated; CPU: peak
resident set, which includes the Python runtime and libraries) and seconds per step (mean of 3 after 1 warm-up).
The same per-part groups, adapters and optimizers as training (train.phases / train.quantize / engine._optimizer),
without DeepSpeed.

    python benchmarks/finetune_memory.py [--device cpu|cuda] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("full", "lora", "dora", "qlora")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def config_256m():
    """SmolVLM2-256M's architecture: SigLIP-B/16-512 + SmolLM2-135M, pixel shuffle 4, untied lm_head."""
    from transformers import SmolVLMConfig

    vision = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "image_size": 512, "patch_size": 16}
    text = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49280, "rope_theta": 100000,
            "max_position_embeddings": 8192, "tie_word_embeddings": False}
    return SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=4, image_token_id=49190,
                         tie_word_embeddings=False)


def phase(mode: str):
    from smolvlm_cli.recipe_train import Phase

    adapted = {"full": "full", "lora": "lora", "dora": "dora", "qlora": "qlora"}[mode]
    parts = {"vision": {"mode": "frozen"}, "connector": {"mode": "full", "lr": 1e-4},
             "text": {"mode": adapted, "lr": 1e-4},
             "embeddings": {"mode": "full", "lr": 1e-4} if mode == "full" else {"mode": "frozen"}}
    return Phase(name=mode, steps=10, global_batch_size=1, weight_decay=0.01, parts=parts,
                 adapter={"r": 8, "alpha": 8, "dropout": 0.1, "target_modules": TARGETS},
                 data=[{"source": "x", "weight": 100}])


def batch(config, device):
    import torch

    g = torch.Generator().manual_seed(0)
    image_tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2 // config.scale_factor ** 2
    prompt = torch.randint(0, 49152, (16,), generator=g)
    answer = torch.randint(0, 49152, (64,), generator=g)
    ids = torch.cat([torch.full((image_tokens,), config.image_token_id), prompt, answer])[None]
    labels = torch.full_like(ids, -100)
    labels[0, -64:] = answer
    pixels = torch.randn(1, 1, 3, 512, 512, generator=g)
    return {"input_ids": ids.to(device), "pixel_values": pixels.to(device), "labels": labels.to(device)}


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_bytes(optimizer) -> int:
    import torch

    def walk(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from walk(v)

    return tensor_bytes(t for s in optimizer.state.values() for t in walk(s))


def measure(mode: str, model_dir: str, device: str, steps: int) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText

    from smolvlm_cli.train import quantize
    from smolvlm_cli.train.engine import _optimizer
    from smolvlm_cli.train.phases import apply_phase, param_groups

    torch.manual_seed(0)
    p = phase(mode)
    bf16 = device == "cuda"
    quant = quantize.quantization_config(p, bf16)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, quantization_config=quant,
                                                        device_map={"": device} if quant else None)
    model = apply_phase(quantize.prepare(model, p), p).to(device)
    optimizer = _optimizer(param_groups(model, p), p, False, "adamw_8bit" if mode == "qlora" else "adamw")
    data = batch(model.config, device)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**data).loss
        loss.backward()
        if i == 0:
            grads = tensor_bytes(q.grad for q in model.parameters() if q.grad is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    weights = tensor_bytes(model.state_dict().values())  # as stored (4-bit packed + quant state for QLoRA)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    return {"mode": mode, "trainable": trainable, "weights_mib": weights / 2**20, "grads_mib": grads / 2**20,
            "optimizer_mib": optimizer_bytes(optimizer) / 2**20,
            "model_state_mib": (weights + grads + optimizer_bytes(optimizer)) / 2**20,
            "peak_mib": peak / 2**20, "s_per_step": sum(times) / len(times), "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one:
        print(json.dumps(measure(args.one, args.model, device, args.steps)))
        return
    from transformers import AutoModelForImageTextToText

    with tempfile.TemporaryDirectory() as tmp:
        AutoModelForImageTextToText.from_config(config_256m(), dtype=torch.float32).save_pretrained(tmp)
        rows = []
        for mode in MODES:  # one process each: a peak is a process's own
            out = subprocess.run([sys.executable, __file__, "--one", mode, "--model", tmp, "--device", device,
                                  "--steps", str(args.steps)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"SmolVLM2-256M shapes, {device}, 1 process, micro batch 1, 512 px image + 64 answer tokens")
    print("| mode | trainable | weights MiB | grads MiB | optimizer MiB | model state MiB | vs full | peak MiB | "
          "s/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    full = rows[0]["model_state_mib"]
    for r in rows:
        print(f"| {r['mode']} | {r['trainable']:,} | {r['weights_mib']:.0f} | {r['grads_mib']:.0f} | "
              f"{r['optimizer_mib']:.0f} | {r['model_state_mib']:.0f} | {r['model_state_mib'] / full:.2f} | "
              f"{r['peak_mib']:.0f} | {r['s_per_step']:.2f} |")


if __name__ == "__main__":
    main()
