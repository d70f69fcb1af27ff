# Adapters: one pure function per dataset schema, turning a raw row (dict) into the internal Sample.
# Bad rows raise SampleError with a short reason; media files are checked for existence here, decoded later.
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .sample import Image, Part, Sample, SampleError, Text, Turn, Video, validate

SCHEMAS: tuple[str, ...] = ("cauldron", "llava", "chat", "jsonl")

# LLaVA-style datasets name roles one way, chat datasets another; both map onto the Sample roles.
ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
PLACEHOLDER = re.compile(r"(<image>|<video>)")


def detect_schema(row: dict) -> str:
    """cauldron | llava | chat | jsonl, from the row's keys (a `messages` row with typed parts is jsonl)."""
    if not isinstance(row, dict):
        raise SampleError("malformed row", f"expected a mapping, got {type(row).__name__}")
    if "texts" in row and "images" in row:
        return "cauldron"
    if "conversations" in row:
        return "llava"
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, list) and any(
            isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages
        ):
            return "jsonl"
        return "chat"
    raise SampleError("unknown schema", f"row keys {sorted(row)}; expected texts+images, conversations or messages")


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
        raise SampleError("empty conversation", _row_id(row, index))
    media = [_image_part(img, media_root) for img in images]
    turns: list[Turn] = []
    for pair in texts:
        if not isinstance(pair, dict) or not _is_str(pair.get("user")) or not _is_str(pair.get("assistant")):
            raise SampleError("malformed row", "each 'texts' entry needs string 'user' and 'assistant'")
        user_parts: list[Part] = list(media) if not turns else []
        turns.append(Turn("user", user_parts + _text(pair["user"])))
        turns.append(Turn("assistant", _text(pair["assistant"])))
    meta: dict[str, Any] = {"index": index}
    if isinstance(texts[0], dict) and _is_str(texts[0].get("source")):
        meta["origin"] = texts[0]["source"]
    return validate(Sample(_row_id(row, index), source, turns, meta))


