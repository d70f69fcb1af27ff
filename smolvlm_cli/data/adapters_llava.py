# The LLaVA JSON convention ({id, image, video, conversations[{from, value}]}) and the sources that bend it:
# LLaVA-OneVision, LLaVA-Video-178K, MAmmoTH-VL, VISTA-400K (a video under `image`), M4-Instruct, Video-STaR.
from __future__ import annotations

from pathlib import Path
from typing import Any

from .adapters_base import (
    PLACEHOLDER,
    as_list,
    image_part,
    is_str,
    is_video_path,
    role,
    row_id,
    text_parts,
    video_part,
)
from .sample import Part, Sample, SampleError, Turn, validate

# Where Video-STaR's records keep their video, by the version of its generation code that wrote them.
VIDEOSTAR_VIDEO_KEYS = ("video", "video_path", "video_name")

REQUIRED: dict[str, tuple[str, ...]] = {
    "llava": ("conversations",),
    "m4instruct": ("conversations",),
    "videostar": ("conversations", "|".join(VIDEOSTAR_VIDEO_KEYS)),
}


def from_llava(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """LLaVA-style `conversations` with <image>/<video> placeholders placed where they stand in the text.
    An `image` entry with a video extension is a video (VISTA-400K and SmolVLM2's JSONs put videos there)."""
    raw = _conversation(row, index)
    images: list[Part] = []
    videos: list[Part] = [video_part(v, media_root) for v in as_list(row.get("video"))]
    for value in as_list(row.get("image")):
        if is_video_path(value):
            videos.append(video_part(value, media_root))
        else:
            images.append(image_part(value, media_root))
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
    for turn_role, text in raw:
        parts: list[Part] = []
        if leading and turn_role == "user":
            parts, leading = list(leading), []
        for piece in PLACEHOLDER.split(text):
            if piece in queues:
                parts.append(queues[piece].pop(0))
            else:
                parts += text_parts(piece.strip())
        turns.append(Turn(turn_role, parts))
    if leading:
        raise SampleError("malformed row", "the row has media but no user turn to put them in")
    meta: dict[str, Any] = {"index": index}
    if is_str(row.get("data_source")) and row["data_source"]:
        meta["origin"] = row["data_source"]  # LLaVA-OneVision / LLaVA-Video name their sub-dataset here
    return validate(Sample(row_id(row, index), source, turns, meta))


def from_m4instruct(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """M4-Instruct: LLaVA JSON with a list of images. Some records do not start with a human turn; as the
    community fix does, such a conversation is relabelled human/gpt alternately (system turns kept)."""
    convo = row.get("conversations")
    if isinstance(convo, list) and all(isinstance(m, dict) for m in convo):
        speakers = [m.get("from") for m in convo if m.get("from") != "system"]
        expected = [("human", "gpt")[k % 2] for k in range(len(speakers))]
        if speakers != expected:
            it = iter(expected)
            convo = [m if m.get("from") == "system" else {**m, "from": next(it)} for m in convo]
            row = {**row, "conversations": convo}
    sample = from_llava(row, index=index, source=source, media_root=media_root)
    metadata = row.get("metadata")
    if isinstance(metadata, dict) and is_str(metadata.get("dataset")) and metadata["dataset"]:
        sample.meta["origin"] = metadata["dataset"]
    return sample


def from_videostar(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """Video-STaR: LLaVA conversations ("<video>\\nquestion") whose video sits under `video_path` (generation
    code), `video_name` (the demo's JSON) or `video`: whichever the row has, relative to media_root."""
    path = next((row[k] for k in VIDEOSTAR_VIDEO_KEYS if is_str(row.get(k)) and row[k]), None)
    if path is None:
        raise SampleError("malformed row", f"no video path under {' / '.join(VIDEOSTAR_VIDEO_KEYS)}")
    plain = {k: v for k, v in row.items() if k not in VIDEOSTAR_VIDEO_KEYS and k != "image"}
    return from_llava({**plain, "video": path}, index=index, source=source, media_root=media_root)


def _conversation(row: dict, index: int) -> list[tuple[str, str]]:
    convo = row.get("conversations")
    if not isinstance(convo, list):
        raise SampleError("malformed row", "'conversations' must be a list")
    if not convo:
        raise SampleError("empty conversation", row_id(row, index))
    raw: list[tuple[str, str]] = []
    for msg in convo:
        if not isinstance(msg, dict) or not is_str(msg.get("from")) or not is_str(msg.get("value")):
            raise SampleError("malformed row", "each conversation entry needs string 'from' and 'value'")
        raw.append((role(msg["from"]), msg["value"]))
    return raw
