# Video sampling speed per backend: milliseconds to take the frames of one clip (fps 1, max 64, as in training).
# Encodes its own clips (moving gradients, H.264 with x264 defaults) into a temporary folder; prints a table.
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from smolvlm_cli.data.synthetic import write_mp4
from smolvlm_cli.data.video import load_video


def make_clip(path: Path, seconds: int, fps: int, width: int, height: int) -> None:
    """Frames that change every step (sliding gradients) so the decoder does real work."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    frames = np.empty((seconds * fps, height, width, 3), np.uint8)
    for t in range(len(frames)):
        frames[t, ..., 0] = (x + 3 * t) % 256
        frames[t, ..., 1] = (y + 2 * t) % 256
        frames[t, ..., 2] = (x + y + t) % 256
    write_mp4(path, frames, fps)


def timed(path: Path, backend: str, repeats: int) -> tuple[float, int]:
    load_video(path, fps=1.0, max_frames=64, backend=backend)  # warm the page cache
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        video = load_video(path, fps=1.0, max_frames=64, backend=backend)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), len(video.frames)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clips = [(10, 30, 320, 240), (60, 30, 320, 240), (30, 30, 640, 360)]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'clip':<22}{'backend':<9}{'frames':>7}{'ms/clip':>10}{'ms/frame':>10}")
        for seconds, fps, w, h in clips:
            path = Path(tmp) / f"{seconds}s_{w}x{h}.mp4"
            make_clip(path, seconds, fps, w, h)
            for backend in ("decord", "pyav"):
                try:
                    secs, n = timed(path, backend, args.repeats)
                except Exception as exc:  # a missing backend should not hide the other's figure
                    print(f"{path.name:<22}{backend:<9}  unavailable: {exc}")
                    continue
                print(f"{path.name:<22}{backend:<9}{n:>7}{secs * 1000:>10.1f}{secs * 1000 / n:>10.2f}")
