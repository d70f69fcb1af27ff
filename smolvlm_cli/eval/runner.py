# Runs eval tasks on a SmolVLM: batched greedy generation with left padding, scoring, predictions JSONL, results JSON.
# `evaluate` takes a loaded model (in training, on every rank: see shard.py); `run_eval` loads one from a folder first.
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from .data import check_sources, iter_items, row_sources
from .report import progress_bar
from .shard import gather_shares, share_size
from .tasks import PROMPT_STYLES, Item, Task, composite, composite_weights, registry, resolve_tasks, tasks_named

SMOLVLM_MODEL_TYPES = ("smolvlm", "idefics3")


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        raise UserError(f"model folder not found: {path}", "pass the folder written by smolvlm init, train or export")
    config = path / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except FileNotFoundError:
        raise UserError(f"{path} is not a SmolVLM model folder (no config.json)",
                        "pass the folder written by smolvlm init, train or export") from None
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{config} is not a valid model config", "re-export the model") from None
    if model_type not in SMOLVLM_MODEL_TYPES:
        raise UserError(f"{path} is not a SmolVLM model folder (model_type {model_type!r})",
                        "pass a folder holding a SmolVLM (config.json with model_type 'smolvlm')")
    return path


def load_model(model_dir: str | os.PathLike, device: str | None = None):
    """(model, processor) from a SmolVLM folder; bf16 on a GPU that supports it, float32 otherwise."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..data.images import honour_upscale

    path = check_model_dir(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    try:
        processor = honour_upscale(AutoProcessor.from_pretrained(path))  # images as the model was trained on
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the processor from {path}: {str(e).splitlines()[0]}",
                        "the folder needs the processor files smolvlm init / export write") from None
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, processor


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------


def video_settings(processor) -> tuple[float, int]:
    """(fps, max frames) of the processor's video settings: `data.video.video_sampling`, where training and
    `smolvlm generate` take theirs too."""
    from ..data.video import video_sampling

    sampling = video_sampling(processor)
    return sampling.fps, sampling.max_frames


def _frames_folder(path: Path, max_frames: int):
    """A video stored as a folder of frame images (some MVBench subsets): evenly spaced frames, 1 fps assumed."""
    import numpy as np
    from PIL import Image as PILImage
    from transformers.video_utils import VideoMetadata

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        from ..errors import MediaError

        raise MediaError(f"video folder has no frames: {path}", "expected .jpg or .png frame files")
    k = min(max_frames, len(files))
    idx = [(2 * i + 1) * len(files) // (2 * k) for i in range(k)]
    frames = np.stack([np.asarray(PILImage.open(files[i]).convert("RGB")) for i in idx])
    return frames, VideoMetadata(total_num_frames=len(files), fps=1.0, frames_indices=idx, duration=float(len(files)))


def _video(path: str, processor, fps: float, max_frames: int):
    if Path(path).is_dir():
        return _frames_folder(Path(path), max_frames)
    from ..data.frame_cache import load_model_video  # training's sampler and frame cache: same frames, timestamps

    sampled = load_model_video(path, processor, fps, max_frames)
    return sampled.frames, sampled.metadata()


def prompt_text(processor, item: Item) -> str:
    return processor.apply_chat_template(item.messages(), add_generation_prompt=True) + item.assistant_prefix


def generate(model, processor, items: Sequence[Item], max_new_tokens: int, video_fps: float = 1.0,
             video_max_frames: int = 64, generate_kwargs: dict | None = None,
             prompts: Sequence[str] | None = None) -> list[str]:
    """Greedy answers for items of one kind (text, image or video), batched with left padding."""
    import torch

    texts = list(prompts) if prompts is not None else [prompt_text(processor, it) for it in items]
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "padding_side": "left"}
    kind = items[0].kind
    if kind == "image":
        kwargs["images"] = [it.images for it in items]
    elif kind == "video":
        loaded = [_video(it.video, processor, video_fps, video_max_frames) for it in items]
        kwargs.update(videos=[f for f, _ in loaded], video_metadata=[md for _, md in loaded], do_sample_frames=False)
    inputs = processor(**kwargs)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    tokenizer = processor.tokenizer
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, **(generate_kwargs or {}))
    new = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]


def _batches(items: list[Item], batch_size: int):
    """Batches of one kind each, in order within each kind (a processor call takes images or videos, not both)."""
    for kind in ("text", "image", "video"):
        same = [it for it in items if it.kind == kind]
        for i in range(0, len(same), batch_size):
            yield same[i:i + batch_size]


# ---------------------------------------------------------------------------------------------------------------
# One task
# ---------------------------------------------------------------------------------------------------------------


def score_task(task: Task, items: list[Item], predictions: list[str]) -> dict:
    """Scores and aggregate of a task's predictions; also used on hand-made predictions in tests."""
    scores, undecided = [], 0
    for item, pred in zip(items, predictions):
        s = task.score(pred, item)
        undecided += s is None
        scores.append(0.0 if s is None else float(s))
    result = task.aggregate(items, scores, list(predictions))
    return {"score": result.score, "scores": scores, "breakdown": result.breakdown, "extra": result.extra,
            "undecided": undecided}


