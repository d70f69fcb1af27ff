# The frame cache: each video decoded once per sampling setting, its frames stored as the processor's first resize
# leaves them (raw uint8 + CRC32, written atomically), so cached and freshly decoded samples encode to the same pixels.
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from .video import SampledVideo, VideoSampling, load_video

FORMAT_VERSION = 1
SUFFIX = ".frames"
# File layout: this head (magic, header length, header CRC32), a JSON header, then the frames' raw bytes.
_MAGIC = b"smolvlm-frames1\n"
_HEAD = struct.Struct("<16sII")
_RESIZE_CHUNK = 8  # frames resized together: bounds the float buffers torchvision makes for 1080p frames


class CorruptEntry(Exception):
    """A cache file that is truncated, damaged or not a cache file; it is re-made, never read."""


def default_cache_dir() -> Path:
    """Where `smolvlm data cache` writes and training, eval and generate look: $SMOLVLM_CACHE/frames (default
    ~/.cache/smolvlm/frames), beside the synthetic data and the downloads."""
    from ..fsutil import cache_root

    return cache_root() / "frames"


def cache_dir(setting: str | os.PathLike | bool | None) -> Path | None:
    """True: the default folder; False / None: no cache; a path: that folder."""
    if setting is True:
        return default_cache_dir()
    if setting is False or setting is None or setting == "":
        return None
    return Path(setting)


@functools.lru_cache(maxsize=1)
def _resize_code() -> str:
    """The versions whose resize the stored frames came from: an upgrade misses the cache instead of reading frames
    another resize made."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("torchvision", "transformers"):
        try:
            found.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            found.append(f"{package}: none")
    return ", ".join(found)


def entry_key(path: str | os.PathLike, sampling: VideoSampling, backend: str = "auto") -> str:
    """The file's identity (real path, size, mtime) and every setting that changes the frames: any change misses."""
    st = os.stat(path)
    ident = {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "fps": sampling.fps,
             "max_frames": sampling.max_frames, "longest_edge": sampling.longest_edge, "resample": sampling.resample,
             "backend": backend, "resize": _resize_code(), "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def entry_path(root: str | os.PathLike, key: str) -> Path:
    return Path(root) / key[:2] / f"{key}{SUFFIX}"


# ---------------------------------------------------------------------------------------------------------------
# One entry: write, read, check
# ---------------------------------------------------------------------------------------------------------------

def write_entry(file: str | os.PathLike, video: SampledVideo) -> int:
    """Store `video` at `file` (tmp + rename: a reader sees the old file or the whole new one); returns its bytes."""
    file = Path(file)
    frames = np.ascontiguousarray(video.frames, dtype=np.uint8)
    payload = memoryview(frames.reshape(-1))
    header = json.dumps({
        "shape": list(frames.shape), "bytes": frames.nbytes, "crc32": zlib.crc32(payload),
        "timestamps": list(video.timestamps), "indices": list(video.indices), "n_frames": video.n_frames,
        "duration_s": video.duration_s, "backend": video.backend, "width": video.width, "height": video.height,
        "video": video.path,
    }).encode()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_HEAD.pack(_MAGIC, len(header), zlib.crc32(header)))
            f.write(header)
            f.write(payload)
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _HEAD.size + len(header) + frames.nbytes


def _read_header(f, file: Path) -> dict:
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise CorruptEntry(f"{file}: truncated head")
    magic, size, crc = _HEAD.unpack(head)
    if magic != _MAGIC:
        raise CorruptEntry(f"{file}: not a frame cache file (format {FORMAT_VERSION})")
    raw = f.read(size)
    if len(raw) < size or zlib.crc32(raw) != crc:
        raise CorruptEntry(f"{file}: damaged header")
    header = json.loads(raw)
    if header["bytes"] != int(np.prod(header["shape"])) or header["shape"][0] != len(header["indices"]):
        raise CorruptEntry(f"{file}: header does not describe its frames")
    return header


def entry_complete(file: str | os.PathLike) -> bool:
    """Cheap resume check: a sound header and exactly the bytes it announces (no CRC over the frames)."""
    file = Path(file)
    try:
        with open(file, "rb") as f:
            header = _read_header(f, file)
            return os.fstat(f.fileno()).st_size == f.tell() + header["bytes"]
    except (OSError, CorruptEntry, ValueError, KeyError, TypeError):
        return False


def read_entry(file: str | os.PathLike) -> SampledVideo | None:
    """The stored video, None when there is no entry; CorruptEntry when the file is truncated or its CRC fails."""
    file = Path(file)
    try:
        f = open(file, "rb")
    except FileNotFoundError:
        return None
    with f:
        try:
            header = _read_header(f, file)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptEntry(f"{file}: unreadable header ({e})") from None
        buf = bytearray(header["bytes"])  # writable, so torch.from_numpy takes it without a warning
        if f.readinto(buf) != len(buf) or f.read(1):
            raise CorruptEntry(f"{file}: truncated or overlong frames")
    if zlib.crc32(buf) != header["crc32"]:
        raise CorruptEntry(f"{file}: frames fail their CRC32")
    return SampledVideo(
        frames=np.frombuffer(buf, dtype=np.uint8).reshape(header["shape"]), timestamps=header["timestamps"],
        indices=header["indices"], n_frames=header["n_frames"], duration_s=header["duration_s"],
        backend=header["backend"], path=header["video"], width=header["width"], height=header["height"])


