# `smolvlm export --format hf|gguf|onnx|mlx`: the Hugging Face folder, and the formats people deploy small VLMs in,
# each converted from a merged float32 Hugging Face folder by its own module (deploy/gguf.py, onnx.py, mlx.py).
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from ..errors import UserError

# format -> "module:function"; each writer takes (merged fp32 HF folder, its empty output folder, say) and writes
# the files and a model card saying how to run them.
WRITERS = {
    "gguf": "smolvlm_cli.deploy.gguf:write_gguf",
    "mlx": "smolvlm_cli.deploy.mlx:write_mlx",
    "onnx": "smolvlm_cli.deploy.onnx:write_onnx",
}
FORMATS = ("hf", *WRITERS)


def check_formats(formats: list[str]) -> list[str]:
    """The formats in order, once each; an unknown one is a one-line error naming the known ones."""
    chosen = list(dict.fromkeys(f.lower() for f in formats)) or ["hf"]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise UserError(f"--format {', '.join(unknown)} is not one of {', '.join(FORMATS)}",
                        "pass --format hf, or one of the others (repeatable)")
    return chosen


def export_formats(target: Path, out: Path, formats: list[str], checkpoint: str = "last", merge: bool = True,
                   dtype: str = "bfloat16", force: bool = False, say=None) -> dict[str, Path]:
    """Each format's folder: OUT itself for one format, OUT/FORMAT for several. Non-HF formats always start from a
    merged float32 export (adapters merged whatever --keep-adapters says: no runtime applies peft adapters).
    Everything is written into a temporary sibling of OUT and renamed into place at the end."""
    from ..export import export
    from ..fsutil import atomic_output_dir, check_output_dir

    chosen = check_formats(formats)
    out = Path(out)
    if chosen == ["hf"]:
        return {"hf": export(target, out, checkpoint=checkpoint, merge=merge, dtype=dtype, force=force, say=say)}
    check_output_dir(out, force)
    place = {f: (Path(f) if len(chosen) > 1 else Path(".")) for f in chosen}
    with atomic_output_dir(out, force=True) as tmp, tempfile.TemporaryDirectory(dir=out.parent) as work:
        merged = Path(work) / "merged"
        export(target, merged, checkpoint=checkpoint, merge=True, dtype="float32", say=None)
        for fmt in chosen:
            folder = tmp / place[fmt]
            if fmt == "hf":
                export(target, folder, checkpoint=checkpoint, merge=merge, dtype=dtype, force=True, say=say)
                continue
            folder.mkdir(parents=True, exist_ok=True)
            module, function = WRITERS[fmt].split(":")
            getattr(importlib.import_module(module), function)(merged, folder, say)
    return {f: out / place[f] for f in chosen}
