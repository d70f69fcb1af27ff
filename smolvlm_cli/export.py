# `smolvlm export`: a run (its last, best or a given checkpoint) or a model folder -> a Hugging Face folder that
# plain transformers loads: ZeRO shards consolidated on one process, adapters merged or kept as a peft adapter.
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Source:
    kind: str  # "folder": an HF model folder; "checkpoint": a DeepSpeed checkpoint of a phase
    path: Path
    run: Path | None = None
    phase_index: int | None = None
    step: int | None = None


def _run_info(run: Path) -> tuple[dict, object]:
    from .recipe import load_recipe

    info = json.loads((run / "run.json").read_text())
    return info, load_recipe(run / "recipe.yaml")


def _phase_dirs(run: Path) -> list[Path]:
    return sorted(p for p in (run / "phases").glob("*") if (p / "config.json").is_file())


def resolve_source(target: Path, checkpoint: str = "last") -> Source:
    """What to export: a model folder, a checkpoint folder, or a run with `last` / `best` / a step number."""
    from .train import checkpoint as ckpt

    target = Path(target)
    if (target / "trainer_state.json").is_file():  # a checkpoint folder itself
        state = ckpt.read_trainer_state(target)
        return Source("checkpoint", target, target.parent.parent, state["phase_index"], state["step"])
    if not (target / "run.json").is_file():
        if (target / "config.json").is_file():
            return Source("folder", target)
        raise UserError(f"'{target}' is not a run, a checkpoint or a model folder",
                        "pass the --out folder of train-vision/train-video, or a model folder")
    if checkpoint == "best":
        index = target / "best" / "best.json"
        entries = json.loads(index.read_text()) if index.is_file() else []
        if not entries:
            raise UserError(f"run '{target}' has no evaluated checkpoints in best/",
                            "configure eval in the recipe, or export --checkpoint last")
        return Source("folder", target / "best" / entries[0]["name"], target)
    if checkpoint == "last":
        _, recipe = _run_info(target)
        stage = json.loads((target / "run.json").read_text())["stage"]
        done = _phase_dirs(target)
        if len(done) == len(recipe.stages[stage].phases):
            return Source("folder", done[-1], target)
        latest = ckpt.latest(target)
        if latest is None:
            raise UserError(f"run '{target}' has no finished phase and no checkpoint", "train first")
        return resolve_source(latest)
    if not checkpoint.isdigit():
        raise UserError(f"--checkpoint {checkpoint!r} is not best, last or a step number", "e.g. --checkpoint 200")
    found = sorted((target / "checkpoints").glob(f"phase*-step{int(checkpoint):08d}"))
    found = [p for p in found if (p / "trainer_state.json").is_file()]
    if not found:
        have = ", ".join(p.name for p in sorted((target / "checkpoints").glob("phase*-step*"))) or "none"
        raise UserError(f"run '{target}' has no checkpoint at step {checkpoint}", f"available: {have}")
    return resolve_source(found[-1])


def _phase_of(source: Source):
    info, recipe = _run_info(source.run)
    phases = recipe.stages[info["stage"]].phases
    start = Path(info["init"]) if source.phase_index == 0 else \
        source.run / "phases" / f"{source.phase_index - 1:02d}-{phases[source.phase_index - 1].name}"
    return phases[source.phase_index], start, recipe


def load_for_export(source: Source, merge: bool = True):
    """(model on CPU in fp32, folder whose processor files go with it, recipe or None)."""
    import torch
    from transformers import AutoModelForImageTextToText

    if source.kind == "folder":
        model = AutoModelForImageTextToText.from_pretrained(source.path, dtype=torch.float32)
        recipe = _run_info(source.run)[1] if source.run else None
        return model, source.path, recipe
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from .train.checkpoint import DS_TAG
    from .train.consolidate import build_model, merged_model

    phase, start, recipe = _phase_of(source)
    state = get_fp32_state_dict_from_zero_checkpoint(str(source.path), tag=DS_TAG)
    if merge:
        return merged_model(state, start, phase), start, recipe
    model = build_model(start, phase)
    model.load_state_dict(state, strict=False)
    return model.eval(), start, recipe


def model_card(recipe, source: Source, run: Path | None) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags: [smolvlm, smolvlm-cli]",
             "---", "", f"# {recipe.name if recipe else source.path.name}", ""]
    if recipe:
        lines += [recipe.description or "", "", "Trained with [smolvlm-cli](https://pypi.org/project/smolvlm-cli/).",
                  ""]
        for stage_name, stage in recipe.stages.items():
            lines += [f"## {stage_name} stage", "", "| phase | steps | global batch | trainable | data mixture |",
                      "|---|---|---|---|---|"]
            for p in stage.phases:
                parts = ", ".join(f"{k} {v.mode}" for k, v in p.parts.items())
                mix = ", ".join(f"{e.source} {e.weight:g}" for e in p.data)
                lines.append(f"| {p.name} | {p.steps} | {p.global_batch_size} | {parts} | {mix} |")
            lines.append("")
    if source.step is not None:
        lines += [f"Exported from step {source.step} of phase {source.phase_index + 1}.", ""]
    best = (run / "best" / "best.json") if run else None
    if best and best.is_file():
        entries = json.loads(best.read_text())
        lines += ["## Evaluation", "", "| checkpoint | composite | scores |", "|---|---|---|"]
        for e in entries:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in e["scores"].items())
            lines.append(f"| {e['name']} | {e['composite']:.3f} | {scores} |")
        lines.append("")
    lines += ["## Use", "", "```python", "from transformers import AutoModelForImageTextToText, AutoProcessor",
              'model = AutoModelForImageTextToText.from_pretrained("PATH")',
              'processor = AutoProcessor.from_pretrained("PATH")', "```", ""]
    return "\n".join(lines)


def export(target: Path, out: Path, checkpoint: str = "last", merge: bool = True, dtype: str = "bfloat16",
           force: bool = False) -> Path:
    import copy

    from .fsutil import check_output_dir
    from .train.consolidate import write_model_folder

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not supported", f"use one of {', '.join(DTYPES)}")
    check_output_dir(Path(out), force)
    source = resolve_source(target, checkpoint)
    phase = _phase_of(source)[0] if source.kind == "checkpoint" else None
    keep = not merge and phase is not None and any(p.mode in ("dora", "lora") for p in phase.parts.values())
    model, start, recipe = load_for_export(source, merge=not keep)
    card = model_card(recipe, source, source.run)

    def extras(tmp: Path) -> None:
        (tmp / "README.md").write_text(card)
        if keep:
            model.save_pretrained(tmp / "adapter")  # peft adapter for the base written beside it

    base = copy.deepcopy(model).unload() if keep else model  # trained base weights, adapters not merged
    return write_model_folder(base, start, out, dtype=dtype, force=force, extra=extras)
