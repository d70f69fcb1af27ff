# Data pipeline speed and batch efficiency on the built-in synthetic mixture: encoded samples/s for image and video
# samples, decoded frames/s per video backend, and the share of real (non-pad) tokens padded, grouped and packed.
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from smolvlm_cli.data.batching import group_by_length, pack, real_token_fraction
from smolvlm_cli.data.encode import EncodeConfig, Encoder
from smolvlm_cli.data.resolve import open_sources
from smolvlm_cli.data.sources import SourceSpec
from smolvlm_cli.data.video import load_video


def tiny_processor(model_dir: str | None):
    from transformers import AutoProcessor

    if model_dir is None:
        from smolvlm_cli.assemble import init_model
        from smolvlm_cli.recipe import load_recipe

        model_dir = Path(tempfile.mkdtemp()) / "tiny"
        init_model(load_recipe(Path(__file__).parents[1] / "recipes" / "tiny.yaml"), model_dir)
    return AutoProcessor.from_pretrained(model_dir)


def encode_rate(encoder, source, n: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [encoder(source.sample(i)) for i in range(n)]
    return n / (time.perf_counter() - t0), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a SmolVLM folder for the processor (default: build the tiny one)")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    encoder = Encoder(tiny_processor(args.model), EncodeConfig(max_seq_len=2048, video_max_frames=8))
    names = ("colour", "count", "chart", "compare", "text", "direction", "colour_sequence")
    sources = open_sources({n: SourceSpec(path=f"synthetic:{n}") for n in names}, list(names))

    img_rate, _ = encode_rate(encoder, sources["colour"], args.samples // 4)
    vid_rate, _ = encode_rate(encoder, sources["direction"], args.samples // 8)
    print(f"encode  image samples/s {img_rate:8.1f}   video samples/s {vid_rate:8.1f} (1 fps, <= 8 frames)")

    video = sources["direction"].data[0]["messages"][0]["content"][0]["path"]
    path = Path(sources["direction"].media_root) / video
    for backend in ("decord", "pyav"):
        t0, frames = time.perf_counter(), 0
        for _ in range(50):
            frames += len(load_video(path, fps=4.0, max_frames=64, backend=backend).frames)
        print(f"decode  {backend:<6} frames/s {frames / (time.perf_counter() - t0):8.1f}")

    samples = []
    per_source = args.samples // len(names)
    for name in names:
        samples += [encoder(sources[name].sample(i)) for i in range(per_source)]
    import random

    random.Random(0).shuffle(samples)
    bs = args.batch_size
    plain = [[[s] for s in samples[i: i + bs]] for i in range(0, len(samples), bs)]
    grouped = [[[s] for s in b] for b in group_by_length(samples, bs, window=16)]
    packed = [list(pack(sorted(samples[i: i + 16 * bs], key=len), 1024)) for i in range(0, len(samples), 16 * bs)]
    packed_batches = [rows[i: i + 2] for rows in packed for i in range(0, len(rows), 2)]
    print(f"real tokens per batch ({len(samples)} mixed samples, batch {bs}): "
          f"padded {real_token_fraction(plain):.1%}, length-grouped {real_token_fraction(grouped):.1%}, "
          f"packed to 1024 {real_token_fraction(packed_batches):.1%}")


if __name__ == "__main__":
    main()
