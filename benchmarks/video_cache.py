# Frame cache vs decoding on the fly: CPU-seconds per training sample and cache size per minute of video, for 60 s
# clips at 360p and 1080p (H.264, x264 crf 23, 30 fps, written here with PyAV), with the 256M recipe's sampling.
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from smolvlm_cli.data import frame_cache as fc
from smolvlm_cli.data.video import VideoSampling

# The 256M / 500M recipes: 1 fps, at most 64 frames, frames resized to a 512 px longest edge (LANCZOS).
SAMPLING = VideoSampling(fps=1.0, max_frames=64, longest_edge=512, resample=1)


def make_clip(path: Path, seconds: int, width: int, height: int, fps: int = 30) -> float:
    """Sliding gradients under a scrolling noise texture (real motion, a realistic bitrate); frames are made one at a
    time, so a 1080p minute never sits in memory. Returns the bitrate in Mbit/s."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 48, (height, width * 2), dtype=np.uint8)
    x, y = np.arange(width)[None, :], np.arange(height)[:, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for t in range(seconds * fps):
            shift = texture[:, (4 * t) % width: (4 * t) % width + width]
            frame = np.stack(np.broadcast_arrays((x + 3 * t) % 208, (y + 2 * t) % 208, (x + y + t) % 208), -1)
            frame = (frame + shift[..., None]).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.stat().st_size * 8 / seconds / 1e6


def cpu(fn, repeats: int) -> tuple[float, object]:
    """Median process CPU time (all threads) of `fn()` over `repeats` runs, after one warm-up run."""
    result = fn()
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        result = fn()
        runs.append(time.process_time() - t0)
    return statistics.median(runs), result


def lossy_formats(frames: np.ndarray, repeats: int) -> dict[str, tuple[float, int]]:
    """What JPEG / WebP would store instead of raw frames: (CPU-s to decode a sample's frames, bytes)."""
    from PIL import Image

    out = {}
    for name, kwargs in (("jpeg q95", {"format": "JPEG", "quality": 95}), ("webp q90", {"format": "WEBP",
                                                                                      "quality": 90})):
        blobs = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, **kwargs)
            blobs.append(buf.getvalue())
        secs, _ = cpu(lambda: [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs], repeats)
        out[name] = (secs, sum(len(b) for b in blobs))
    return out


def processor_cpu(frames: np.ndarray, repeats: int) -> float:
    """The processor's own work on a sample's frames (resize, normalise). Cached frames are already at its frame size,
    so its first resize is skipped: the cache saves that too."""
    from transformers import SmolVLMVideoProcessor

    vp = SmolVLMVideoProcessor(size={"longest_edge": 512}, max_image_size={"longest_edge": 512}, resample=1,
                               image_mean=[0.5] * 3, image_std=[0.5] * 3, do_sample_frames=False)
    return cpu(lambda: vp(videos=[frames], return_tensors="pt"), repeats)[0]


def measure(path: Path, root: Path, backend: str, repeats: int, minutes: float = 1.0) -> dict:
    decode_s, decoded = cpu(lambda: fc.load_sampled(path, SAMPLING, backend), repeats)
    processor_fresh = processor_cpu(decoded.frames, repeats)  # also imports what the cache's resize needs
    t0 = time.process_time()
    report = fc.build_cache({str(path): [SAMPLING]}, root, backend)
    build_s = time.process_time() - t0
    read_s, cached = cpu(lambda: fc.load_sampled(path, SAMPLING, backend, root), repeats)
    row = {"frames": len(cached.indices), "shape": cached.frames.shape[1:3], "decode_s": decode_s, "read_s": read_s,
           "build_s": build_s, "mib_per_min": report["bytes"] / 2**20 / minutes,
           "lossy": lossy_formats(cached.frames, repeats),
           "processor_fresh": processor_fresh, "processor_cached": processor_cpu(cached.frames, repeats)}
    assert cached.indices == decoded.indices
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto", help="auto (decord, PyAV fallback) | decord | pyav")
    parser.add_argument("--clips", default="360p,1080p")
    args = parser.parse_args()
    sizes = {"360p": (640, 360), "1080p": (1920, 1080)}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"sampling: {SAMPLING}; backend {args.backend}; CPU-seconds are process time, median of "
              f"{args.repeats}")
        for name in args.clips.split(","):
            path = Path(tmp) / f"60s_{name}.mp4"
            mbps = make_clip(path, 60, *sizes[name])
            r = measure(path, Path(tmp) / "cache", args.backend, args.repeats)
            print(f"\n{name} (60 s, 30 fps, {mbps:.1f} Mbit/s): {r['frames']} frames, stored at "
                  f"{r['shape'][1]}x{r['shape'][0]}")
            print(f"  decode on the fly   {r['decode_s']:8.3f} CPU-s per sample")
            print(f"  read the cache      {r['read_s']:8.3f} CPU-s per sample  ({r['decode_s'] / r['read_s']:.0f}x "
                  f"less), raw uint8 + CRC32: {r['mib_per_min']:.1f} MiB per minute of video")
            for fmt, (secs, size) in r["lossy"].items():
                print(f"  {fmt + ' instead':<20}{secs:8.3f} CPU-s per sample  ({r['decode_s'] / secs:.0f}x less), "
                      f"{size / 2**20:.1f} MiB per minute (lossy: pixels differ from decoding on the fly)")
            print(f"  building the entry  {r['build_s']:8.3f} CPU-s (decode + resize + write, once)")
            fresh, cached = r["decode_s"] + r["processor_fresh"], r["read_s"] + r["processor_cached"]
            print(f"  processor after that: {r['processor_fresh']:.3f} / {r['processor_cached']:.3f} CPU-s; whole "
                  f"video part of a sample {fresh:.3f} -> {cached:.3f} CPU-s ({fresh / cached:.1f}x less)")


if __name__ == "__main__":
    main()
