# Adapter for users' own flat rows: a CSV, or the metadata.jsonl / metadata.csv of a Hugging Face image folder,
# with a media path column and a question/answer pair (or a `messages` list). adapters.py dispatches to it.
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .adapters_base import image_part, is_str, is_video_path, role, row_id, text_parts, video_part
from .sample import Part, Sample, SampleError, Turn, validate

# Columns read, in this order. `file_name` is the image folder's column; image columns holding a video path
# (by extension) give a video, as in LLaVA rows.
MEDIA_KEYS = ("file_name", "image", "image_path", "video", "video_path")
QUESTION_KEYS = ("question", "prompt")
ANSWER_KEYS = ("answer", "response")
REQUIRED: dict[str, tuple[str, ...]] = {"qa": ("question|prompt|messages", "answer|response|messages")}
# Detected from a media column beside any question / answer column (REQUIRED then names what is missing); a text-only
# question/answer file needs `schema: qa`, so that other datasets' bare question/answer rows are not taken for it.
DETECT: tuple[set[str], ...] = tuple({m, t} for m in MEDIA_KEYS for t in (*QUESTION_KEYS, *ANSWER_KEYS))


def from_qa(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """One user turn (the row's media, then the question) and one assistant turn (the answer); with a `messages`
    column (a list, or its JSON text in a CSV) of string-content turns instead, the media open the first user turn."""
    media = _media(row, media_root)
    messages = _json_list(row.get("messages"))
    if messages is not None:
        turns = _message_turns(messages, media)
    else:
        question, answer = _text(row, QUESTION_KEYS), _text(row, ANSWER_KEYS)
        turns = [Turn("user", media + text_parts(question)), Turn("assistant", text_parts(answer))]
    return validate(Sample(row_id(row, index), source, turns, {"index": index}))


def _media(row: dict, media_root: str | Path | None) -> list[Part]:
    parts: list[Part] = []
    for key in MEDIA_KEYS:
        value = row.get(key)
        if value is None or (is_str(value) and not value.strip()):
            continue
        if key.startswith("video") or is_video_path(value):
            parts.append(video_part(value, media_root))
        else:
            parts.append(image_part(value, media_root))
    return parts


def _text(row: dict, keys: tuple[str, ...]) -> str:
    for key in keys:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # CSV / JSON readers type a bare "7" as a number
        if is_str(value):
            return value
    raise SampleError("malformed row", f"needs a string '{keys[0]}' (or '{keys[1]}') column")


def _json_list(value: Any) -> list | None:
    if value is None:
        return None
    if is_str(value):
        try:
            value = json.loads(value)
        except ValueError:
            raise SampleError("malformed row", "'messages' is a string but not JSON") from None
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise SampleError("malformed row", "'messages' must be a non-empty list of {role, content} mappings")
    return value


def _message_turns(messages: list[dict], media: list[Part]) -> list[Turn]:
    turns = []
    for msg in messages:
        content = msg.get("content")
        if not is_str(content):
            raise SampleError("malformed row", "message content must be a string (media come from the path column)")
        name = role(msg.get("role"))
        first_user = name == "user" and not any(t.role == "user" for t in turns)
        turns.append(Turn(name, (media if first_user else []) + text_parts(content)))
    return turns