def from_llava(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """LLaVA-style `conversations` with <image>/<video> placeholders placed where they stand in the text."""
    convo = row.get("conversations")
    if not isinstance(convo, list):
        raise SampleError("malformed row", "'conversations' must be a list")
    if not convo:
        raise SampleError("empty conversation", _row_id(row, index))
    raw: list[tuple[str, str]] = []
    for msg in convo:
        if not isinstance(msg, dict) or not _is_str(msg.get("from")) or not _is_str(msg.get("value")):
            raise SampleError("malformed row", "each conversation entry needs string 'from' and 'value'")
        raw.append((_role(msg["from"]), msg["value"]))

    images = [_image_part(v, media_root) for v in _as_list(row.get("image"))]
    videos = [_video_part(v, media_root) for v in _as_list(row.get("video"))]
    tags = [t for _, text in raw for t in PLACEHOLDER.findall(text)]
    n_image_tags, n_video_tags = tags.count("<image>"), tags.count("<video>")
    # LLaVA-Video rows mark their video with <image>: read the tag as the video's when nothing else fits.
    image_tag_is_video = not images and videos and n_video_tags == 0 and n_image_tags > 0
    if image_tag_is_video:
        n_image_tags, n_video_tags = 0, n_image_tags
    for kind, n_tags, items in (("image", n_image_tags, images), ("video", n_video_tags, videos)):
        if n_tags and n_tags != len(items):
            raise SampleError("media mismatch", f"{n_tags} <{kind}> placeholders for {len(items)} {kind}s")

    # Counts were checked above, so every placeholder finds its item in these queues.
    queues = {"<image>": list(videos if image_tag_is_video else images), "<video>": list(videos)}
    # Media without any placeholder go first in the first user turn, as LLaVA does.
    leading = (images if n_image_tags == 0 else []) + (videos if n_video_tags == 0 else [])
    turns: list[Turn] = []
    for role, text in raw:
        parts: list[Part] = []
        if leading and role == "user":
            parts, leading = list(leading), []
        for piece in PLACEHOLDER.split(text):
            if piece in queues:
                parts.append(queues[piece].pop(0))
            else:
                parts += _text(piece.strip())
        turns.append(Turn(role, parts))
    if leading:
        raise SampleError("malformed row", "the row has media but no user turn to put them in")
    return validate(Sample(_row_id(row, index), source, turns, {"index": index}))


def from_chat(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """Text-only chat rows (SmolTalk-style): `messages` of {role, content} with string content."""
    messages = _messages(row, index)
    turns = []
    for msg in messages:
        if not _is_str(msg.get("content")):
            raise SampleError("malformed row", "chat message content must be a string (use the jsonl schema for media)")
        turns.append(Turn(_role(msg.get("role")), _text(msg["content"])))
    return validate(Sample(_row_id(row, index), source, turns, {"index": index}))


def from_jsonl(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """The user JSONL format: `messages` whose content is a string or typed text/image/video parts."""
    turns = []
    for msg in _messages(row, index):
        content = msg.get("content")
        if isinstance(content, (int, float)) and not isinstance(content, bool):
            content = str(content)  # JSON readers may type a bare "7" answer as a number
        if _is_str(content):
            parts = _text(content)
        elif isinstance(content, list):
            parts = [_typed_part(p, media_root) for p in content]
        else:
            raise SampleError("malformed row", "message content must be a string or a list of parts")
        turns.append(Turn(_role(msg.get("role")), [p for p in parts if p is not None]))
    return validate(Sample(_row_id(row, index), source, turns, {"index": index}))


ADAPTERS: dict[str, Callable[..., Sample]] = {
    "cauldron": from_cauldron,
    "llava": from_llava,
    "chat": from_chat,
    "jsonl": from_jsonl,
}


def _messages(row: dict, index: int) -> list[dict]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise SampleError("malformed row", "'messages' must be a list")
    if not messages:
        raise SampleError("empty conversation", _row_id(row, index))
    if not all(isinstance(m, dict) for m in messages):
        raise SampleError("malformed row", "each message must be a mapping with 'role' and 'content'")
    return messages


def _typed_part(part: Any, media_root: str | Path | None) -> Part | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and _is_str(part.get("text")):
        texts = _text(part["text"])
        return texts[0] if texts else None
    if kind in ("image", "video") and _is_str(part.get("path")) and part["path"]:
        return _image_part(part["path"], media_root) if kind == "image" else _video_part(part["path"], media_root)
    raise SampleError("malformed row", f"bad content part {part!r}; expected text/image/video with text or path")


def _image_part(value: Any, media_root: str | Path | None) -> Image:
    """A PIL image, {"bytes", "path"} as `datasets` stores undecoded images, or a path string."""
    from PIL import Image as PILImage

    if isinstance(value, PILImage.Image):
        return Image(pil=value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image(data=bytes(value["bytes"]))
        value = value.get("path")
    if _is_str(value) and value:
        return Image(path=_existing(value, media_root))
    raise SampleError("malformed row", f"cannot read an image from {type(value).__name__}")


def _video_part(value: Any, media_root: str | Path | None) -> Video:
    if _is_str(value) and value:
        return Video(path=_existing(value, media_root))
    raise SampleError("malformed row", f"a video must be a path, got {type(value).__name__}")


def _existing(path: str, media_root: str | Path | None) -> str:
    full = Path(path).expanduser()
    if not full.is_absolute() and media_root is not None:
        full = Path(media_root) / full
    if not full.exists():
        raise SampleError("missing media", str(full))
    return str(full)


def _role(name: Any) -> str:
    role = ROLE_MAP.get(name) if isinstance(name, str) else None
    if role is None:
        raise SampleError("unknown role", repr(name))
    return role


def _as_list(value: Any) -> list:
    if value is None or (isinstance(value, str) and not value):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _text(text: str) -> list[Part]:
    """Whitespace-only text carries nothing; dropping it lets an empty turn be caught as one."""
    return [Text(text)] if text.strip() else []


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _row_id(row: dict, index: int) -> str:
    rid = row.get("id")
    return str(rid) if rid is not None and str(rid) != "" else str(index)
