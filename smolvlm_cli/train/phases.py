# What trains in a phase: part membership of every parameter, peft adapters (DoRA / LoRA), requires_grad,
# and optimizer parameter groups with a learning rate per part and no weight decay on norms and biases.
from __future__ import annotations

import re

from ..errors import RecipeError
from . import quantize  # noqa: F401  (quiets bitsandbytes before peft imports it)

PARTS = ("vision", "connector", "text", "embeddings")
_PEFT_PREFIX = re.compile(r"^base_model\.model\.")
# Where each part's adaptable Linear layers live, and their names (module names of SmolVLMForConditionalGeneration).
ADAPTER_PREFIX = {
    "vision": r"model\.vision_model\.encoder\.layers\.\d+\.",
    "text": r"model\.text_model\.layers\.\d+\.",
    "connector": r"model\.connector\.modality_projection\.",
    "embeddings": r"",
}
ADAPTER_LEAVES = {
    "vision": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "text": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "connector": ("proj",),
    "embeddings": ("lm_head",),
}


def part_of(name: str) -> str:
    """The part a parameter (or module) name belongs to; peft's wrapper prefix is ignored."""
    name = _PEFT_PREFIX.sub("", name)
    if name.startswith("model.vision_model."):
        return "vision"
    if name.startswith("model.connector."):
        return "connector"
    if name.startswith(("model.text_model.embed_tokens", "lm_head")):
        return "embeddings"
    if name.startswith("model.text_model."):
        return "text"
    raise ValueError(f"parameter {name} belongs to no part")


def adapter_config(phase):
    """A peft LoraConfig for the parts in dora/lora mode, or None when the phase has no adapters."""
    # a qlora part carries LoRA adapters too (its base layers are 4-bit: train.quantize)
    modes = {p: {"qlora": "lora"}.get(t.mode, t.mode) for p, t in phase.parts.items()
             if t.mode in ("dora", "lora", "qlora")}
    if not modes:
        return None
    if len(set(modes.values())) > 1:
        raise RecipeError(f"phase '{phase.name}' mixes dora and lora parts", "use one adapter type per phase")
    from peft import LoraConfig

    a = phase.adapter
    alternatives = []
    for part in sorted(modes):
        leaves = [x for x in (a.target_modules or ADAPTER_LEAVES[part]) if x in ADAPTER_LEAVES[part]]
        if leaves:
            alternatives.append(ADAPTER_PREFIX[part] + r"(?:[\w.]*\.)?(?:" + "|".join(leaves) + ")")
    if not alternatives:
        known = sorted({x for p in modes for x in ADAPTER_LEAVES[p]})
        raise RecipeError(f"phase '{phase.name}': adapter.target_modules {a.target_modules} match no layer of its "
                          f"adapted parts", f"choose from {', '.join(known)}")
    target = "^(?:" + "|".join(alternatives) + ")$"
    return LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=target, bias="none",
                      use_dora=next(iter(modes.values())) == "dora")


def apply_phase(model, phase):
    """Wrap with adapters if the phase has any, then set requires_grad per part:
    full -> every parameter of the part; dora/lora/qlora -> the adapters plus the part's parameters no adapter wraps
    (norms, vision embeddings, and for `embeddings` the input embedding rows), as in the released DoRA phase;
    frozen -> nothing."""
    config = adapter_config(phase)
    if config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, config)
    for name, param in model.named_parameters():
        mode = phase.parts.get(part_of(name)).mode if part_of(name) in phase.parts else "frozen"
        if mode == "full":
            param.requires_grad_(True)
        elif mode in ("dora", "lora", "qlora"):
            wrapped = ".base_layer." in name
            # packed 4-bit weights of a qlora part that no adapter wraps (target_modules left them out) stay frozen
            param.requires_grad_("lora_" in name or (not wrapped and param.is_floating_point()))
        else:
            param.requires_grad_(False)
    return model


def _shape(param):
    return tuple(getattr(param, "ds_shape", param.shape))  # ZeRO-3 keeps the real shape in ds_shape


def _numel(param) -> int:
    quant = getattr(param, "quant_state", None)  # a 4-bit weight packs two values a byte
    if quant is not None:
        return int(quant.shape.numel())
    return int(getattr(param, "ds_numel", param.numel()))


def param_groups(model, phase) -> list[dict]:
    """One group per (part, decay): the part's learning rate; weight decay only on matrices (not norms/biases)."""
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = part_of(name)
        decay = len(_shape(param)) >= 2 and "lora_magnitude" not in name
        key = (part, decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": phase.parts[part].lr, "weight_decay": phase.weight_decay if decay
                           else 0.0, "name": f"{part}{'' if decay else '/no_decay'}"}
        groups[key]["params"].append(param)
    return list(groups.values())


def trainable_summary(model, phase) -> list[dict]:
    """Per part: mode, trainable and total parameters, learning rate (for the start-up table)."""
    rows = {p: {"part": p, "mode": phase.parts[p].mode if p in phase.parts else "frozen", "trainable": 0,
                "total": 0, "lr": phase.parts[p].lr if p in phase.parts else None} for p in PARTS}
    for name, param in model.named_parameters():
        row = rows[part_of(name)]
        n = _numel(param)
        row["total"] += n
        if param.requires_grad:
            row["trainable"] += n
    return list(rows.values())
