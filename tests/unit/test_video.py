# Frame-index math with exact expected indices, and decoding real tiny mp4 files with both backends.
# Each frame of the test videos is a flat grey whose level encodes its index, so a decoded frame names itself.
from __future__ import annotations

import fractions
import sys

import av
import numpy as np
import pytest

from smolvlm_cli.data import video as video_mod
from smolvlm_cli.data.video import (
    frame_count,
    frame_indices,
    frame_indices_at_times,
    load_video,
    sample_video,
    video_duration,
)
from smolvlm_cli.errors import MediaError

BACKENDS = ["decord", "pyav"]


# --- pure index math ---------------------------------------------------------------------------------------------

def test_ten_seconds_at_30fps_sampled_at_1fps_takes_the_centre_of_each_second():
    assert frame_indices(300, 30.0, fps=1.0) == [15, 45, 75, 105, 135, 165, 195, 225, 255, 285]


def test_video_shorter_than_a_second_gives_one_frame_in_its_middle():
    assert frame_indices(15, 30.0, fps=1.0) == [7]
    assert frame_indices(1, 30.0, fps=1.0) == [0]


def test_long_video_is_capped_and_spread_over_the_whole_video():
    indices = frame_indices(3000, 30.0, fps=1.0, max_frames=50)
    assert indices == [30 + 60 * i for i in range(50)]
    assert indices[0] < 60 and indices[-1] > 2940


def test_seven_fps_video():
    assert frame_indices(21, 7.0, fps=1.0) == [3, 10, 17]
    assert frame_indices(21, 7.0, fps=2.0) == [1, 5, 8, 12, 15, 19]


def test_asking_for_more_frames_than_exist_takes_each_frame_once():
    assert frame_indices(10, 2.0, fps=4.0) == list(range(10))


def test_frame_count_uses_round_half_to_even_like_the_reference_loader():
    assert frame_count(2.5, 1.0, 50, 75) == 2
    assert frame_count(3.5, 1.0, 50, 105) == 4
    assert frame_count(0.4, 1.0, 50, 12) == 1
    assert frame_indices(75, 30.0, fps=1.0) == [18, 56]


@pytest.mark.parametrize("bad", [dict(fps=0.0), dict(max_frames=0)])
def test_invalid_sampling_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        frame_indices(100, 30.0, **bad)


def test_indices_are_strictly_increasing_and_in_range_for_many_shapes():
    for n in (1, 2, 3, 7, 29, 30, 31, 299, 1001):
        for native in (7.0, 23.976, 30.0, 60.0):
            for fps in (0.5, 1.0, 2.0, 24.0):
                for cap in (1, 8, 64):
                    idx = frame_indices(n, native, fps, cap)
                    assert all(0 <= i < n for i in idx)
                    assert all(b > a for a, b in zip(idx, idx[1:]))
                    assert len(idx) == max(1, min(round(n / native * fps), cap, n))


def test_times_based_sampling_matches_index_math_for_constant_frame_rate():
    for n in (1, 15, 21, 75, 300, 3000):
        for native in (7.0, 25.0, 30.0):
            times = [i / native for i in range(n)]
            for fps, cap in ((1.0, 50), (2.0, 8), (0.25, 64)):
                assert frame_indices_at_times(times, fps, cap) == frame_indices(n, native, fps, cap)


def test_variable_frame_rate_uses_real_frame_times():
    times = [0.0, 0.1, 0.2, 1.0, 1.1, 2.5]
    assert video_duration(times) == pytest.approx(2.6)
    # sample points 0.26, 0.78, 1.30, 1.82, 2.34 s: frame 2 is on screen for the first two, frame 4 for the rest
    assert frame_indices_at_times(times, fps=2.0) == [2, 4]
    assert frame_indices_at_times(times, fps=10.0) == [2, 3, 4]
    # treating the 6 frames as evenly spaced over 2.6 s would pick [1, 3, 5] at fps 1; real times pick differently
    assert frame_indices(6, 6 / 2.6, fps=1.0) == [1, 3, 5]
    assert frame_indices_at_times(times, fps=1.0) == [2, 4]


def test_times_must_be_ascending():
    with pytest.raises(ValueError):
        frame_indices_at_times([0.0, 0.2, 0.1])


# --- decoding real files -----------------------------------------------------------------------------------------

def _grey(i: int) -> np.ndarray:
    return np.full((32, 32, 3), 10 + 3 * i, np.uint8)


def _index_of(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 10) / 3))


