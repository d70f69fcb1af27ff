# DeepSpeed configs: the shipped zero2 / zero3 / zero3_offload files or a user's JSON, with "auto" filled in
# from the phase (batch sizes, clipping, precision, bucket sizes) so the recipe stays the one source of truth.
from __future__ import annotations

import json
from pathlib import Path

from ..errors import RecipeError

# The repository's ds_configs/ is installed as package data (pyproject maps it to smolvlm_cli/ds_configs), so a wheel
# has it beside this package; a source checkout (editable install, tests) reads the root folder itself.
_IN_PACKAGE = Path(__file__).resolve().parent.parent / "ds_configs"
SHIPPED = _IN_PACKAGE if _IN_PACKAGE.is_dir() else Path(__file__).resolve().parents[2] / "ds_configs"
MIN_BUCKET = 50_000_000  # elements per reduce / prefetch bucket
MIN_PERSIST = 100_000  # parameters with fewer elements stay whole on every rank (ZeRO-3)


def load_ds_config(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = SHIPPED / f"{name_or_path}.json"
    if not path.is_file():
        shipped = ", ".join(p.stem for p in sorted(SHIPPED.glob("*.json")))
        raise RecipeError(f"DeepSpeed config '{name_or_path}' not found", f"use one of {shipped} or a JSON file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecipeError(f"DeepSpeed config '{path}' is not valid JSON (line {e.lineno})", "fix the file") from None


def gradient_accumulation(global_batch: int, micro_batch: int, world_size: int) -> int:
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise RecipeError(
            f"global batch {global_batch} is not divisible by micro batch {micro_batch} x {world_size} processes",
            "change global_batch_size or micro_batch_size, or the number of processes",
        )
    return global_batch // per_step


def use_bf16(precision: str) -> bool:
    import torch

    if precision == "fp32":
        return False
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not supported:
        raise RecipeError("bf16 was asked for but this machine has no bf16-capable GPU", "set train.precision=auto")
    return supported


def fill(config: dict, *, micro_batch: int, grad_accum: int, world_size: int, grad_clip: float | None,
         bf16: bool, hidden_size: int, persistence_threshold: int | None = None) -> dict:
    """Replace every "auto" (at any depth) with the value the phase implies. `persistence_threshold` (the recipe's
    train.zero3_persistence_threshold) replaces the floored default: 0 partitions every parameter."""
    explicit = persistence_threshold is not None
    if not explicit:
        persistence_threshold = max(10 * hidden_size, MIN_PERSIST)
    values = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": grad_clip or 0.0,
        "enabled": bf16,
        # transformers' sizing (hidden^2) with floors: tiny models otherwise pay one collective per few KB
        "reduce_bucket_size": max(hidden_size * hidden_size, MIN_BUCKET),
        "stage3_prefetch_bucket_size": max(int(0.9 * hidden_size * hidden_size), MIN_BUCKET),
        "stage3_param_persistence_threshold": persistence_threshold,
    }

    def walk(node, key=None):
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if node == "auto":
            if key not in values:
                raise RecipeError(f"DeepSpeed config field '{key}' is 'auto' but has no value to fill in",
                                  "set it explicitly in the config")
            return values[key]
        return node

    filled = walk(config)
    filled.setdefault("zero_allow_untested_optimizer", True)  # our AdamW with per-part groups
    _check_persistence(filled, persistence_threshold, explicit)
    return filled


def _check_persistence(filled: dict, threshold: int, explicit: bool) -> None:
    """A recipe threshold also reaches a ZeRO-3 config that leaves the field out; one that the config's own number
    would override is refused, not silently dropped."""
    zero = filled.get("zero_optimization", {})
    key = "stage3_param_persistence_threshold"
    if not explicit or zero.get("stage") != 3:
        return
    zero.setdefault(key, threshold)
    if zero[key] != threshold:
        raise RecipeError(f"the DeepSpeed config sets {key} to {zero[key]} but the recipe's "
                          f"train.zero3_persistence_threshold is {threshold}",
                          f'set {key} to "auto" in the config, or drop the recipe field')


def offloads_optimizer(config: dict) -> bool:
    """Whether ZeRO keeps the optimizer on the CPU (or NVMe), where DeepSpeed accepts only its own CPU Adam."""
    zero = config.get("zero_optimization", {})
    device = (zero.get("offload_optimizer") or {}).get("device", "none")
    return device in ("cpu", "nvme") or zero.get("cpu_offload") is True
