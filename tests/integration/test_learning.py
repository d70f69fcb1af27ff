"""The quickstart end to end (init -> eval -> train-vision -> train-video -> eval -> export, 2 processes, ZeRO-3):
the tiny recipe learns the colour question in the vision stage, and in the video stage the two video questions:
which colour comes first / last, and which way an object moves."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_learns(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    run = tmp_path / "quickstart"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "quickstart.py"), str(run), "2"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    def scores(name):
        return {t: r["score"] for t, r in json.loads((run / "eval" / f"{name}.json").read_text())["tasks"].items()}

    vision, video = scores("vision"), scores("video")
    assert vision["synthetic_colour"] >= 0.9  # chance 0.25
    assert video["synthetic_colour"] >= 0.9  # not forgotten in the video stage
    assert video["synthetic_colour_sequence"] >= 0.6  # chance 0.25
    assert video["synthetic_direction"] > 0.38  # chance 0.25; 0.38 is the majority answer's share of the test split
    assert (run / "export" / "model.safetensors").is_file() and "held-out accuracy" in res.stdout
