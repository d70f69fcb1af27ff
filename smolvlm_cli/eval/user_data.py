# The user's held-out rows (--eval-data, a recipe's eval.data) as the eval task `eval_data`: read by training's own
# adapters, prompted with the conversation training renders, answered greedily, scored by exact match or ANLS.
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import MediaError, UserError
from ..recipe_eval import USER_TASK
from . import metrics as m
from .tasks import BuildContext, Item, Task, composite_weights, micro, text_part, to_pil

# data_metric -> (scorer of one prediction against the gold answers, its name in the results)
METRICS = {"exact_match": (m.short_answer_match, "normalised exact match"), "anls": (m.anls, "ANLS")}
PREDICTIONS = f"{USER_TASK}.predictions.jsonl"
ROWS_HINT = "each row needs a question and its answer (question/answer columns, or messages ending with the " \
            "assistant's answer) and media that exist"


def user_task(metric: str, max_new_tokens: int) -> Task:
    score, title = METRICS[metric]
    return Task(USER_TASK, f"your data ({title})", "user", "", "", _build,
                lambda pred, item: score(pred, item.answers), micro("file"), title, "mean", max_new_tokens)


def open_user_data(paths: Sequence[str | os.PathLike]) -> list:
    """The files as opened training sources (data.sources.Source), labelled by their paths."""
    from ..data.sources import SourceSpec, load_source

    sources = []
    for path in paths:
        if not Path(path).exists():
            raise UserError(f"eval data '{path}' not found", "pass a JSONL or CSV file, or an image folder with "
                            "metadata.jsonl / metadata.csv (--eval-data, eval.data)")
        sources.append(load_source(SourceSpec(path=str(path), name=str(path))))
    return sources


def check_user_data(paths: Sequence[str | os.PathLike]) -> list:
    """Every row of every file gives a question, a non-empty answer and existing media: checked before training
    starts, so that a bad row stops the run at once instead of at its first eval. Returns the opened sources."""
    from ..data.sample import SampleError

    sources = open_user_data(paths)
    for source in sources:
        if len(source) == 0:
            raise UserError(f"eval data '{source.name}' holds no rows", "give it at least one question and answer")
        for index in range(len(source)):
            try:
                split_turns(source.sample(index))
            except SampleError as e:
                raise UserError(f"eval data '{source.name}' row {index + 1}: {e}", ROWS_HINT) from None
    return sources


def split_turns(sample) -> tuple[list, object, str]:
    """(earlier turns, the question's user turn, the gold answer) of a Sample: the answer is its last assistant
    turn, the prompt every turn before it, as training renders them."""
    from ..data.sample import SampleError, Text

    last = max(i for i, t in enumerate(sample.turns) if t.role == "assistant")  # validate(): there is one
    answer = "".join(p.text for p in sample.turns[last].parts if isinstance(p, Text)).strip()
    if not answer:
        raise SampleError("no answer", "the assistant's answer is empty")
    if last == 0 or sample.turns[last - 1].role != "user":
        raise SampleError("no question", "the answer does not follow a user turn")
    return sample.turns[:last - 1], sample.turns[last - 1], answer


class _Samples(Sequence):
    """A source's first `n` rows as Samples, converted as they are read (rows are built on the rank that needs them)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        from ..data.sample import SampleError

        try:
            return self.source.sample(index)
        except SampleError as e:
            raise UserError(f"eval data '{self.source.name}' row {index + 1}: {e}", ROWS_HINT) from None


def _build(sample, ctx: BuildContext) -> Item:
    from ..data.sample import SampleError

    try:
        context, question, answer = split_turns(sample)
    except SampleError as e:
        raise UserError(f"eval data '{ctx.config}' row {ctx.index + 1}: {e}", ROWS_HINT) from None
    item = Item(f"{ctx.config}#{sample.id}", [], answers=[answer], meta={"file": ctx.config})
    item.history = [{"role": t.role, "content": _content(t, item)} for t in context]
    item.content = _content(question, item)
    if item.video and item.images:
        raise UserError(f"eval data '{ctx.config}' row {ctx.index + 1} mixes images and a video",
                        "eval takes either images or one video per question, as the processor does")
    return item


def _content(turn, item: Item) -> list[dict]:
    """A turn as the processor's content parts (encode.to_messages' format); its media are loaded into `item`."""
    from ..data.sample import Image, Text

    parts = []
    for part in turn.parts:
        if isinstance(part, Text):
            parts.append(text_part(part.text))
        elif isinstance(part, Image):
            value = part.pil if part.pil is not None else part.data if part.data is not None else part.path
            try:
                item.images.append(to_pil(value))
            except OSError as e:
                raise MediaError(f"cannot read image {part.path or 'inline image'} of {item.id}: {e}",
                                 "replace the file, or drop the row from the eval data") from None
            parts.append({"type": "image"})
        else:
            if item.video is not None:
                raise UserError(f"eval row {item.id} has more than one video", "eval supports one video per row")
            item.video = part.path
            parts.append({"type": "video"})
    return parts


def evaluate_user_data(model, processor, sources: list, settings, *, shard: tuple[int, int] = (0, 1),
                       predictions: Path | None = None) -> dict | None:
    """Answer and score the rows of `sources` (at most settings.limit a file) with an already loaded model, the
    ranks sharing the rows as `eval.runner.evaluate` does; rank 0 writes `predictions` and returns the task
    summary, the other ranks None."""
    from .data import RowSource
    from .runner import answer_share, score_task, task_summary, video_settings
    from .shard import gather_shares

    task = user_task(settings.data_metric, settings.data_max_new_tokens)
    limit = settings.limit
    rows = [RowSource(s.name, _Samples(s, min(len(s), limit or len(s)))) for s in sources]
    fps, max_frames = video_settings(processor)
    gen = {"max_new_tokens": task.max_new_tokens, "video_fps": fps, "video_max_frames": max_frames,
           "generate_kwargs": None}
    start, mine, error = time.perf_counter(), [], None
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        mine = answer_share(model, processor, task, rows, shard=shard, media_root=None,
                            batch_size=settings.batch_size, prompt_style=settings.prompt_style, gen=gen,
                            progress=None, bar=None)
    except UserError as e:
        error = e
    finally:
        model.train(was_training)
    records = gather_shares(mine, error, *shard)
    if records is None:
        return None
    items, prompts, answers = ([r[i] for r in records] for i in range(3))
    scored = score_task(task, items, answers)
    if predictions is not None:
        _write_predictions(predictions, items, prompts, answers, scored["scores"])
    return task_summary(task, len(items), scored, time.perf_counter() - start, task.max_new_tokens)


def _write_predictions(path: Path, items, prompts, answers, scores) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item, prompt, pred, s in zip(items, prompts, answers, scores):
            f.write(json.dumps({"task": USER_TASK, "file": item.meta["file"], "id": item.id, "prompt": prompt,
                                "prediction": pred, "answers": item.answers, "score": s}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def data_weights(scores: dict[str, float]) -> dict[str, float]:
    """The composite's default weights with held-out data: the benchmarks' defaults (tasks.composite_weights)
    among the other tasks, and eval_data weighing as one of them."""
    others = {k: v for k, v in scores.items() if k != USER_TASK}
    weights = composite_weights(others) if others else {}
    if USER_TASK in scores:
        weights[USER_TASK] = 1.0
    return weights
