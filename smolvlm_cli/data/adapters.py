# Adapters: one pure function per dataset schema, turning a raw row (dict) into the internal Sample; the dispatch
# (detect, check, convert) for all of them. Bad rows raise SampleError with a short reason; media are decoded later.
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import adapters_llava, adapters_user, adapters_video
from .adapters_base import image_part, is_str, missing_keys, role, row_id, text_parts, video_part
from .adapters_llava import from_llava, from_m4instruct, from_videostar
from .adapters_user import from_qa
from .adapters_video import from_finevideo, from_moviechat, from_sharegpt4video, from_vript
from .sample import Part, Sample, SampleError, Turn, validate

SCHEMAS: tuple[str, ...] = (
    "cauldron", "llava", "chat", "jsonl",
    "m4instruct", "videostar", "finevideo", "vript", "moviechat", "sharegpt4video", "qa",
)
# What a schema's adapter reads (adapters_base.missing_keys); sources.py checks a source's first row against it.
REQUIRED: dict[str, tuple[str, ...]] = {
    "cauldron": ("texts",),  # `images` may be null: a text-only row
    "chat": ("messages",),
    "jsonl": ("messages",),
    **adapters_llava.REQUIRED,
    **adapters_video.REQUIRED,
    **adapters_user.REQUIRED,
}


def detect_schema(row: dict) -> str:
    """The schema of a row from its keys (a `messages` row with typed parts is jsonl). M4-Instruct rows look like
    any LLaVA row: only `schema: m4instruct` selects its role fix."""
    if not isinstance(row, dict):
        raise SampleError("malformed row", f"expected a mapping, got {type(row).__name__}")
    has = {k for k, v in row.items() if v is not None}
    if "texts" in row and "images" in row:
        return "cauldron"
    if "conversations" in row:
        # Video-STaR keeps its video under video_path / video_name, never under LLaVA's image / video
        return "videostar" if has & {"video_path", "video_name"} and not has & {"video", "image"} else "llava"
    if "file_name" in has:  # an image folder's metadata row (its `messages`, if any, are plain chat)
        return "qa"
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, list) and any(
            isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages
        ):
            return "jsonl"
        return "chat"
    for schema, keys in _DETECT:
        if any(group <= has for group in keys):
            return schema
    raise SampleError(
        "unknown schema",
        f"row keys {sorted(row)}; expected texts+images, conversations, messages, mp4+json, captions+video_path, "
        "meta+data or clip_id+caption, info+caption/global, or an image/video path + question/answer",
    )


_DETECT: tuple[tuple[str, tuple[set[str], ...]], ...] = (
    ("finevideo", ({"mp4", "json"},)),
    ("sharegpt4video", ({"captions", "video_path"},)),
    ("vript", ({"meta", "data"}, {"clip_id", "caption"})),
    ("moviechat", ({"info", "global"}, {"info", "caption"})),
    ("qa", adapters_user.DETECT),
)


def schema_problems(row: Any, schema: str) -> list[str]:
    """The keys (a|b: either; a.b: nested) that `schema`'s adapter needs and `row` lacks."""
    if not isinstance(row, dict):
        return ["a mapping row"]
    return missing_keys(row, REQUIRED.get(schema, ()))


def to_sample(
    row: dict, *, index: int, source: str, schema: str = "auto", media_root: str | Path | None = None
) -> Sample:
    """Convert one row with the named adapter (`auto` detects it from the row's keys)."""
    if schema == "auto":
        schema = detect_schema(row)
    if schema not in ADAPTERS:
        raise ValueError(f"unknown schema {schema!r}; expected auto or one of {', '.join(SCHEMAS)}")
    if not isinstance(row, dict):
        raise SampleError("malformed row", f"expected a mapping, got {type(row).__name__}")
    return ADAPTERS[schema](row, index=index, source=source, media_root=media_root)


def from_cauldron(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """The Cauldron / Docmatix: all images go first in the first user turn, then the user/assistant pairs."""
    images, texts = row.get("images"), row.get("texts")
    if images is None:
        images = []
    if not isinstance(images, list) or not isinstance(texts, list):
        raise SampleError("malformed row", "'images' and 'texts' must be lists")
    if not texts:
        raise SampleError("empty conversation", row_id(row, index))
    media = [image_part(img, media_root) for img in images]
    turns: list[Turn] = []
    for pair in texts:
        if not isinstance(pair, dict) or not is_str(pair.get("user")) or not is_str(pair.get("assistant")):
            raise SampleError("malformed row", "each 'texts' entry needs string 'user' and 'assistant'")
        user_parts: list[Part] = list(media) if not turns else []
        turns.append(Turn("user", user_parts + text_parts(pair["user"])))
        turns.append(Turn("assistant", text_parts(pair["assistant"])))
    meta: dict[str, Any] = {"index": index}
    if isinstance(texts[0], dict) and is_str(texts[0].get("source")):
        meta["origin"] = texts[0]["source"]
    return validate(Sample(row_id(row, index), source, turns, meta))


def from_chat(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """Text-only chat rows (SmolTalk-style): `messages` of {role, content} with string content."""
    messages = _messages(row, index)
    turns = []
    for msg in messages:
        if not is_str(msg.get("content")):
            raise SampleError("malformed row", "chat message content must be a string (use the jsonl schema for media)")
        turns.append(Turn(role(msg.get("role")), text_parts(msg["content"])))
    return validate(Sample(row_id(row, index), source, turns, {"index": index}))


def from_jsonl(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """The user JSONL format: `messages` whose content is a string or typed text/image/video parts."""
    turns = []
    for msg in _messages(row, index):
        content = msg.get("content")
        if isinstance(content, (int, float)) and not isinstance(content, bool):
            content = str(content)  # JSON readers may type a bare "7" answer as a number
        if is_str(content):
            parts = text_parts(content)
        elif isinstance(content, list):
            parts = [_typed_part(p, media_root) for p in content]
        else:
            raise SampleError("malformed row", "message content must be a string or a list of parts")
        turns.append(Turn(role(msg.get("role")), [p for p in parts if p is not None]))
    return validate(Sample(row_id(row, index), source, turns, {"index": index}))


ADAPTERS: dict[str, Callable[..., Sample]] = {
    "cauldron": from_cauldron,
    "llava": from_llava,
    "chat": from_chat,
    "jsonl": from_jsonl,
    "m4instruct": from_m4instruct,
    "videostar": from_videostar,
    "finevideo": from_finevideo,
    "vript": from_vript,
    "moviechat": from_moviechat,
    "sharegpt4video": from_sharegpt4video,
    "qa": from_qa,
}


def _messages(row: dict, index: int) -> list[dict]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise SampleError("malformed row", "'messages' must be a list")
    if not messages:
        raise SampleError("empty conversation", row_id(row, index))
    if not all(isinstance(m, dict) for m in messages):
        raise SampleError("malformed row", "each message must be a mapping with 'role' and 'content'")
    return messages


def _typed_part(part: Any, media_root: str | Path | None) -> Part | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and is_str(part.get("text")):
        texts = text_parts(part["text"])
        return texts[0] if texts else None
    if kind in ("image", "video") and is_str(part.get("path")) and part["path"]:
        return image_part(part["path"], media_root) if kind == "image" else video_part(part["path"], media_root)
    raise SampleError("malformed row", f"bad content part {part!r}; expected text/image/video with text or path")
