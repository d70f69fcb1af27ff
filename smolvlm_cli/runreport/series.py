# The report's plots as data: for each plot, named series of (x, y) points over the lines' global step axis (or
# categories for the bar plots). Pure functions over read.Line: the numbers the PNGs and the HTML show.
from __future__ import annotations

from dataclasses import dataclass, field

from .read import Line

SMOOTHING = 0.9  # exponential moving average weight of the smoothed loss (TensorBoard's default slider is 0.6-0.9)


@dataclass
class Plot:
    name: str
    title: str
    xlabel: str
    ylabel: str
    kind: str = "line"  # line | bar
    series: dict[str, list[tuple]] = field(default_factory=dict)
    styles: dict[str, dict] = field(default_factory=dict)  # per series: matplotlib keywords (marker, linestyle)
    vlines: list[tuple[float, str]] = field(default_factory=list)  # phase boundaries
    note: str = ""

    def counts(self) -> dict[str, int]:
        return {name: len(points) for name, points in self.series.items()}


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average (as TensorBoard's smoothing): the first point is the first value."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def _ordered(line: Line) -> list[tuple[int, dict]]:
    return sorted(((line.x(r), r) for run in line.runs for r in run.records if line.x(r) is not None),
                  key=lambda p: p[0])


def loss_plot(lines: list[Line]) -> Plot:
    plot = Plot("loss", "training loss (per supervised token)", "step", "loss")
    for line in lines:
        points = [(x, r["loss"]) for x, r in _ordered(line) if r.get("loss") is not None]
        plot.series[f"{line.label} loss"] = points
        plot.styles[f"{line.label} loss"] = {"alpha": 0.35}
        plot.series[f"{line.label} loss (smoothed)"] = list(zip([x for x, _ in points],
                                                                smoothed([y for _, y in points])))
        for seg in line.segments[1:]:
            plot.vlines.append((seg.offset + 0.5, f"{seg.stage}/{seg.name}"))
    return plot


def lr_plot(lines: list[Line]) -> Plot:
    """Learning rate per part; a part's no-decay group has the same rate and is left out."""
    plot = Plot("lr", "learning rate per part", "step", "learning rate")
    for line in lines:
        for x, r in _ordered(line):
            for group, lr in (r.get("lr") or {}).items():
                if not group.endswith("/no_decay"):
                    plot.series.setdefault(f"{line.label} {group}", []).append((x, lr))
    return plot


def throughput_plot(lines: list[Line]) -> Plot:
    plot = Plot("throughput", "tokens per second, and the share of step time spent waiting for data", "step",
                "tokens / s  |  data wait (share)")
    for line in lines:
        ordered = _ordered(line)
        plot.series[f"{line.label} tokens/s"] = [(x, r["tokens_per_s"]) for x, r in ordered
                                                 if r.get("tokens_per_s") is not None]
        name = f"{line.label} data_wait"
        plot.series[name] = [(x, r["data_wait"]) for x, r in ordered if r.get("data_wait") is not None]
        plot.styles[name] = {"secondary": True, "linestyle": "--"}
    return plot


def memory_plot(lines: list[Line]) -> Plot:
    plot = Plot("memory", "peak memory per rank (GPU allocated, or resident on CPU)", "step", "MiB")
    for line in lines:
        for x, r in _ordered(line):
            for rank, mb in enumerate(r.get("peak_rss_mb") or []):
                plot.series.setdefault(f"{line.label} rank{rank}", []).append((x, mb))
    return plot


def _phase_last(line: Line) -> list[tuple]:
    """(segment, its last logged record) for every phase that logged anything: the stream's counters are
    cumulative within a phase."""
    out = []
    for seg in line.segments:
        recs = [r for run in line.runs for r in run.records if r["stage"] == seg.stage and r["phase"] == seg.name]
        if recs:
            out.append((seg, max(recs, key=lambda r: r["step"])))
    return out


def skipped_plot(lines: list[Line]) -> Plot:
    plot = Plot("skipped", "samples skipped, by reason (rank 0's reads)", "reason", "samples", kind="bar")
    for line in lines:
        totals: dict[str, int] = {}
        for _, last in _phase_last(line):
            for reason, n in (last.get("skipped") or {}).items():
                totals[reason] = totals.get(reason, 0) + n
        plot.series[f"{line.label} skipped"] = sorted(totals.items())
    if not any(plot.series.values()):
        plot.note = "no sample was skipped"
    return plot


def sources_plot(lines: list[Line]) -> Plot:
    """Per phase and source: the share of the samples drawn against the share the recipe's weights ask for."""
    plot = Plot("sources", "each source's share of the samples drawn vs the recipe's weights", "phase: source",
                "share", kind="bar")
    for line in lines:
        drawn, wanted = [], []
        for seg, last in _phase_last(line):
            total_w = sum(seg.weights.values()) or 1.0
            counts = last.get("sources") or {}
            total_n = sum(counts.values())
            for source, w in seg.weights.items():
                wanted.append((f"{seg.name}: {source}", w / total_w))
                if total_n:
                    drawn.append((f"{seg.name}: {source}", counts.get(source, 0) / total_n))
        plot.series[f"{line.label} weights"] = wanted
        plot.series[f"{line.label} drawn"] = drawn
    if not any(plot.series[k] for k in plot.series if k.endswith(" drawn")):
        plot.note = "these runs logged no per-source counts (written by an older version): weights only"
    return plot


def eval_plot(lines: list[Line]) -> Plot:
    plot = Plot("eval", "eval scores over steps (stars: the kept best checkpoints)", "step", "score")
    for line in lines:
        evals = sorted(((line.x(r), r) for run in line.runs for r in run.evals if line.x(r) is not None),
                       key=lambda p: p[0])
        for x, r in evals:
            for task, score in (r.get("eval") or {}).items():
                plot.series.setdefault(f"{line.label} {task}", []).append((x, score))
            if r.get("composite") is not None:
                plot.series.setdefault(f"{line.label} composite", []).append((x, r["composite"]))
        best = []
        for run in line.runs:
            for entry in run.best:
                stage, _, rest = entry["name"].partition("-phase")
                index, _, step = rest.partition("-step")
                seg = next((s for s in line.segments if s.stage == stage and str(s.index) == index), None)
                if seg is not None and step.isdigit():
                    best.append((seg.offset + int(step), entry["composite"]))
        if best:
            plot.series[f"{line.label} best"] = sorted(best)
            plot.styles[f"{line.label} best"] = {"marker": "*", "linestyle": "none", "markersize": 14}
    if not plot.series:
        plot.note = "these runs ran no periodic eval (the recipe's eval section sets it up)"
    return plot


def all_plots(lines: list[Line]) -> list[Plot]:
    return [f(lines) for f in (loss_plot, lr_plot, throughput_plot, memory_plot, skipped_plot, sources_plot,
                               eval_plot)]
