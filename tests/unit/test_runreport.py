"""`smolvlm report` on run folders built by hand: a vision run with periodic evals and a video run continuing it
(one time line), a torn last line of metrics.jsonl, a run with no metrics yet, overlaid runs. The point counts
are read back from the HTML's JSON block and the PNGs' text chunks."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from smolvlm_cli.runreport.series import smoothed


def _record(stage, phase, step, loss, *, rss=(100.0, 110.0), skipped=None, sources=None, data_wait=0.01):
    return {"time": 0.0, "stage": stage, "phase": phase, "step": step, "loss": loss,
            "lr": {"text": 1e-3 * step, "text/no_decay": 1e-3 * step, "connector": 2e-3},
            "tokens_per_s": 100.0 + step, "samples_seen": 8 * step, "skipped": skipped or {}, "fitted": {},
            "bad_steps": 0, "peak_rss_mb": list(rss), "data_wait": data_wait, "sources": sources or {}}


def _run(path: Path, stage: str, phases: list[tuple[str, int, dict]], lines: list, init: str = "/models/init",
         torn: str | None = None) -> Path:
    path.mkdir(parents=True)
    recipe = {"name": "tiny", "stages": {stage: {"phases": [
        {"name": n, "steps": s, "data": [{"source": k, "weight": w} for k, w in d.items()]} for n, s, d in phases]}}}
    (path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (path / "run.json").write_text(json.dumps({"recipe": "tiny", "stage": stage, "init": init,
                                               "versions": {"torch": "2.14.1"}, "git_revision": "abc123"}))
    text = "".join(json.dumps(r) + "\n" for r in lines) + (torn or "")
    (path / "metrics.jsonl").write_text(text)
    return path


def _vision_video(tmp_path: Path) -> tuple[Path, Path]:
    vision = _run(tmp_path / "vision", "vision", [("a", 4, {"x": 3, "y": 1}), ("b", 3, {"x": 1})], [
        *(_record("vision", "a", s, 2.0 - 0.1 * s, sources={"x": 6 * s, "y": 2 * s}) for s in range(1, 5)),
        {"stage": "vision", "phase": "a", "step": 2, "eval": {"t1": 0.5, "t2": 0.25}, "composite": 0.375},
        {"stage": "vision", "phase": "a", "step": 4, "eval": {"t1": 0.75, "t2": 0.5}, "composite": 0.625},
        _record("vision", "a", 3, 1.5),  # a resumed run logs step 3 again: the later record wins
        *(_record("vision", "b", s, 1.0, skipped={"too_long": s}, sources={"x": 8 * s}) for s in range(1, 4)),
    ])
    (vision / "best").mkdir()
    (vision / "best" / "best.json").write_text(json.dumps([{"name": "vision-phase0-step00000004", "composite": 0.625,
                                                            "scores": {}}]))
    # a video run still training (2 of 5 steps), its last line torn mid-write
    video = _run(tmp_path / "video", "video", [("v", 5, {"clips": 1})],
                 [_record("video", "v", s, 0.9, rss=(120.0, 130.0), skipped={"corrupt_video": 1})
                  for s in (1, 2)], init=str(vision / "phases" / "01-b"), torn='{"time": 1.0, "stage": "vid')
    return vision, video


def _meta(html: Path) -> dict:
    block = re.search(r'<script type="application/json" id="smolvlm-series">(.*?)</script>', html.read_text(), re.S)
    return json.loads(block.group(1))


def test_video_run_continues_its_vision_run_on_one_axis(tmp_path, cli):
    vision, video = _vision_video(tmp_path)
    res = cli("report", video, "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    html = tmp_path / "report" / "report.html"
    meta = _meta(html)
    assert meta["runs"] == [[str(vision), str(video)]]
    line = "vision + video"
    expected = {
        "loss": {f"{line} loss": 9, f"{line} loss (smoothed)": 9},  # 4 + 3 + 2 steps, the torn line left out
        "lr": {f"{line} text": 9, f"{line} connector": 9},  # the no-decay group shares the part's rate
        "throughput": {f"{line} tokens/s": 9, f"{line} data_wait": 9},
        "memory": {f"{line} rank0": 9, f"{line} rank1": 9},
        "skipped": {f"{line} skipped": 2},  # too_long, corrupt_video
        "sources": {f"{line} weights": 4, f"{line} drawn": 3},  # a: x, y; b: x; v: clips (no counts logged)
        "eval": {f"{line} t1": 2, f"{line} t2": 2, f"{line} composite": 2, f"{line} best": 1},
    }
    assert {name: plot["series"] for name, plot in meta["plots"].items()} == expected
    for name, plot in meta["plots"].items():
        png = Image.open(tmp_path / "report" / plot["png"])
        assert json.loads(png.text["smolvlm-series"]) == expected[name]
    page = html.read_text()
    assert page.count('src="data:image/png;base64,') == 7  # every plot embedded: the page opens offline
    assert "abc123" in page and "torch 2.14.1" in page and "2 / 5 steps (in progress or stopped)" in page
    assert "1 unreadable line(s)" in page


def test_series_values_on_the_shared_axis(tmp_path):
    from smolvlm_cli.runreport.read import read_lines
    from smolvlm_cli.runreport.series import eval_plot, loss_plot, skipped_plot, sources_plot

    _, video = _vision_video(tmp_path)
    lines = read_lines([video])
    loss = loss_plot(lines)
    raw = loss.series["vision + video loss"]
    assert [x for x, _ in raw] == [1, 2, 3, 4, 5, 6, 7, 8, 9]  # phase b after a's 4 steps, video after b's 3
    assert [y for _, y in raw][:4] == pytest.approx([1.9, 1.8, 1.5, 1.6])
    assert [label for _, label in loss.vlines] == ["vision/b", "video/v"]
    assert [x for x, _ in loss.vlines] == [4.5, 7.5]
    assert eval_plot(lines).series["vision + video best"] == [(4, 0.625)]
    assert dict(skipped_plot(lines).series["vision + video skipped"]) == {"too_long": 3, "corrupt_video": 1}
    sources = sources_plot(lines).series
    assert dict(sources["vision + video weights"]) == {"a: x": 0.75, "a: y": 0.25, "b: x": 1.0, "v: clips": 1.0}
    assert dict(sources["vision + video drawn"]) == {"a: x": 0.75, "a: y": 0.25, "b: x": 1.0}


def test_smoothing_is_a_debiased_moving_average():
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert smoothed([0.0, 1.0], weight=0.5) == pytest.approx([0.0, 0.5 / 0.75])


def test_overlaid_runs_and_a_run_without_metrics(tmp_path, cli):
    a = _run(tmp_path / "a", "vision", [("p", 3, {"x": 1})], [_record("vision", "p", s, 1.0) for s in (1, 2, 3)])
    b = _run(tmp_path / "b", "vision", [("p", 3, {"x": 1})], [_record("vision", "p", 1, 1.0)])
    empty = _run(tmp_path / "c", "vision", [("p", 3, {"x": 1})], [])
    (empty / "metrics.jsonl").unlink()  # started, nothing logged yet
    res = cli("report", a, b, empty, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    series = _meta(tmp_path / "out" / "report.html")["plots"]["loss"]["series"]
    assert series == {"a loss": 3, "a loss (smoothed)": 3, "b loss": 1, "b loss (smoothed)": 1, "c loss": 0,
                      "c loss (smoothed)": 0}


def test_not_a_run_is_one_line(tmp_path, cli):
    res = cli("report", tmp_path, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "is not a training run" in res.output and "train-vision" in res.output