# ---------------------------------------------------------------------------------------------------------------
# Frames for a sample: cached or decoded
# ---------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _resizer():
    from transformers import SmolVLMVideoProcessor

    return SmolVLMVideoProcessor()


def shrink(video: SampledVideo, sampling: VideoSampling) -> SampledVideo:
    """The frames resized exactly as the processor's first resize would (its own code), when that makes them
    smaller. The processor then leaves them as they are (torchvision skips a resize to the same size), so it gives
    the same pixel values from these as from the full-size frames, and the cache stores a fraction of the bytes."""
    edge = sampling.longest_edge
    if not edge or max(video.frames.shape[1:3]) <= edge:
        return video
    import torch
    from transformers.image_utils import SizeDict
    from transformers.models.smolvlm.video_processing_smolvlm import get_resize_output_image_size
    from transformers.video_processing_utils import BaseVideoProcessor

    t = torch.from_numpy(np.ascontiguousarray(video.frames)).permute(0, 3, 1, 2)
    height, width = get_resize_output_image_size(t, resolution_max_side=edge)
    size = SizeDict(height=height, width=width)
    parts = [BaseVideoProcessor.resize(_resizer(), t[i: i + _RESIZE_CHUNK], size, resample=sampling.resample)
             for i in range(0, len(t), _RESIZE_CHUNK)]
    frames = torch.cat(parts).permute(0, 2, 3, 1).contiguous().numpy()
    return replace(video, frames=frames, width=video.width, height=video.height)


def decode(path: str | os.PathLike, sampling: VideoSampling, backend: str = "auto") -> SampledVideo:
    return load_video(path, fps=sampling.fps, max_frames=sampling.max_frames, backend=backend)


def load_sampled(path: str | os.PathLike, sampling: VideoSampling, backend: str = "auto",
                 cache: str | os.PathLike | None = None) -> SampledVideo:
    """The frames of `path` under `sampling`: from the cache in `cache` when it holds them, else decoded (MediaError
    when the video is bad). A corrupt entry is never read: the video is decoded and the entry written again."""
    if cache is None or not os.path.isfile(path):
        return decode(path, sampling, backend)
    file = entry_path(cache, entry_key(path, sampling, backend))
    try:
        hit = read_entry(file)
    except CorruptEntry:
        video = shrink(decode(path, sampling, backend), sampling)
        try:
            write_entry(file, video)
        except OSError:  # a read-only cache still gives the decoded frames
            pass
        return video
    return replace(hit, path=str(path)) if hit is not None else decode(path, sampling, backend)


def load_model_video(path: str | os.PathLike, processor, fps: float | None = None,
                     max_frames: int | None = None) -> SampledVideo:
    """The frames a model sees for a video prompt (`smolvlm generate --video`, eval's video items): its processor's
    video settings, as training takes them (fps / frame cap overridable), from the default cache when `smolvlm data
    cache` stored them (the same pixels either way)."""
    from .video import video_sampling

    return load_sampled(path, video_sampling(processor, fps, max_frames), cache=default_cache_dir())


def cache_video(path: str, samplings: list[VideoSampling], backend: str, root: str | os.PathLike) -> int:
    """Decode `path` once per sampling not yet cached and store it; returns the bytes written. MediaError when the
    video is bad."""
    written = 0
    for sampling in samplings:
        file = entry_path(root, entry_key(path, sampling, backend))
        if not entry_complete(file):
            written += write_entry(file, shrink(decode(path, sampling, backend), sampling))
    return written


# ---------------------------------------------------------------------------------------------------------------
# `smolvlm data cache`: every video of a stage's sources, in parallel
# ---------------------------------------------------------------------------------------------------------------

PEEK_ROWS = 256  # a source with no video in its first rows (an image set in the video stage's mix) is not scanned


def phase_sampling(recipe, phase, processor=None) -> VideoSampling:
    """A phase's sampling: `video_sampling` of `processor` (a model folder's) with the phase's overrides, or without
    one, the processor `smolvlm init` builds from the recipe (frame edge: video_longest_edge or the tile; LANCZOS)."""
    from .video import video_sampling

    if processor is not None:
        return video_sampling(processor, phase.video_fps, phase.video_max_frames)
    m = recipe.model_section("sampling videos without a model folder (--init)")
    p = m.processor
    return VideoSampling(float(phase.video_fps or p.video_fps), int(phase.video_max_frames or p.video_max_frames),
                         p.video_longest_edge or m.vision.image_size, 1)


