# Video frame sampling: which frames to take (pure index math) and decoding them with decord or PyAV.
# Timestamps come from the decoder's real frame times, so variable-frame-rate videos get true prompt times.
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from smolvlm_cli.errors import MediaError

BACKENDS = ("auto", "decord", "pyav")

# Two decoders disagree about a frame's time by float32 noise (decord) or sub-millisecond container rounding;
# a frame starting this close after a sample point still counts as shown at it.
_TIME_TOLERANCE_S = 5e-4


# ---------------------------------------------------------------------------------------------------------------
# Pure index math
# ---------------------------------------------------------------------------------------------------------------

def frame_count(duration_s: float, fps: float, max_frames: int, n_frames: int) -> int:
    """How many frames to take: Python's `round(duration * fps)` (half to even, as SmolVLM2's loader does),
    at least 1, at most `max_frames` and at most the frames the video has."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if n_frames < 1:
        raise ValueError(f"the video has no frames (n_frames={n_frames})")
    # Rounding the duration to the millisecond first keeps the count stable against float noise in frame times.
    wanted = round(round(duration_s, 3) * fps)
    return max(1, min(wanted, max_frames, n_frames))


def frame_indices(n_frames: int, native_fps: float, fps: float = 1.0, max_frames: int = 50) -> list[int]:
    """Indices of the frames to sample from a constant-frame-rate video, spread uniformly over all of it.

    Rule: duration = n_frames / native_fps; k = frame_count(duration, fps, max_frames, n_frames); the video is cut
    into k equal segments and the frame on screen at the centre of each is taken: index_i = floor((2i+1) * n / 2k),
    i = 0..k-1. Since k <= n the indices are strictly increasing, distinct and within [0, n-1]. Frames are picked,
    never averaged. A 10 s 30 fps video at fps=1 gives the frames at 0.5 s, 1.5 s, ..., 9.5 s.
    """
    if native_fps <= 0:
        raise ValueError(f"native_fps must be > 0, got {native_fps}")
    k = frame_count(n_frames / native_fps, fps, max_frames, n_frames)
    return [(2 * i + 1) * n_frames // (2 * k) for i in range(k)]


def subsample_indices(n: int, k: int) -> list[int]:
    """Which k of n already sampled frames to keep when a token budget wants fewer: the same centre-of-segment rule
    as `frame_indices`, over the sampled frames, so fewer frames come from the one decode. k >= n keeps all."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n)
    return [(2 * i + 1) * n // (2 * k) for i in range(k)]


def video_duration(times: Sequence[float]) -> float:
    """Seconds from the first frame's start to the last frame's end; the last frame lasts the median frame interval
    (one frame of unknown length counts as zero)."""
    if len(times) < 2:
        return 0.0
    gaps = np.diff(np.asarray(times, dtype=np.float64))
    return float(times[-1] - times[0] + np.median(gaps))


def frame_indices_at_times(times: Sequence[float], fps: float = 1.0, max_frames: int = 50) -> list[int]:
    """`frame_indices` for real frame start times (seconds, ascending), e.g. of a variable-frame-rate video.

    The same rule in time instead of index: k = frame_count(video_duration(times), ...) sample points at the centres
    of k equal time segments, each taking the frame on screen then (the last frame starting at or before it).
    A frame held on screen across several sample points is taken once, so a VFR video can yield fewer than k.
    For constant-rate times i / native_fps this gives exactly `frame_indices(n, native_fps, fps, max_frames)`.
    """
    n = len(times)
    t = np.asarray(times, dtype=np.float64)
    if n == 0:
        raise ValueError("the video has no frames")
    if np.any(np.diff(t) < 0):
        raise ValueError("frame times must be ascending")
    duration = video_duration(times)
    k = frame_count(duration, fps, max_frames, n)
    points = t[0] + (np.arange(k) + 0.5) * (duration / k)
    chosen = np.searchsorted(t, points + _TIME_TOLERANCE_S, side="right") - 1
    return sorted({int(max(0, min(i, n - 1))) for i in chosen})


# ---------------------------------------------------------------------------------------------------------------
# Settings: one source for training, eval and generate
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoSampling:
    """Which frames to take from a video and how large the processor makes them."""

    fps: float
    max_frames: int
    longest_edge: int | None  # the video processor's frame size (its first resize); None: no such resize
    resample: int = 1  # the PIL filter id it resizes with (1 = LANCZOS, as `smolvlm init` writes)


def video_sampling(processor, fps: float | None = None, max_frames: int | None = None) -> VideoSampling:
    """The video settings of a model's processor (`smolvlm init` writes them into the model folder's
    video_preprocessor_config.json), with a training phase's `video_fps` / `video_max_frames` overriding fps and the
    frame cap when given. Training, eval and `smolvlm generate` take their settings from here and nowhere else."""
    vp = getattr(processor, "video_processor", processor)
    sampling = getattr(vp, "video_sampling", None) or {}
    fps = fps or sampling.get("fps") or getattr(vp, "fps", None) or 1.0
    max_frames = max_frames or sampling.get("max_frames") or getattr(vp, "num_frames", None) or 64
    # The processor resizes with `size` (which its constructor takes from video_sampling's video_size).
    size = getattr(vp, "size", None) or sampling.get("video_size") or {}
    edge = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
    resample = getattr(vp, "resample", None)
    return VideoSampling(float(fps), int(max_frames), int(edge) if edge and getattr(vp, "do_resize", True) else None,
                         1 if resample is None else int(resample))


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class SampledVideo:
    """Frames taken from one video, with what a processor needs to describe them."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    timestamps: list[float]  # seconds since the first frame, millisecond precision
    indices: list[int]  # positions of the frames among all frames of the video, presentation order
    n_frames: int
    duration_s: float
    backend: str
    path: str = field(default="")
    # The video's own size; `frames` may be smaller (a frame cache stores them shrunk as the processor would).
    width: int = 0
    height: int = 0

    def __post_init__(self) -> None:
        self.height = self.height or int(self.frames.shape[1])
        self.width = self.width or int(self.frames.shape[2])

    @property
    def native_fps(self) -> float:
        return self.n_frames / self.duration_s if self.duration_s > 0 else 0.0

    def subsample(self, max_frames: int) -> "SampledVideo":
        """At most `max_frames` of these frames (`subsample_indices`), with their times and indices."""
        keep = subsample_indices(len(self.indices), max_frames)
        if len(keep) == len(self.indices):
            return self
        return replace(self, frames=self.frames[keep], timestamps=[self.timestamps[i] for i in keep],
                       indices=[self.indices[i] for i in keep])

    def metadata(self):
        """A `transformers` VideoMetadata whose `timestamps` are the real frame times (not index / fps), for
        `SmolVLMProcessor(..., videos=[frames], video_metadata=[...], do_sample_frames=False)`."""
        return _timed_metadata_class()(
            total_num_frames=self.n_frames,
            fps=self.native_fps or None,
            width=self.width,
            height=self.height,
            duration=self.duration_s,
            video_backend=self.backend,
            frames_indices=list(self.indices),
            frame_times=list(self.timestamps),
        )


_TIMED_METADATA = None


def _timed_metadata_class():
    # Built lazily: importing transformers costs seconds and most callers of this module never need it.
    global _TIMED_METADATA
    if _TIMED_METADATA is None:
        from transformers.video_utils import VideoMetadata

        @dataclass
        class TimedVideoMetadata(VideoMetadata):
            frame_times: list[float] | None = None

            @property
            def timestamps(self) -> list[float]:
                if self.frame_times is not None:
                    return list(self.frame_times)
                return [i / self.fps for i in self.frames_indices]

        _TIMED_METADATA = TimedVideoMetadata
    return _TIMED_METADATA


def sample_video(
    path: str | os.PathLike, fps: float = 1.0, max_frames: int = 50, backend: str = "auto"
) -> tuple[np.ndarray, list[float]]:
    """Frames (uint8 [T, H, W, 3]) and their times in seconds, sampled as `frame_indices_at_times` says.

    backend: "auto" (decord, falling back to PyAV when decord is missing or cannot read the file), "decord", "pyav".
    Raises MediaError naming the file when it is missing, empty, not a video, or truncated.
    Use `load_video` for the duration and a processor-ready VideoMetadata as well.
    """
    video = load_video(path, fps=fps, max_frames=max_frames, backend=backend)
    return video.frames, video.timestamps


def load_video(
    path: str | os.PathLike, fps: float = 1.0, max_frames: int = 50, backend: str = "auto"
) -> SampledVideo:
    """`sample_video` with everything known about the sampled video (see SampledVideo)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    path = Path(path)
    _check_file(path)
    if backend == "pyav":
        return _with_media_error(path, _load_pyav, fps, max_frames)
    try:
        import decord  # noqa: F401
    except ImportError as exc:
        if backend == "decord":
            raise MediaError(
                f"cannot read {path}: the decord backend is not installed",
                hint="pip install decord, or use the pyav backend",
            ) from exc
        return _with_media_error(path, _load_pyav, fps, max_frames)
    if backend == "decord":
        return _with_media_error(path, _load_decord, fps, max_frames)
    try:
        return _load_decord(path, fps, max_frames)
    except _Unreadable as decord_failure:
        try:
            return _load_pyav(path, fps, max_frames)
        except _Unreadable as pyav_failure:
            raise _media_error(path, pyav_failure) from decord_failure


class _Unreadable(Exception):
    """A decoder could not produce the frames asked for; the message says why."""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(
            f"video file not found: {path}",
            hint="check the path (JSONL media paths are relative to the JSONL file's folder)",
        )
    if not path.is_file():
        raise MediaError(f"video path is not a file: {path}", hint="point it at a video file")
    if path.stat().st_size == 0:
        raise MediaError(f"video file is empty (0 bytes): {path}", hint="re-download or re-encode it")


def _media_error(path: Path, failure: Exception) -> MediaError:
    reason = " ".join(str(failure).split()) or type(failure).__name__
    return MediaError(
        f"cannot read video {path}: {reason}",
        hint="the file is corrupt, truncated or not a video; re-download or re-encode it (e.g. with ffmpeg)",
    )


def _with_media_error(path: Path, load, fps: float, max_frames: int) -> SampledVideo:
    try:
        return load(path, fps, max_frames)
    except _Unreadable as failure:
        raise _media_error(path, failure) from failure


def _sampled(path: Path, backend: str, frames: list[np.ndarray], times: list[float], chosen: list[int]):
    return SampledVideo(
        frames=np.stack(frames).astype(np.uint8, copy=False),
        timestamps=[round(times[i], 3) for i in chosen],
        indices=chosen,
        n_frames=len(times),
        duration_s=round(video_duration(times), 3),
        backend=backend,
        path=str(path),
    )


def _load_decord(path: Path, fps: float, max_frames: int) -> SampledVideo:
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n = len(reader)
        if n == 0:
            raise _Unreadable("it has no video frames")
        starts = reader.get_frame_timestamp(list(range(n)))[:, 0].astype(np.float64)
        times = [float(t - starts[0]) for t in starts]
        chosen = frame_indices_at_times(times, fps, max_frames)
        batch = reader.get_batch(chosen).asnumpy()
    except _Unreadable:
        raise
    except (decord.DECORDError, RuntimeError, ValueError, IndexError) as exc:
        raise _Unreadable(_first_line(exc)) from exc
    return _sampled(path, "decord", list(batch), times, chosen)


def _load_pyav(path: Path, fps: float, max_frames: int) -> SampledVideo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _Unreadable("it has no video stream")
            stream = container.streams.video[0]
            declared = stream.frames
            # Packet times give every frame's presentation time without decoding any picture.
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        if not pts:
            raise _Unreadable("it has no video frames with timestamps")
        if declared and len(pts) < declared:
            raise _Unreadable(f"it is truncated: {len(pts)} of its {declared} frames are present")
        base = stream.time_base
        times = [float((p - pts[0]) * base) for p in pts]
        chosen = frame_indices_at_times(times, fps, max_frames)
        wanted = {pts[i]: i for i in chosen}
        got: dict[int, np.ndarray] = {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    got[wanted[frame.pts]] = frame.to_ndarray(format="rgb24")
                    if len(got) == len(wanted):
                        break
    except _Unreadable:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _Unreadable(_first_line(exc)) from exc
    if len(got) < len(chosen):
        raise _Unreadable(f"only {len(got)} of the {len(chosen)} sampled frames could be decoded (truncated?)")
    return _sampled(path, "pyav", [got[i] for i in chosen], times, chosen)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    # decord prefixes "[hh:mm:ss] /its/source/file.cc:123: Error:", which helps nobody reading our message.
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*(Error:\s*)?", "", text[0])
