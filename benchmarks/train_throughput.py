# Training speed of the tiny recipe: tokens/s through the DeepSpeed engine vs a bare PyTorch loop over the same model
# and batches (overhead ratio with ZeRO disabled), and tokens/s + peak memory per rank for ZeRO-2 / ZeRO-3 at 1 and 2
# processes. Prints a table; each configuration is a real `smolvlm train-vision` run of one full-training phase.
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def recipe(tmp: Path, steps: int) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "tiny.yaml").read_text())
    full = data["stages"]["vision"]["phases"][1]
    # Batch and mixture fixed here, so the README's figures do not move when the tiny recipe is retuned.
    full.update(steps=steps, neftune_alpha=None, global_batch_size=8, micro_batch_size=4, data=[
        {"source": "colour", "weight": 50}, {"source": "count", "weight": 15}, {"source": "chart", "weight": 10},
        {"source": "compare", "weight": 10}, {"source": "text", "weight": 15}])
    data["stages"] = {"vision": {"phases": [full]}}
    data["train"].update(checkpoint_every=10 * steps, log_every=5)  # per-step logging costs ~5 ms on a ~65 ms step
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def engine_run(rec: Path, init: Path, out: Path, ds: str, nproc: int) -> tuple[float, list[float]]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    cmd = [sys.executable, "-m", "smolvlm_cli.cli", "train-vision", "--recipe", str(rec), "--init", str(init),
           "--out", str(out), "--deepspeed", ds, "--nproc", str(nproc)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in rows[1:]), rows[-1]["peak_rss_mb"]


def bare_loop(rec: Path, init: Path, steps: int) -> float:
    """The same phase, batches and loss in plain PyTorch: the baseline for the engine's overhead."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from smolvlm_cli.assemble import image_seq_len
    from smolvlm_cli.data.batching import add_blank_image
    from smolvlm_cli.data.encode import EncodeConfig, Encoder
    from smolvlm_cli.data.resolve import open_sources
    from smolvlm_cli.recipe import load_recipe
    from smolvlm_cli.train.loss import supervised_loss_sum
    from smolvlm_cli.train.phases import apply_phase, param_groups
    from smolvlm_cli.train.stream import PhaseStream

    r = load_recipe(rec)
    phase = r.stages["vision"].phases[0]
    model = apply_phase(AutoModelForImageTextToText.from_pretrained(init, dtype=torch.float32), phase).train()
    proc = AutoProcessor.from_pretrained(init)
    enc = Encoder(proc, EncodeConfig(max_seq_len=phase.max_seq_len))
    stream = PhaseStream(open_sources(r.sources, [e.source for e in phase.data], r.synthetic), phase.data, enc,
                         seed=r.seed, rank=0, world_size=1, micro_batch_size=phase.micro_batch_size,
                         window=r.train.group_window, packing=phase.packing, group=phase.group_by_length,
                         max_seq_len=phase.max_seq_len, max_skip_fraction=1.0)
    opt = torch.optim.AdamW(param_groups(model, phase), betas=phase.betas, foreach=False)
    cfg = model.config
    vc = cfg.vision_config
    blank = dict(image_token_id=cfg.image_token_id, tile=vc.image_size, pad_id=enc.pad_id,
                 image_seq_len=image_seq_len(vc.image_size, vc.patch_size, cfg.scale_factor))
    gas = phase.global_batch_size // phase.micro_batch_size
    batches = iter(stream)
    rates = []
    for _ in range(steps):
        t0 = time.perf_counter()
        micro = [add_blank_image(next(batches), **blank) for _ in range(gas)]
        n = sum(float((b["labels"][:, 1:] != -100).sum()) for b in micro)
        tokens = sum(float((b["input_ids"] != enc.pad_id).sum()) for b in micro)
        for b in micro:
            labels = b.pop("labels")
            (supervised_loss_sum(model, b, labels) / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), phase.grad_clip)
        opt.step()
        opt.zero_grad()
        rates.append(tokens / (time.perf_counter() - t0))
    return statistics.median(rates[3:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    init = tmp / "init"
    init_model(load_recipe(ROOT / "recipes" / "tiny.yaml"), init)
    rec = recipe(tmp, args.steps)
    zero0 = tmp / "zero0.json"
    cfg = json.loads((ROOT / "ds_configs" / "zero2.json").read_text())
    cfg["zero_optimization"] = {"stage": 0}
    zero0.write_text(json.dumps(cfg))
    bare = bare_loop(rec, init, args.steps)
    print(f"{'configuration':<22}{'tokens/s':>10}{'bare/engine':>13}  peak memory per rank (MiB)")
    print(f"{'bare PyTorch, 1 proc':<22}{bare:>10.0f}{1.0:>13.2f}")
    for ds, nproc in (("zero0", 1), ("zero2", 1), ("zero3", 1), ("zero2", 2), ("zero3", 2)):
        rate, memory = engine_run(rec, init, tmp / f"{ds}-{nproc}", str(zero0) if ds == "zero0" else ds, nproc)
        label = f"{'no ZeRO' if ds == 'zero0' else ds}, {nproc} proc"
        print(f"{label:<22}{rate:>10.0f}{bare / rate:>13.2f}  {memory}")


if __name__ == "__main__":
    main()
