# What every adapter shares: role names, media parts checked against a media root, text parts, row ids, key checks.
# The adapter modules import from here and never from each other's dispatch (adapters.py), so nothing cycles.
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .sample import Image, Part, SampleError, Text, Video

# LLaVA-style datasets name roles one way, chat datasets another; both map onto the Sample roles.
ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
PLACEHOLDER = re.compile(r"(<image>|<video>)")
# A LLaVA row's `image` can name a video (VISTA-400K, SmolVLM2's own JSONs): the extension tells.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")
# Fixed prompts for the caption-only sources (their rows carry no question).
CAPTION_PROMPT = "Describe this video in detail."
SCENES_PROMPT = "Describe this video scene by scene."


def image_part(value: Any, media_root: str | Path | None) -> Image:
    """A PIL image, {"bytes", "path"} as `datasets` stores undecoded images, or a path string."""
    from PIL import Image as PILImage

    if isinstance(value, PILImage.Image):
        return Image(pil=value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image(data=bytes(value["bytes"]))
        value = value.get("path")
    if is_str(value) and value:
        return Image(path=existing(value, media_root))
    raise SampleError("malformed row", f"cannot read an image from {type(value).__name__}")


def video_part(value: Any, media_root: str | Path | None) -> Video:
    if is_str(value) and value:
        return Video(path=existing(value, media_root))
    raise SampleError("malformed row", f"a video must be a path, got {type(value).__name__}")


def is_video_path(value: Any) -> bool:
    return is_str(value) and Path(value).suffix.lower() in VIDEO_SUFFIXES


def existing(path: str, media_root: str | Path | None) -> str:
    return first_existing([path], media_root)


def first_existing(candidates: list[str], media_root: str | Path | None) -> str:
    """The first candidate path (relative ones under media_root) that exists; else 'missing media' naming the first.
    Several candidates serve datasets whose archives unpack into more than one published layout."""
    fulls = []
    for path in candidates:
        full = Path(path).expanduser()
        if not full.is_absolute() and media_root is not None:
            full = Path(media_root) / full
        if full.exists():
            return str(full)
        fulls.append(full)
    raise SampleError("missing media", str(fulls[0]) if fulls else "no media path in the row")


def role(name: Any) -> str:
    mapped = ROLE_MAP.get(name) if isinstance(name, str) else None
    if mapped is None:
        raise SampleError("unknown role", repr(name))
    return mapped


def as_list(value: Any) -> list:
    value = json_media(value)
    if value is None or (isinstance(value, str) and not value):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def json_media(value: Any) -> Any:
    """A media column that holds a path in some rows and a list of paths in others (MAmmoTH-VL's `image`) is typed
    Json by `datasets`; streamed, its values can arrive still JSON-encoded ('"a.jpg"', '["a.jpg", "b.jpg"]').
    Such a string is decoded; any other value (a plain path, a list, an image) is returned as it is."""
    if not is_str(value) or value[:1] not in ('"', "["):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    if is_str(decoded) or (isinstance(decoded, list) and all(is_str(v) for v in decoded)):
        return decoded
    return value


def text_parts(text: str) -> list[Part]:
    """Whitespace-only text carries nothing; dropping it lets an empty turn be caught as one."""
    return [Text(text)] if text.strip() else []


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def row_id(row: dict, index: int, key: str = "id") -> str:
    rid = row.get(key)
    return str(rid) if rid is not None and str(rid) != "" else str(index)


def mapping(value: Any, what: str) -> dict:
    """A struct column as a dict; some readers hand it over as a JSON string (FineVideo's `json` when streamed)."""
    if is_str(value):
        try:
            value = json.loads(value)
        except ValueError:
            raise SampleError("malformed row", f"'{what}' is a string but not JSON") from None
    if not isinstance(value, dict):
        raise SampleError("malformed row", f"'{what}' must be a mapping, got {type(value).__name__}")
    return value


def qa_pairs(items: Any, what: str) -> list[tuple[str, str]]:
    """[{question, answer}, ...] as (question, answer) strings; anything else is a malformed row."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise SampleError("malformed row", f"'{what}' must be a list of question/answer pairs")
    pairs = []
    for item in items:
        if not isinstance(item, dict) or not is_str(item.get("question")) or not is_str(item.get("answer")):
            raise SampleError("malformed row", f"each '{what}' entry needs string 'question' and 'answer'")
        pairs.append((item["question"], item["answer"]))
    return pairs


def missing_keys(row: dict, required: tuple[str, ...]) -> list[str]:
    """The requirements `row` does not meet. A requirement is a key, a dotted path into nested mappings
    ("json.content_metadata"), or alternatives joined by '|' ("video|video_path"); present means not None."""
    return [need for need in required if not any(_has_path(row, alt) for alt in need.split("|"))]


def _has_path(row: Any, path: str) -> bool:
    value = row
    for key in path.split("."):
        if is_str(value):
            try:
                value = json.loads(value)
            except ValueError:
                return False
        if not isinstance(value, dict) or value.get(key) is None:
            return False
        value = value[key]
    return True
