"""train.report_to: a real 2-process ZeRO-3 run of the tiny model logs to TensorBoard and to W&B (offline); read
back with tensorboard's own event reader and wandb's own run-file reader, both hold the scalars metrics.jsonl holds,
and `smolvlm report` plots the same run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_RECIPE

pytestmark = pytest.mark.slow

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
STEPS = 4


def _recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load(TINY_RECIPE.read_text())
    data["stages"] = {"vision": {"phases": [{
        "name": "p", "steps": STEPS, "global_batch_size": 4, "micro_batch_size": 2, "max_seq_len": 512,
        "group_by_length": False, "schedule": {"type": "constant"},
        "parts": {"connector": {"mode": "full", "lr": 1e-3}, "text": {"mode": "full", "lr": 5e-4}},
        "data": [{"source": "colour", "weight": 75}, {"source": "text", "weight": 25}]}]}}
    data["train"].update({"checkpoint_every": 100, "report_to": ["tensorboard", "wandb"]})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _wandb_history(run: Path) -> list[dict]:
    """The history rows of the offline run's .wandb transaction log, as wandb's own reader prints them."""
    (folder,) = run.glob("wandb/offline-run-*")
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", str(folder), "--json"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_tensorboard_and_wandb_hold_the_metrics(tmp_path, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path))
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "smolvlm_cli.cli", "train-vision", "--recipe", _recipe(tmp_path),
                          "--init", tiny_model_dir, "--out", run, "--nproc", "2"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    # rank 0 alone logs: one events file, one W&B run
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tb_loss = [(e.step, e.value) for e in events.Scalars("vision/p/loss")]
    assert [s for s, _ in tb_loss] == [r["step"] for r in records]
    assert [v for _, v in tb_loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)  # float32 in events
    tb_lr = [e.value for e in events.Scalars("vision/p/lr/text")]
    assert tb_lr == pytest.approx([r["lr"]["text"] for r in records], rel=1e-6)
    assert [e.value for e in events.Scalars("vision/p/sources/colour")] == [r["sources"]["colour"] for r in records]
    rows = _wandb_history(run)
    assert [row["step"] for row in rows] == [r["step"] for r in records]
    assert [row["vision/p/loss"] for row in rows] == [r["loss"] for r in records]  # JSON floats: exact
    assert [row["vision/p/tokens_per_s"] for row in rows] == [r["tokens_per_s"] for r in records]
    assert [row["vision/p/peak_rss_mb/rank1"] for row in rows] == [r["peak_rss_mb"][1] for r in records]
    # every source drawn is a source of the phase, and the counts grow with the steps
    counts = [sum(r["sources"].values()) for r in records]
    assert set(records[-1]["sources"]) == {"colour", "text"} and counts == sorted(counts) and counts[0] > 0
