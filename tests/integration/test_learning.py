"""The quickstart end to end (init -> eval -> train-vision -> train-video -> eval -> export, 2 processes, ZeRO-3),
checked against the README's own table: every figure of this run lies in the range the README gives for it (measured
over seeds 0-4 by benchmarks/quickstart_seeds.py), so the README and the code cannot drift apart."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CELL = re.compile(r"^(\d\.\d\d) \((\d\.\d\d)–(\d\.\d\d)\)$")


def readme_table() -> dict[str, list[tuple[float, float, float]]]:
    """{task: [(seed-0 figure, low, high) for init, vision stage, video stage]} from the README's quickstart table."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| synthetic_") and len(cells) == 4:
            parsed = [CELL.match(c) for c in cells[1:]]
            assert all(parsed), f"README quickstart row is not 'figure (low–high)': {line}"
            rows[cells[0].split()[0]] = [tuple(float(x) for x in m.groups()) for m in parsed]
    return rows


def test_readme_table_is_well_formed():
    table = readme_table()
    assert sorted(table) == sorted(f"synthetic_{t}" for t in ("colour", "colour_sequence", "direction", "count",
                                                              "position", "text"))
    for cells in table.values():
        assert all(low <= figure <= high for figure, low, high in cells)


@pytest.mark.slow
def test_quickstart_learns(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    run = tmp_path / "quickstart"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "quickstart.py"), str(run), "2"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    scores = json.loads((run / "table.json").read_text())["scores"]
    assert list(scores) == ["init", "vision stage", "video stage"]
    outside = [f"{task} after {stage}: {scores[stage][task]:.2f} not in {low:.2f}–{high:.2f}"
               for task, cells in readme_table().items()
               for stage, (_, low, high) in zip(scores, cells)
               if not low <= round(scores[stage][task], 2) <= high]
    assert not outside, "; ".join(outside)
    assert scores["video stage"]["synthetic_colour"] >= 0.9  # learned, and not forgotten in the video stage
    assert (run / "export" / "model.safetensors").is_file() and "held-out accuracy" in res.stdout
    assert str(run / "report" / "report.html") in res.stdout.replace("\n", "")
    assert_report(run / "report")


def assert_report(folder):
    """The report of the quickstart's two runs on one axis: every plot, each series with one point per logged step
    (log_every 1), read back from the HTML's JSON block and from each PNG's text chunk."""
    from PIL import Image

    html = (folder / "report.html").read_text()
    meta = json.loads(re.search(r'id="smolvlm-series">(.*?)</script>', html, re.S).group(1))
    series = {name: plot["series"] for name, plot in meta["plots"].items()}
    steps, line = 20 + 450 + 350 + 150, "vision + video"  # recipes/tiny.yaml's four phases
    assert series["loss"] == {f"{line} loss": steps, f"{line} loss (smoothed)": steps}
    assert series["lr"] == {f"{line} {part}": steps for part in ("vision", "connector", "embeddings", "text")}
    # a phase's first step starts the data loader and is left out of the data-wait share
    assert series["throughput"] == {f"{line} tokens/s": steps, f"{line} data_wait": steps - 4}
    assert series["memory"] == {f"{line} rank0": steps, f"{line} rank1": steps}  # 2 processes
    assert series["sources"] == {f"{line} weights": 3 + 2 + 3 + 7, f"{line} drawn": 3 + 2 + 3 + 7}
    assert list(series["skipped"]) == [f"{line} skipped"] and series["eval"] == {}  # no periodic eval in tiny
    for name, plot in meta["plots"].items():
        assert json.loads(Image.open(folder / plot["png"]).text["smolvlm-series"]) == series[name]