def _write(path, n: int, fps: int = 30, times_ms: list[int] | None = None, faststart: bool = False) -> None:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        if times_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(_grey(i), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {name: root / f"{name}.mp4" for name in ("cfr", "vfr", "fps7", "faststart")}
    _write(paths["cfr"], 75, fps=30)  # 2.5 s
    _write(paths["vfr"], 6, fps=30, times_ms=[0, 100, 200, 1000, 1100, 2500])
    _write(paths["fps7"], 21, fps=7)
    _write(paths["faststart"], 60, fps=30, faststart=True)
    data = paths["cfr"].read_bytes()
    paths["truncated"] = root / "truncated.mp4"  # index (moov) at the end: cut off
    paths["truncated"].write_bytes(data[: len(data) // 2])
    data = paths["faststart"].read_bytes()
    paths["truncated_faststart"] = root / "truncated_faststart.mp4"  # index intact, frames cut off
    # half the file: the frames past the middle are gone (at 2/3, a lucky x264 layout sometimes kept every sampled
    # frame, so that decoding did not fail), the index in front stays whole
    cut = data[: len(data) // 2]
    assert b"moov" in cut[: cut.index(b"mdat")], "the fixture must keep the index in front of the frames"
    paths["truncated_faststart"].write_bytes(cut)
    paths["random"] = root / "random.mp4"
    paths["random"].write_bytes(np.random.default_rng(0).bytes(4000))
    paths["empty"] = root / "empty.mp4"
    paths["empty"].write_bytes(b"")
    return paths


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "fps, max_frames, expected",
    [(1.0, 50, [18, 56]), (2.0, 50, [7, 22, 37, 52, 67]), (30.0, 3, [12, 37, 62])],
)
def test_constant_rate_video_returns_the_chosen_frames_and_their_times(videos, backend, fps, max_frames, expected):
    frames, times = sample_video(videos["cfr"], fps=fps, max_frames=max_frames, backend=backend)
    assert frames.dtype == np.uint8 and frames.shape == (len(expected), 32, 32, 3)
    assert [_index_of(f) for f in frames] == expected
    assert times == [round(i / 30, 3) for i in expected]


def test_both_backends_agree_on_indices_times_and_pixels(videos):
    for name in ("cfr", "fps7", "vfr", "faststart"):
        a = load_video(videos[name], fps=2.0, backend="decord")
        b = load_video(videos[name], fps=2.0, backend="pyav")
        assert a.indices == b.indices
        assert a.timestamps == b.timestamps
        assert a.duration_s == b.duration_s and a.n_frames == b.n_frames
        assert [_index_of(f) for f in a.frames] == [_index_of(f) for f in b.frames] == a.indices  # the same frames
        # the same pixels, up to the rounding of two ffmpeg builds' YUV -> RGB conversion
        assert a.frames.dtype == b.frames.dtype == np.uint8 and a.frames.shape == b.frames.shape
        assert np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).max() <= 2, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_video_reports_real_presentation_times(videos, backend):
    video = load_video(videos["vfr"], fps=2.0, backend=backend)
    assert video.indices == [2, 4]
    assert video.timestamps == [0.2, 1.1]  # index / average fps would say 0.87 s and 1.73 s
    assert [_index_of(f) for f in video.frames] == [2, 4]
    assert video.duration_s == 2.6 and video.n_frames == 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_seven_fps_file(videos, backend):
    video = load_video(videos["fps7"], fps=1.0, backend=backend)
    assert video.indices == [3, 10, 17]
    assert video.timestamps == [0.429, 1.429, 2.429]
    assert video.duration_s == 3.0 and video.native_fps == 7.0


def test_metadata_carries_real_timestamps_for_the_processor(videos):
    video = load_video(videos["vfr"], fps=2.0)
    meta = video.metadata()
    assert meta.timestamps == [0.2, 1.1]
    assert meta.total_num_frames == 6 and meta.frames_indices == [2, 4]
    assert meta.duration == 2.6 and (meta.width, meta.height) == (32, 32)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("name", ["truncated", "truncated_faststart", "random", "empty", "missing"])
def test_unreadable_files_raise_media_error_naming_the_file(videos, tmp_path, backend, name):
    path = videos.get(name, tmp_path / "missing.mp4")
    with pytest.raises(MediaError) as info:
        sample_video(path, backend=backend)
    line = info.value.one_line()
    assert path.name in line and "\n" not in line and info.value.hint


def test_auto_falls_back_to_pyav_when_decord_is_missing(videos, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)
    assert load_video(videos["cfr"]).backend == "pyav"
    with pytest.raises(MediaError, match="decord backend is not installed"):
        load_video(videos["cfr"], backend="decord")


def test_auto_falls_back_to_pyav_when_decord_cannot_read(videos, monkeypatch):
    def refuse(*args):
        raise video_mod._Unreadable("decord says no")

    monkeypatch.setattr(video_mod, "_load_decord", refuse)
    video = load_video(videos["cfr"], fps=1.0)
    assert video.backend == "pyav" and video.indices == [18, 56]


def test_auto_prefers_decord(videos):
    pytest.importorskip("decord")
    assert load_video(videos["cfr"]).backend == "decord"


def test_unknown_backend_is_rejected(videos):
    with pytest.raises(ValueError, match="unknown video backend"):
        sample_video(videos["cfr"], backend="opencv")
