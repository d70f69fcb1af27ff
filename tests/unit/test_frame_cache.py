# The frame cache's file format, keys and resume logic on tiny PyAV videos: exact round trips, misses on any changed
# setting, truncated or damaged files re-made (never read), corrupt videos counted once.
from __future__ import annotations

import os

import numpy as np
import pytest

from smolvlm_cli.data import frame_cache as fc
from smolvlm_cli.data.video import SampledVideo, VideoSampling, load_video, subsample_indices

SAMPLING = VideoSampling(fps=1.0, max_frames=4, longest_edge=64, resample=1)  # 32 px frames: never resized


def write_mp4(path, n_frames=24, fps=4, size=32):
    """Flat grey frames whose level encodes the index (level 10 * i), so a decoded frame names itself."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            frame = np.full((size, size, 3), 10 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def levels(frames) -> list[int]:
    return [int(round(float(f.mean()) / 10)) for f in frames]


@pytest.fixture
def clip(tmp_path):
    return write_mp4(tmp_path / "clip.mp4")


def test_subsample_takes_the_centre_of_equal_segments_of_the_sampled_frames():
    assert subsample_indices(10, 5) == [1, 3, 5, 7, 9]
    assert subsample_indices(8, 4) == [1, 3, 5, 7]
    assert subsample_indices(8, 3) == [1, 4, 6]
    assert subsample_indices(7, 1) == [3]
    assert subsample_indices(3, 8) == [0, 1, 2]
    with pytest.raises(ValueError):
        subsample_indices(3, 0)


def test_subsampled_video_keeps_times_indices_and_native_size(clip):
    video = load_video(clip, fps=1.0, max_frames=6, backend="pyav")  # 6 s at 4 fps, 1 fps: frames 2, 6, ... 22
    assert video.indices == [2, 6, 10, 14, 18, 22]
    fewer = video.subsample(3)
    assert fewer.indices == [6, 14, 22] and fewer.timestamps == [1.5, 3.5, 5.5]
    assert levels(fewer.frames) == [6, 14, 22]
    assert (fewer.width, fewer.height, fewer.n_frames, fewer.duration_s) == (32, 32, 24, 6.0)
    assert video.subsample(6) is video


def test_entry_round_trip_is_exact(tmp_path, clip):
    video = load_video(clip, fps=1.0, max_frames=4, backend="pyav")
    file = tmp_path / "e.frames"
    size = fc.write_entry(file, video)
    assert size == file.stat().st_size and fc.entry_complete(file)
    back = fc.read_entry(file)
    assert np.array_equal(back.frames, video.frames) and back.frames.flags.writeable
    assert (back.timestamps, back.indices, back.n_frames, back.duration_s, back.backend) == (
        [0.75, 2.25, 3.75, 5.25], [3, 9, 15, 21], 24, 6.0, "pyav")
    assert (back.width, back.height, back.path) == (32, 32, str(clip))
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, none left behind
    assert fc.read_entry(tmp_path / "missing.frames") is None


def test_key_changes_with_every_setting_and_the_file(tmp_path, clip):
    base = fc.entry_key(clip, SAMPLING)
    assert fc.entry_key(clip, SAMPLING) == base
    changed = [VideoSampling(1.0, 5, 64, 1), VideoSampling(2.0, 4, 64, 1), VideoSampling(1.0, 4, 128, 1),
               VideoSampling(1.0, 4, 64, 3)]
    keys = {fc.entry_key(clip, s) for s in changed} | {fc.entry_key(clip, SAMPLING, backend="pyav")}
    assert len(keys) == 5 and base not in keys
    os.utime(clip, ns=(1_000_000_000, 1_000_000_000))
    assert fc.entry_key(clip, SAMPLING) != base  # same bytes, other mtime: the file's identity changed


def _corrupt(file, how):
    data = bytearray(file.read_bytes())
    if how == "truncated":
        file.write_bytes(bytes(data[:-100]))
    elif how == "flipped":
        data[-10] ^= 0xFF
        file.write_bytes(bytes(data))
    elif how == "header":
        data[30] ^= 0xFF
        file.write_bytes(bytes(data))
    else:
        file.write_bytes(b"not a cache file at all")


@pytest.mark.parametrize("how", ["truncated", "flipped", "header", "garbage"])
def test_damaged_entry_is_detected(tmp_path, clip, how):
    file = tmp_path / "e.frames"
    fc.write_entry(file, load_video(clip, fps=1.0, max_frames=4, backend="pyav"))
    _corrupt(file, how)
    with pytest.raises(fc.CorruptEntry):
        fc.read_entry(file)
    assert fc.entry_complete(file) is (how == "flipped")  # the resume check reads sizes only, not the CRC


def test_cached_frames_are_read_and_a_truncated_entry_is_remade_not_read(tmp_path, clip, monkeypatch):
    root = tmp_path / "cache"
    file = fc.entry_path(root, fc.entry_key(clip, SAMPLING, "pyav"))
    decoded = fc.decode(clip, SAMPLING, "pyav")
    marked = SampledVideo(np.full_like(decoded.frames, 7), decoded.timestamps, decoded.indices, decoded.n_frames,
                          decoded.duration_s, "pyav", str(clip))
    fc.write_entry(file, marked)
    calls = []
    real = fc.decode
    monkeypatch.setattr(fc, "decode", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    hit = fc.load_sampled(clip, SAMPLING, "pyav", root)
    assert (hit.frames == 7).all() and calls == []  # the cache answered, nothing decoded
    _corrupt(file, "truncated")
    again = fc.load_sampled(clip, SAMPLING, "pyav", root)
    assert levels(again.frames) == [3, 9, 15, 21] and calls == [clip]  # decoded, not the marker frames
    assert levels(fc.read_entry(file).frames) == [3, 9, 15, 21]  # and the entry was written again, whole


def test_build_counts_corrupt_videos_once_and_resumes(tmp_path):
    good = write_mp4(tmp_path / "good.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage " * 8)
    two = [SAMPLING, VideoSampling(1.0, 2, 64, 1)]
    videos = {str(good): two, str(bad): two}
    ticks = []
    first = fc.build_cache(videos, tmp_path / "cache", "pyav", progress=lambda *done_total: ticks.append(done_total))
    assert (first["videos"], first["cached"], list(first["corrupt"]), ticks) == (1, 0, [str(bad)], [(1, 2), (2, 2)])
    assert first["corrupt"][str(bad)].startswith(f"cannot read video {bad}: ")
    entries = sorted(p.stat().st_size for p in (tmp_path / "cache").rglob("*.frames"))
    assert first["bytes"] == sum(entries) and len(entries) == 2
    again = fc.build_cache(videos, tmp_path / "cache", "pyav")
    assert (again["videos"], again["cached"], again["bytes"], list(again["corrupt"])) == (0, 2, 0, [str(bad)])


def test_cache_dir_setting():
    assert fc.cache_dir(True) == fc.default_cache_dir()
    assert fc.default_cache_dir() == fc.Path(os.environ["SMOLVLM_CACHE"]) / "frames"
    assert fc.cache_dir(False) is None and fc.cache_dir(None) is None
    assert fc.cache_dir("/x/y") == fc.Path("/x/y")
