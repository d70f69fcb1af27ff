"""The 256M release recipe's video stage, pointed by `--set` at a small local copy of each of its 11 sources (their
published file formats and schemas, tests/source_fixtures.py), on the tiny model: the dry run reads a sample of every
source and skips none; two real training steps read the same draws, skip none and give a finite loss."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.source_fixtures import VIDEO_STAGE_SOURCES, overrides, write_release_fixtures

pytestmark = pytest.mark.slow

RECIPE = ROOT / "recipes" / "smolvlm2-256m.yaml"
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
PHASE = "stages.video.phases.0"
# Cheap on a CPU: the tiny model's 64 px tiles, 4 frames, short sequences; no periodic eval (its benchmarks come
# from the hub); no DataLoader workers.
CHEAP = [f"{PHASE}.video_max_frames=4", f"{PHASE}.max_seq_len=1024", "train.num_workers=0", "eval=null"]
DRAWS = 512  # what --dry-run draws from a phase this long; the training window below reads the same draws
ROW = re.compile(r"^\W\s*(\w+)\s+\W\s+(\d+)\s+\W\s+[\d.]+%\s+\W\s*$", re.M)


def cli(*args, hf_cache: Path) -> subprocess.CompletedProcess:
    # A fresh `datasets` cache per run: a streamed JSON file must read right without features cached by another load.
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(HF_DATASETS_CACHE=str(hf_cache), COLUMNS="200")  # Rich: no truncated source names
    return subprocess.run([sys.executable, "-m", "smolvlm_cli.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=900)


def set_args(specs: dict, extra: list[str]) -> list[str]:
    return [a for text in overrides(specs) + extra for a in ("--set", text)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """NAME -> spec fields; streaming left as the recipe has it (FineVideo and MAmmoTH-VL stream)."""
    specs = write_release_fixtures(tmp_path_factory.mktemp("release-sources"), streaming=None)
    assert sorted(specs) == sorted(VIDEO_STAGE_SOURCES)
    return specs


@pytest.mark.parametrize("streaming", [None, False], ids=["recipe-streaming", "no-streaming"])
def test_dry_run_reads_every_source_and_skips_none(streaming, sources, tiny_model_dir, tmp_path):
    specs = sources if streaming is None else {n: {**s, "streaming": streaming} for n, s in sources.items()}
    res = cli("train-video", "--recipe", RECIPE, "--init", tiny_model_dir, "--out", tmp_path / "run", "--dry-run",
              *set_args(specs, CHEAP), hf_cache=tmp_path / "hf")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert f"phase video: {DRAWS} samples drawn" in out, out
    per_source = {name: int(n) for name, n in ROW.findall(out)}
    assert sorted(per_source) == sorted(VIDEO_STAGE_SOURCES), out  # every source encoded at least one sample
    assert sum(per_source.values()) == DRAWS and "skipped: none" in out, out
    assert "modalities: video" in out and all(m in out for m in ("image", "multi-image", "text")), out
    assert not (tmp_path / "run").exists()  # a dry run trains nothing


# the tiny model stands in for the 256M one: the recipe's model section is checked against the checkpoint
TINY_SHAPES = ["model.vision.image_size=64", "model.vision.patch_size=8", "model.vision.hidden_size=64",
               "model.text.hidden_size=64", "model.scale_factor=2", "model.max_position_embeddings=2048"]


def test_two_training_steps_read_every_source_and_skip_none(sources, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    # One length-grouping window of DRAWS samples: before its first step rank 0 reads (and encodes) the same draws
    # the dry run showed to cover every source, so a failing source would show in `skipped`.
    cheap = CHEAP + [f"{PHASE}.global_batch_size=4", f"{PHASE}.micro_batch_size=2",
                     f"train.group_window={DRAWS // 2}"] + TINY_SHAPES
    res = cli("train-video", "--recipe", RECIPE, "--init", tiny_model_dir, "--out", run, "--max-steps", 2,
              *set_args(sources, cheap), hf_cache=tmp_path / "hf")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["bad_steps"] == 0 for r in steps), steps
    assert all(r["skipped"] == {} for r in steps), steps
    assert steps[-1]["samples_seen"] == DRAWS, steps[-1]
    log = res.stdout + res.stderr
    assert f"rank 0 read {DRAWS} samples; skipped: none" in log, log[-3000:]
    assert (run / "phases" / "00-video" / "config.json").is_file()