def task_summary(task: Task, n: int, scored: dict, seconds: float, max_new_tokens: int) -> dict:
    summary = {
        "title": task.title, "family": task.family, "dataset": task.dataset or None, "split": task.split,
        "config": task.config, "subsets": list(task.configs) or None, "n": n, "score": scored["score"],
        "score_pct": round(100 * scored["score"], 2),
        "metric": task.metric, "aggregation": task.aggregation, "breakdown": scored["breakdown"],
        **({"details": scored["extra"]} if scored["extra"] else {}),
        "rule_based_only": task.rule_based_only, "max_new_tokens": max_new_tokens, "seconds": round(seconds, 2),
        "published": {"256M": task.published[0], "500M": task.published[1]} if task.published else None,
    }
    if task.rule_based_only:
        summary["undecided_by_rules"] = scored["undecided"]
    if task.note:
        summary["note"] = task.note
    return summary


def answer_share(model, processor, task: Task, sources, *, shard, media_root, batch_size, prompt_style, gen,
                 progress, bar) -> list[tuple[Item, str, str]]:
    """(item, prompt, answer) for this rank's share of the task's items (all of them on one rank), in item order."""
    done: list[tuple[Item, str, str]] = []
    chunk: list[Item] = []

    def flush():
        answered = {}
        for batch in _batches(chunk, batch_size):
            texts = [prompt_text(processor, it) for it in batch]
            answers = generate(model, processor, batch, prompts=texts, **gen)
            answered.update((id(it), (text, answer)) for it, text, answer in zip(batch, texts, answers))
            if bar is not None:
                progress.advance(bar, len(batch))
        for item in chunk:
            item.images = []  # scored items keep only their metadata; full benchmarks hold large images
            done.append((item, *answered[id(item)]))
        chunk.clear()

    for item in iter_items(task, sources, prompt_style, media_root, shard):
        chunk.append(item)
        if len(chunk) >= batch_size * 4:
            flush()
    flush()
    return done


def _run_task(model, processor, task: Task, *, dataset_path, media_root, limit, batch_size, prompt_style, gen,
              write, progress, shard=(0, 1)) -> dict | None:
    """Answer this rank's share, gather every share on rank 0 and score them there, in item order (None on the
    other ranks): the score does not depend on how many ranks answered."""
    rank, world = shard
    start = time.perf_counter()
    mine, error = [], None
    try:
        sources = row_sources(task, dataset_path, limit)
        total = share_size(sum(len(s) for s in sources), rank, world)
        bar = progress.add_task(task.title, total=total) if progress is not None else None
        mine = answer_share(model, processor, task, sources, shard=shard, media_root=media_root,
                            batch_size=batch_size, prompt_style=prompt_style, gen=gen, progress=progress, bar=bar)
    except UserError as e:
        error = e
    records = gather_shares(mine, error, rank, world)
    if records is None:
        return None
    items, prompts, predictions = ([r[i] for r in records] for i in range(3))
    scored = score_task(task, items, predictions)
    for item, prompt, pred, s in zip(items, prompts, predictions, scored["scores"]):
        write({"task": task.name, "id": item.id, "prompt": prompt, "prediction": pred, "answers": item.answers,
               "score": s})
    return task_summary(task, len(items), scored, time.perf_counter() - start, gen["max_new_tokens"])


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------