def stage_videos(recipe, stage: str, processor=None, notes: list[str] | None = None) -> dict[str, list[VideoSampling]]:
    """Video path -> the distinct samplings its stage's phases take it with. Rows that cannot be read (missing
    media, malformed) and skipped sources are described in `notes`."""
    from collections import Counter

    from .resolve import open_sources

    notes = [] if notes is None else notes
    videos: dict[str, list[VideoSampling]] = {}
    sources_of = {}
    for phase in recipe.stages[stage].phases:
        sampling = phase_sampling(recipe, phase, processor)
        names = [e.source for e in phase.data]
        sources_of.update(open_sources(recipe.sources, [n for n in names if n not in sources_of], recipe.synthetic))
        for name in names:
            skipped: Counter = Counter()
            found = _source_videos(sources_of[name], skipped)
            if found is None:
                notes.append(f"source {name}: no video in its first {PEEK_ROWS} rows, not scanned")
                continue
            for path in found:
                known = videos.setdefault(path, [])
                if sampling not in known:
                    known.append(sampling)
            if skipped:
                reasons = ", ".join(f"{r}: {n}" for r, n in skipped.most_common())
                notes.append(f"source {name} (phase {phase.name}): {sum(skipped.values())} rows skipped ({reasons})")
    return videos


def _source_videos(source, skipped) -> list[str] | None:
    from .sample import Video

    found: dict[str, None] = {}
    for row, sample in enumerate(source.samples(skipped=skipped)):
        for part in sample.media():
            if isinstance(part, Video):
                found[part.path] = None
        if not found and row + 1 >= PEEK_ROWS:
            return None
    return list(found)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # N workers on N cores: threads within each would only contend


def _cache_job(job: tuple) -> tuple[str, int, str | None]:
    from ..errors import MediaError

    path, samplings, backend, root = job
    try:
        return path, cache_video(path, samplings, backend, root), None
    except MediaError as e:
        return path, 0, e.message


def build_cache(videos: dict[str, list[VideoSampling]], root: str | os.PathLike, backend: str = "auto",
                nproc: int = 1, progress=None) -> dict:
    """Cache every (video, sampling) not cached yet, over `nproc` processes; `progress(done, total)` after each
    video. Returns counts: `cached` (entries already there), `videos` (videos decoded), `bytes` (written),
    `corrupt` (video -> reason, each video once)."""
    report = {"cached": 0, "videos": 0, "bytes": 0, "corrupt": {}}
    todo = []
    for path, samplings in videos.items():
        missing = [s for s in samplings if not entry_complete(entry_path(root, entry_key(path, s, backend)))]
        report["cached"] += len(samplings) - len(missing)
        if missing:
            todo.append((path, missing, backend, str(root)))
    if nproc <= 1 or len(todo) <= 1:
        return _collect(map(_cache_job, todo), report, progress, len(todo))
    import multiprocessing

    # spawn, not fork: the parent has torch (and its thread pools) loaded, which a forked child may deadlock on.
    with multiprocessing.get_context("spawn").Pool(nproc, initializer=_worker_init) as pool:
        return _collect(pool.imap_unordered(_cache_job, todo), report, progress, len(todo))


def _collect(results, report: dict, progress, total: int) -> dict:
    for done, (path, written, error) in enumerate(results, 1):
        if error is None:
            report["videos"] += 1
            report["bytes"] += written
        else:
            report["corrupt"][path] = error
        if progress is not None:
            progress(done, total)
    return report


def cli_cache(recipe_path: str | os.PathLike, stage: str, overrides: list[str], nproc: int = 1,
              init: str | os.PathLike | None = None, console=None) -> dict:
    """`smolvlm data cache`: decode every video of a stage's sources once with each phase's sampling."""
    from rich.console import Console

    from ..errors import UserError
    from ..recipe import load_recipe

    console = console or Console(soft_wrap=True, highlight=False)
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}", "pass the number of worker processes")
    recipe = load_recipe(recipe_path, overrides)
    if stage not in recipe.stages:
        raise UserError(f"recipe '{recipe_path}' has no stage '{stage}'",
                        f"use --stage {' or '.join(recipe.stages) or 'with a stage the recipe defines'}")
    processor = _init_processor(init) if init is not None else None
    notes: list[str] = []
    videos = stage_videos(recipe, stage, processor, notes)
    root = default_cache_dir()
    with _progress_bar(console) as progress:
        report = build_cache(videos, root, recipe.train.video_backend, nproc, progress)
    console.print(f"frame cache {root}: {report['videos']} videos decoded ({report['bytes'] / 2**20:.1f} MiB), "
                  f"{report['cached']} entries already cached, {len(report['corrupt'])} corrupt videos")
    for path, reason in sorted(report["corrupt"].items()):
        console.print(f"  corrupt: {reason}")
    for note in notes:
        console.print(f"  {note}")
    return report


@contextlib.contextmanager
def _progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not console.is_terminal:  # a log file gets the summary only
        yield None
        return
    with Progress("decoding videos", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("videos", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _init_processor(init: str | os.PathLike):
    from transformers import AutoProcessor

    from ..errors import UserError
    from ..train.run import resolve_init

    folder = resolve_init(Path(init))
    try:
        return AutoProcessor.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the processor of {init}: {' '.join(str(e).split())[:200]}",
                        "pass a model folder from `smolvlm init` or training") from None
