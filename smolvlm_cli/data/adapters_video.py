# Adapters for the video sources whose rows are not LLaVA-style: FineVideo (mp4 bytes + a metadata struct),
# Vript (per-video / per-clip caption files), MovieChat-1K (caption + global Q/A) and ShareGPT4Video (captions).
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import MediaError
from .adapters_base import (
    CAPTION_PROMPT,
    SCENES_PROMPT,
    existing,
    first_existing,
    is_str,
    mapping,
    qa_pairs,
    row_id,
    text_parts,
)
from .sample import Sample, SampleError, Turn, Video, validate

# Videos that arrive as bytes in the row are written once, named by their sha256, under this folder of the
# source's media_root (or of $SMOLVLM_CACHE/media when the source has none): the decoder reads files.
INLINE_DIR = "inline-videos"

REQUIRED: dict[str, tuple[str, ...]] = {
    "finevideo": ("mp4", "json.content_metadata"),
    "vript": ("meta.video_id|clip_id", "data|caption.content"),
    "moviechat": ("info.video_path", "caption|global"),
    "sharegpt4video": ("video_path", "captions"),
}


def from_finevideo(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """FineVideo: `mp4` bytes and a `json` struct; its `content_metadata.qAndA` pairs become the turns (the
    video in the first user turn), or, without any, a description of the video from `description`."""
    info = mapping(row.get("json"), "json")
    content = mapping(info.get("content_metadata"), "json.content_metadata")
    pairs = qa_pairs(content.get("qAndA"), "qAndA")
    description = content.get("description")
    if not pairs and is_str(description) and description.strip():
        pairs = [(CAPTION_PROMPT, description)]
    if not pairs:
        raise SampleError("no question or answer", "FineVideo row has neither qAndA nor a description")
    video = Video(path=inline_video(_mp4_bytes(row.get("mp4")), media_root))
    name = info.get("original_json_filename")
    rid = name[: -len(".json")] if is_str(name) and name.endswith(".json") else row_id(row, index)
    meta: dict[str, Any] = {"index": index}
    if is_str(info.get("content_parent_category")) and info["content_parent_category"]:
        meta["origin"] = info["content_parent_category"]
    return validate(Sample(rid, source, _video_turns(video, pairs), meta))


def from_vript(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """Vript: a per-video caption file ({meta, data: {clip_id: clip}}) describes the whole `<video_id>.mp4` scene by
    scene; a per-clip row ({clip_id, caption{content, ...}}) describes `<video_id>/<clip_id>.mp4` (the clips zips'
    layout) or `<clip_id>.mp4`."""
    if row.get("data") is not None:
        return _vript_video(row, index=index, source=source, media_root=media_root)
    clip_id = row.get("clip_id")
    if not is_str(clip_id) or not clip_id:
        raise SampleError("malformed row", "a Vript row needs 'meta' + 'data' (a video) or 'clip_id' (a clip)")
    content = _vript_content(row, clip_id)
    video_id = row.get("video_id") if is_str(row.get("video_id")) and row["video_id"] else clip_id.split("-Scene-")[0]
    path = first_existing([f"{video_id}/{clip_id}.mp4", f"{clip_id}.mp4"], media_root)
    return validate(Sample(clip_id, source, _video_turns(Video(path), [(CAPTION_PROMPT, content)]), {"index": index}))


def from_moviechat(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """MovieChat-1K: one file per movie clip; `caption` (asked for with a fixed prompt) and the `global` Q/A
    become the turns. The video is `raw_videos/<info.video_path>` (or `<info.video_path>`) under media_root.
    `breakpoint` Q/A are left out: they ask about one frame, which the sampled frames need not contain."""
    info = mapping(row.get("info"), "info")
    name = info.get("video_path")
    if not is_str(name) or not name:
        raise SampleError("malformed row", "MovieChat row has no 'info.video_path'")
    pairs = []
    if is_str(row.get("caption")) and row["caption"].strip():
        pairs.append((CAPTION_PROMPT, row["caption"]))
    pairs += qa_pairs(row.get("global"), "global")
    if not pairs:
        raise SampleError("no question or answer", "MovieChat row has neither a caption nor global Q/A")
    path = first_existing([f"raw_videos/{name}", name], media_root)
    return validate(Sample(Path(name).stem, source, _video_turns(Video(path), pairs), {"index": index}))


def from_sharegpt4video(row: dict, *, index: int, source: str, media_root: str | Path | None = None) -> Sample:
    """ShareGPT4Video (sharegpt4video_40k.jsonl): the whole-video caption (`captions` entry with idx "-1") answers a
    fixed prompt; `video_path` is relative to the folder the `zip_folder` archives were extracted into."""
    captions = row.get("captions")
    if not isinstance(captions, list):
        raise SampleError("malformed row", "'captions' must be a list of {idx, content}")
    whole = next(
        (c["content"] for c in captions
         if isinstance(c, dict) and str(c.get("idx")) == "-1" and is_str(c.get("content"))),
        None,
    )
    if whole is None:
        raise SampleError("no caption", "no whole-video caption (idx -1)")
    path = row.get("video_path")
    if not is_str(path) or not path:
        raise SampleError("malformed row", "ShareGPT4Video row has no 'video_path'")
    turns = _video_turns(Video(existing(path, media_root)), [(CAPTION_PROMPT, whole)])
    return validate(Sample(row_id(row, index, "video_id"), source, turns, {"index": index}))


def inline_video(data: bytes, media_root: str | Path | None) -> str:
    """The path of a file holding `data`, written once: the name is the bytes' sha256, so a row read again (another
    epoch, another rank) finds it; the write is atomic (temp file + rename), so concurrent readers never see half."""
    digest = hashlib.sha256(data).hexdigest()
    base = Path(media_root) if media_root is not None else _cache_base() / "media"
    path = base / INLINE_DIR / digest[:2] / f"{digest}.mp4"
    if path.is_file() and path.stat().st_size == len(data):
        return str(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{digest[:12]}-", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise MediaError(
            f"cannot write an in-row video to {path.parent}: {e.strerror or e}",
            hint="give the source a writable media_root (or set SMOLVLM_CACHE) with room for its videos",
        ) from None
    return str(path)


def _cache_base() -> Path:
    return Path(os.environ.get("SMOLVLM_CACHE") or Path.home() / ".cache" / "smolvlm")


def _mp4_bytes(value: Any) -> bytes:
    if isinstance(value, dict):  # a `datasets` Video/binary struct left undecoded
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 0:
        return bytes(value)
    raise SampleError("missing media", "the row carries no mp4 bytes")


def _video_turns(video: Video, pairs: list[tuple[str, str]]) -> list[Turn]:
    """user/assistant turns from (question, answer) pairs, the video first in the first user turn."""
    turns: list[Turn] = []
    for question, answer in pairs:
        lead = [video] if not turns else []
        turns.append(Turn("user", lead + text_parts(question.strip())))
        turns.append(Turn("assistant", text_parts(answer.strip())))
    return turns


def _vript_content(clip: Any, clip_id: str) -> str:
    caption = mapping(clip.get("caption") if isinstance(clip, dict) else None, f"{clip_id}.caption")
    content = caption.get("content")
    if not is_str(content):
        raise SampleError("malformed row", f"Vript clip {clip_id} has no caption content")
    return content.strip()


def _vript_video(row: dict, *, index: int, source: str, media_root: str | Path | None) -> Sample:
    video_id = mapping(row.get("meta"), "meta").get("video_id")
    if not is_str(video_id) or not video_id:
        raise SampleError("malformed row", "Vript row has no 'meta.video_id'")
    data = row["data"]
    clips = list(data.values()) if isinstance(data, dict) else data if isinstance(data, list) else None
    if clips is None:
        raise SampleError("malformed row", "Vript 'data' must map clip ids to clips")
    # A table of many caption files has every file's clip ids as columns: this video's are the non-null ones.
    clips = sorted((c for c in clips if c is not None), key=_scene_order)
    scenes = [_vript_content(c, str(c.get("clip_id") if isinstance(c, dict) else "?")) for c in clips]
    scenes = [s for s in scenes if s]
    if not scenes:
        raise SampleError("no caption", f"Vript video {video_id} has no scene captions")
    answer = "\n".join(f"Scene {n}: {text}" for n, text in enumerate(scenes, 1))
    path = first_existing([f"{video_id}.mp4"], media_root)
    return validate(Sample(video_id, source, _video_turns(Video(path), [(SCENES_PROMPT, answer)]), {"index": index}))


def _scene_order(clip: Any) -> tuple[int, str]:
    """`<video_id>-Scene-012` sorts by its number (string order breaks past 999 scenes)."""
    clip_id = str(clip.get("clip_id", "")) if isinstance(clip, dict) else ""
    tail = clip_id.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, clip_id)
