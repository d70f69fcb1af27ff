# The built-in synthetic tasks as eval tasks: rows of the generator's test JSONL, scored by normalised exact match.
# Read as plain JSON here so eval does not depend on the training adapters.
from __future__ import annotations

from pathlib import Path

from ..errors import MediaError, UserError
from . import metrics as m
from .tasks import BuildContext, Item, Task, micro, row_id, text_part, to_pil

# The generator's task names (smolvlm_cli.data.synthetic.TASK_NAMES); listed here so `eval --list` stays cheap.
SYNTHETIC_TASKS = ("colour", "count", "ocr", "chart", "compare", "direction", "colour_sequence", "text", "position")


def _media_path(path: str, data_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or data_dir is None else data_dir / p


def _text(content) -> str:
    """A message content as plain text; a bare number counts as its text (JSON readers may type "7" as 7)."""
    if isinstance(content, (int, float)) and not isinstance(content, bool):
        return str(content)
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def _parts(content, data_dir: Path | None, item: Item) -> list[dict]:
    """A user-JSONL message content as processor parts; media are loaded into `item` as they come."""
    if not isinstance(content, list):
        return [text_part(_text(content))]
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append(text_part(part["text"]))
            continue
        path = _media_path(part["path"], data_dir)
        if not path.exists():
            raise MediaError(f"{kind} not found: {path}", "media paths are relative to the JSONL file's folder")
        if kind == "image":
            try:
                item.images.append(to_pil(path))
            except OSError as e:
                raise MediaError(f"cannot read image {path}: {e}", "re-create the synthetic data") from None
        elif kind == "video":
            if item.video is not None:
                raise UserError(f"item {item.id} has more than one video", "eval supports one video per question")
            item.video = str(path)
        else:
            raise UserError(f"unknown content part type {kind!r} in item {item.id}", "use text, image or video")
        parts.append({"type": kind})
    return parts


def _synthetic(row: dict, ctx: BuildContext) -> Item:
    messages = list(row["messages"])
    last = max((i for i, msg in enumerate(messages) if msg["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise UserError(f"{ctx.task} row {ctx.index} has no question and answer", "each row needs a user turn "
                        "followed by an assistant answer")
    answer = _text(messages[last]["content"])
    item = Item(row_id(row, ctx, "id"), [], answers=[answer], meta={"answer": answer})
    prompt = messages[:last]
    if prompt[0]["role"] == "system":
        item.system = _text(prompt.pop(0)["content"])
    for msg in prompt[:-1]:
        item.history.append({"role": msg["role"], "content": _parts(msg["content"], ctx.data_dir, item)})
    item.content = _parts(prompt[-1]["content"], ctx.data_dir, item)
    if item.video and item.images:
        raise UserError(f"item {item.id} mixes images and a video", "eval takes either images or one video per "
                        "question, as the processor does")
    return item


TASKS = [
    Task(f"synthetic_{name}", f"synthetic: {name}", "synthetic", "", "test", _synthetic,
         lambda pred, item: m.short_answer_match(pred, item.meta["answer"]), micro(),
         "normalised exact match", "mean", 16, note="built-in synthetic data (--dataset-path synthetic=DIR)")
    for name in SYNTHETIC_TASKS
]
