# Drawing and writing the report: one PNG per plot (matplotlib, Agg; each PNG carries its series' point counts in a
# text chunk) and report.html, which embeds them as base64 with a JSON block of the same counts: it opens offline.
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .read import Line, read_lines
from .series import Plot, all_plots

SERIES_KEY = "smolvlm-series"  # PNG text chunk / HTML JSON block: {series name: number of points}


def draw(plot: Plot, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        if plot.kind == "bar":
            _bars(ax, plot)
        else:
            _lines(ax, plot)
        ax.set_title(plot.title, fontsize=11)
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        if plot.note:
            ax.text(0.5, 0.5, plot.note, transform=ax.transAxes, ha="center", va="center", color="gray")
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={SERIES_KEY: json.dumps(plot.counts())})
    finally:
        plt.close(fig)


def _lines(ax, plot: Plot) -> None:
    twin = None
    for name, points in plot.series.items():
        if not points:
            continue
        style = dict(plot.styles.get(name, {}))
        target = ax
        if style.pop("secondary", False):
            twin = twin or ax.twinx()
            target = twin
        xs, ys = zip(*points)
        target.plot(xs, ys, label=name, marker=style.pop("marker", "." if len(points) < 30 else None), **style)
    for x, label in plot.vlines:
        ax.axvline(x, color="gray", linestyle=":", linewidth=1)
        ax.text(x, 1.0, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="gray")
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        twin.set_ylabel("data wait (share of step time)")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="best")


def _bars(ax, plot: Plot) -> None:
    categories = list(dict.fromkeys(c for points in plot.series.values() for c, _ in points))
    shown = [n for n, points in plot.series.items() if points]
    width = 0.8 / max(len(shown), 1)
    for k, name in enumerate(shown):
        values = dict(plot.series[name])
        xs = [i + k * width for i, c in enumerate(categories) if c in values]
        ax.bar(xs, [values[c] for c in categories if c in values], width, label=name)
    if categories:
        ax.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(categories))])
        ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=7)
        ax.legend(fontsize=7)


def _table(lines: list[Line]) -> str:
    rows = []
    for line in lines:
        for run in line.runs:
            s = run.stamp
            versions = ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items())
            state = _progress(line, run)
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                line.label, run.path, s.get("recipe", run.recipe.get("name", "")), s.get("stage", ""), state,
                versions, s.get("git_revision") or "unknown", s.get("init", ""))) + "</tr>")
            if run.unreadable:
                rows.append(f"<tr><td colspan=8>{run.path}: {run.unreadable} unreadable line(s) of metrics.jsonl "
                            "left out (a run still writing tears its last line)</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("line", "run", "recipe", "stage", "progress", "versions",
                                             "git revision", "started from"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _progress(line: Line, run) -> str:
    stage = run.stamp.get("stage")
    segs = [s for s in line.segments if s.stage == stage]
    total = sum(s.steps for s in segs)
    done = sum(min(s.steps, max((r["step"] for r in run.records if r["phase"] == s.name), default=0)) for s in segs)
    return f"{done} / {total} steps" + (" (in progress or stopped)" if done < total else "")


def _recipes(lines: list[Line]) -> str:
    out = []
    for line in lines:
        for run in line.runs:
            text = (run.path / "recipe.yaml").read_text() if (run.path / "recipe.yaml").is_file() else "(none)"
            out.append(f"<details><summary>recipe of {html.escape(str(run.path))}</summary>"
                       f"<pre>{html.escape(text)}</pre></details>")
    return "".join(out)


def write_report(runs: list[Path], out: Path) -> Path:
    """report.html and one PNG per plot in `out`; returns the HTML's path."""
    lines = read_lines([Path(r) for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    plots, sections = all_plots(lines), []
    for plot in plots:
        png = out / f"{plot.name}.png"
        draw(plot, png)
        data = base64.b64encode(png.read_bytes()).decode()
        sections.append(f'<h2 id="{plot.name}">{html.escape(plot.title)}</h2>'
                        f'<img alt="{plot.name}" src="data:image/png;base64,{data}">')
    meta = {"runs": [[str(r.path) for r in line.runs] for line in lines],
            "plots": {p.name: {"png": f"{p.name}.png", "series": p.counts()} for p in plots}}
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>smolvlm report</title><style>"
            "body{font-family:sans-serif;max-width:1000px;margin:auto}img{max-width:100%}"
            "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px}</style></head>"
            "<body><h1>smolvlm report</h1>" + _table(lines) + "".join(sections) + "<h2>recipes</h2>"
            + _recipes(lines) + f'<script type="application/json" id="{SERIES_KEY}">'
            + json.dumps(meta).replace("</", "<\\/") + "</script></body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
