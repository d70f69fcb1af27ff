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
    from .train.consolidate import build_model, load_phase_state, merged_model

    phase, start, recipe = _phase_of(source)
    state = checkpoint_state(source.path)
    if merge:
        return merged_model(state, start, phase), start, recipe
    return load_phase_state(build_model(start, phase), state).eval(), start, recipe


def checkpoint_state(path: Path) -> dict:
    """A DeepSpeed checkpoint's weights in fp32. ZeRO 1-3: DeepSpeed's zero_to_fp32 (the trained parameters from
    the fp32 optimizer partitions); ZeRO off keeps the whole module in its model-states file. A QLoRA phase's
    frozen 4-bit weights (packed bytes + quant state, which zero_to_fp32 does not carry) come from that file too."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from .train.checkpoint import DS_TAG
    from .train.quantize import is_quantized

    folder = path / DS_TAG
    whole = folder / "mp_rank_00_model_states.pt"  # ZeRO off and ZeRO-2; ZeRO-3 writes per-rank files only
    if not whole.is_file():
        return get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DS_TAG)
    saved = torch.load(whole, map_location="cpu", weights_only=False)
    module = {k: v.float() if v.is_floating_point() else v for k, v in saved["module"].items()}
    if not any(folder.glob("*optim_states.pt")):  # ZeRO off: no partitions to consolidate
        return module
    state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DS_TAG)
    if not is_quantized(module):
        return state
    trained = {name for group in saved["param_shapes"] for name in group}
    return {**module, **{k: state[k] for k in trained}}


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


def adapters_note(phase, source: Source, keep: bool, out: Path) -> str | None:
    """What export did with the adapters, for the user (None when the source had none to speak of)."""
    if phase is None:  # a model folder: a finished phase's adapters were merged when it ended
        return f"'{source.path}' is a model folder: nothing to keep, any adapters were merged when its phase " \
               "ended; to keep them, export a checkpoint of the run (--checkpoint STEP)" if keep else None
    modes = {p.mode for p in phase.parts.values()}
    if not modes & {"dora", "lora", "qlora"}:
        return None
    kind = "QLoRA" if "qlora" in modes else "DoRA" if "dora" in modes else "LoRA"
    base = "the de-quantised NF4 weights" if "qlora" in modes else "the base weights"
    if keep:
        return f"{kind} adapters kept as a peft adapter in {Path(out) / 'adapter'}; the model beside it holds {base}"
    return f"{kind} adapters merged into {base}"


def released_config_keys(folder: Path) -> None:
    """The config keys the released SmolVLM2 configs carry that other tools read, added where a model lacks them
    (one initialised before init wrote them): text_config.architectures, from which llama.cpp's converter picks the
    text model's class."""
    from .assemble import TEXT_ARCHITECTURES

    path = folder / "config.json"
    config = json.loads(path.read_text())
    if not config.get("text_config", {}).get("architectures"):
        config.setdefault("text_config", {})["architectures"] = list(TEXT_ARCHITECTURES)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def export(target: Path, out: Path, checkpoint: str = "last", merge: bool = True, dtype: str = "bfloat16",
           force: bool = False, say=None) -> Path:
    """`say`, when given, gets one line on what happened to the phase's adapters (merged, or kept and where)."""
    import copy

    from .fsutil import check_output_dir
    from .train.consolidate import record_video_sampling, write_model_folder

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not supported", f"use one of {', '.join(DTYPES)}")
    check_output_dir(Path(out), force)
    source = resolve_source(target, checkpoint)
    phase = _phase_of(source)[0] if source.kind == "checkpoint" else None
    keep = not merge and phase is not None and any(p.mode in ("dora", "lora", "qlora") for p in phase.parts.values())
    model, start, recipe = load_for_export(source, merge=not keep)
    note = adapters_note(phase, source, not merge, out)
    if say is not None and note:
        say(note)
    card = model_card(recipe, source, source.run)
    settings = record_video_sampling(phase, recipe.images) if phase is not None and recipe is not None else None

    def extras(tmp: Path) -> None:
        (tmp / "README.md").write_text(card)
        released_config_keys(tmp)
        if settings is not None:  # a checkpoint's processor files are its phase's start folder's
            settings(tmp)
        if keep:
            model.save_pretrained(tmp / "adapter")  # peft adapter for the base written beside it

    base = copy.deepcopy(model).unload() if keep else model  # trained base weights, adapters not merged
    return write_model_folder(base, start, out, dtype=dtype, force=force, extra=extras)