def _keyed_paths(paths: dict | None, names: list[str]) -> dict[str, Path]:
    """--dataset-path / --media-root values by task name; the key "synthetic" applies to every synthetic task
    that has no path of its own."""
    out, general = {}, {}
    for key, value in (paths or {}).items():
        into = general if str(key).strip().lower() == "synthetic" else out
        into.update({n: Path(value) for n in tasks_named(str(key), names)})
    return {**general, **out}


def check_inputs(tasks, dataset_paths, media_roots, prompt_style, limit, batch_size, max_new_tokens):
    """Every check that needs no model: task names, flags, data and media folders."""
    names = resolve_tasks(tasks)
    if prompt_style not in PROMPT_STYLES:
        raise UserError(f"unknown prompt style {prompt_style!r}", f"choose from: {', '.join(PROMPT_STYLES)}")
    for flag, value in (("--limit", limit), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}", f"pass a positive {flag} or leave it out")
    reg = registry()
    data_paths, media = _keyed_paths(dataset_paths, names), _keyed_paths(media_roots, names)
    for name in names:
        check_sources(reg[name], data_paths.get(name), media.get(name))
    return names, data_paths, media


def predictions_path(results_path: Path) -> Path:
    return results_path.with_name(results_path.stem + ".predictions.jsonl")


@contextlib.contextmanager
def _predictions_writer(results_path: Path | None):
    """write(record) into the predictions JSONL beside `results_path`; the file appears only if all went well."""
    if results_path is None:
        yield lambda record: None
        return
    results_path.parent.mkdir(parents=True, exist_ok=True)
    final = predictions_path(results_path)
    tmp = final.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        try:
            yield lambda record: f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, final)


def _write_results(results: dict, results_path: Path) -> None:
    """Our results, and beside them the same scores in lmms-eval's results layout (for its users' tools)."""
    from .report import lmms_layout, lmms_results_path

    lmms = lmms_results_path(results_path)
    results["files"] = {"results": str(results_path), "predictions": str(predictions_path(results_path)),
                        "lmms_eval": str(lmms)}
    for path, data in ((lmms, lmms_layout(results)), (results_path, results)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)


def evaluate(model, processor, tasks: str | Sequence[str], *, limit: int | None = None, batch_size: int = 8,
             out: str | os.PathLike | None = None, dataset_paths: dict | None = None, media_roots: dict | None = None,
             prompt_style: str = "lmms", progress: bool = True, max_new_tokens: int | None = None,
             model_name: str = "", generate_kwargs: dict | None = None, console=None,
             shard: tuple[int, int] = (0, 1)) -> dict | None:
    """Evaluate an already loaded SmolVLM on `tasks`; returns the results (also written to `out` when given).

    max_new_tokens caps every task's own generation length (useful for quick checks); generate_kwargs go to
    model.generate. shard=(rank, world): every rank of a process group calls this together with its own copy of
    the model and answers its share of the items; rank 0 scores them all and returns the results, the others None."""
    names, data_paths, media = check_inputs(tasks, dataset_paths, media_roots, prompt_style, limit, batch_size,
                                        max_new_tokens)
    reg = registry()
    fps, max_frames = video_settings(processor)
    main = shard[0] == 0
    results_path = Path(out) if out is not None and main else None
    summaries: dict[str, dict] = {}
    bar = progress_bar(console) if progress and main else None
    was_training = getattr(model, "training", False)
    model.eval()  # the trainer hands over a model in training mode: dropout must be off for greedy answers
    try:
        if bar is not None:
            bar.start()
        with _predictions_writer(results_path) as write:
            for name in names:
                task = reg[name]
                cap = min(task.max_new_tokens, max_new_tokens) if max_new_tokens else task.max_new_tokens
                gen = {"max_new_tokens": cap, "video_fps": fps, "video_max_frames": max_frames,
                       "generate_kwargs": generate_kwargs}
                summaries[name] = _run_task(model, processor, task, dataset_path=data_paths.get(name),
                                            media_root=media.get(name), limit=limit, batch_size=batch_size,
                                            prompt_style=prompt_style, gen=gen, write=write, progress=bar, shard=shard)
    finally:
        if bar is not None:
            bar.stop()
        model.train(was_training)
    if not main:
        return None
    scores = {n: s["score"] for n, s in summaries.items()}
    results = {
        "model": model_name, "prompt_style": prompt_style, "limit": limit, "max_new_tokens_cap": max_new_tokens,
        "tasks": summaries,
        "composite": {"score": composite(scores), "weights": composite_weights(scores)},
    }
    if results_path is not None:
        _write_results(results, results_path)
    return results


def run_eval(model_dir: str | os.PathLike, tasks: str | Sequence[str], limit: int | None = None,
             batch_size: int = 8, out: str | os.PathLike | None = None, dataset_paths: dict | None = None,
             media_roots: dict | None = None, prompt_style: str = "lmms", progress: bool = True,
             max_new_tokens: int | None = None, device: str | None = None, console=None) -> dict:
    """Load the SmolVLM in `model_dir` and evaluate it (see `evaluate`). Task names, flags and data sources are
    checked before the model loads."""
    check_model_dir(model_dir)
    names, _, _ = check_inputs(tasks, dataset_paths, media_roots, prompt_style, limit, batch_size, max_new_tokens)
    model, processor = load_model(model_dir, device)
    return evaluate(model, processor, names, limit=limit, batch_size=batch_size, out=out, dataset_paths=dataset_paths,
                    media_roots=media_roots, prompt_style=prompt_style, progress=progress,
                    max_new_tokens=max_new_tokens, model_name=str(model_dir), console=console)


def parse_task_paths(values: Sequence[str] | None, flag: str) -> dict[str, Path]:
    """["docvqa=/data/docvqa", ...] -> {"docvqa": Path(...)}; the task name is checked ("synthetic" allowed)."""
    out: dict[str, Path] = {}
    for value in values or []:
        key, sep, path = value.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise UserError(f"{flag} {value!r} is not TASK=PATH", f"e.g. {flag} docvqa=/data/DocVQA")
        key = key.strip().lower()
        if key != "synthetic":
            resolve_tasks([key])  # raises on an unknown task
        out[key] = Path(path.strip()).expanduser()
    return out


def cli_eval(model: str | os.PathLike | None = None, tasks: str | None = None, limit: int | None = None,
             batch_size: int = 8, out: str | os.PathLike | None = None, dataset_path: Sequence[str] | None = None,
             media_root: Sequence[str] | None = None, prompt_style: str = "lmms", list_tasks: bool = False,
             max_new_tokens: int | None = None, console=None) -> dict | None:
    """Everything `smolvlm eval` does: --list prints the registry; otherwise evaluate, write the files and print
    the results table beside the published numbers."""
    from rich.console import Console

    from .report import print_task_list, render_results_table

    console = console or Console()
    if list_tasks:
        print_task_list(console)
        return None
    if model is None:
        raise UserError("--model is required", "pass the model folder, e.g. --model runs/tiny/final")
    if not tasks:
        raise UserError("--tasks is required", "e.g. --tasks docvqa,textvqa (smolvlm eval --list shows all)")
    results = run_eval(model, tasks, limit=limit, batch_size=batch_size, out=Path(out or "eval_results.json"),
                       dataset_paths=parse_task_paths(dataset_path, "--dataset-path"),
                       media_roots=parse_task_paths(media_root, "--media-root"), prompt_style=prompt_style,
                       max_new_tokens=max_new_tokens, console=console)
    render_results_table(results, console)
    files = results.get("files", {})
    console.print(f"results: [bold]{files.get('results')}[/]   predictions: [bold]{files.get('predictions')}[/]")
    return results
