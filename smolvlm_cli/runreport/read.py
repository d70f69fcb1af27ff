# Reading run folders for the report: metrics.jsonl tolerant of a torn last line (a run still writing), the run's
# recipe and stamp, and the chain of runs a video stage continues (vision run -> video run) on one step axis.
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


@dataclass
class Segment:
    """One phase of a run on the line's global step axis: its steps run offset+1 .. offset+steps."""

    stage: str
    index: int
    name: str
    steps: int
    offset: int
    weights: dict[str, float]


@dataclass
class RunFolder:
    path: Path
    stamp: dict  # run.json
    recipe: dict  # recipe.yaml, as plain data
    records: list[dict]  # training records, one per (stage, phase, step), the latest kept
    evals: list[dict]
    best: list[dict]  # RUN/best/best.json
    unreadable: int = 0  # lines of metrics.jsonl that did not parse (a torn last line of a run still writing)


@dataclass
class Line:
    """What one report line draws: a run and the runs it continues, in training order."""

    label: str
    runs: list[RunFolder]
    segments: list[Segment] = field(default_factory=list)

    def segment(self, stage: str, phase: str) -> Segment | None:
        return next((s for s in self.segments if s.stage == stage and s.name == phase), None)

    def x(self, record: dict) -> int | None:
        seg = self.segment(record.get("stage"), record.get("phase"))
        return None if seg is None else seg.offset + int(record["step"])


def read_metrics(path: Path) -> tuple[list[dict], list[dict], int]:
    """(training records, eval records, unreadable lines) of a metrics.jsonl; a missing file is an empty run. A
    step logged twice (a resumed run repeats the steps after its checkpoint) keeps its latest record."""
    train: dict[tuple, dict] = {}
    evals: dict[tuple, dict] = {}
    bad = 0
    if not path.is_file():
        return [], [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (record["stage"], record["phase"], int(record["step"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                bad += 1
                continue
            (evals if "eval" in record else train)[key] = record
    return list(train.values()), list(evals.values()), bad


def _yaml(path: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({e})", "the report reads the recipe.yaml training wrote") from None


def read_run(path: Path) -> RunFolder:
    stamp_file = path / "run.json"
    try:
        stamp = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    except json.JSONDecodeError:
        stamp = {}  # rank 0 writes it once, whole; a broken one loses the table row, not the plots
    records, evals, bad = read_metrics(path / "metrics.jsonl")
    best_file = path / "best" / "best.json"
    try:
        best = json.loads(best_file.read_text()) if best_file.is_file() else []
    except json.JSONDecodeError:
        best = []
    return RunFolder(path, stamp, _yaml(path / "recipe.yaml"), records, evals, best, bad)


def is_run(path: Path) -> bool:
    return (path / "run.json").is_file() or (path / "metrics.jsonl").is_file()


def _parent_run(run: RunFolder) -> Path | None:
    """The run a stage started from: --init RUN resolves to RUN/phases/NN-name, so its grandparent."""
    init = run.stamp.get("init")
    if not init:
        return None
    candidate = Path(init).parent.parent
    return candidate if Path(init).parent.name == "phases" and is_run(candidate) else None


def chain(path: Path) -> list[RunFolder]:
    runs = [read_run(path)]
    seen = {path.resolve()}
    while (parent := _parent_run(runs[0])) is not None and parent.resolve() not in seen:
        seen.add(parent.resolve())
        runs.insert(0, read_run(parent))
    return runs


def _segments(runs: list[RunFolder]) -> list[Segment]:
    out, offset = [], 0
    for run in runs:
        stage = run.stamp.get("stage") or next((r["stage"] for r in run.records), None)
        phases = ((run.recipe.get("stages") or {}).get(stage) or {}).get("phases") or []
        for i, phase in enumerate(phases):
            last = max((r["step"] for r in run.records if r["phase"] == phase.get("name")), default=0)
            steps = int(phase.get("steps") or last)
            weights = {e["source"]: float(e["weight"]) for e in phase.get("data") or []}
            out.append(Segment(stage, i, phase.get("name", str(i)), steps, offset, weights))
            offset += steps
    return out


def expand(paths: list[Path]) -> list[Path]:
    """Run folders named on the command line; a folder holding runs (the quickstart's) stands for its runs."""
    out = []
    for p in paths:
        p = Path(p)
        if is_run(p):
            out.append(p)
            continue
        inner = sorted(q for q in p.iterdir() if q.is_dir() and is_run(q)) if p.is_dir() else []
        if not inner:
            raise UserError(f"'{p}' is not a training run (no run.json or metrics.jsonl)",
                            "pass the --out folder of smolvlm train-vision / train-video")
        out.extend(inner)
    return out


def read_lines(paths: list[Path]) -> list[Line]:
    """One line per run named, each with the runs it continues; a run another named run continues is drawn as
    part of that one's line, not twice."""
    chains = [chain(p) for p in expand(paths)]
    keys = [[r.path.resolve() for r in c] for c in chains]
    kept = [c for c, k in zip(chains, keys)
            if not any(len(o) > len(k) and o[:len(k)] == k for o in keys)]
    unique = {tuple(r.path.resolve() for r in c): c for c in kept}
    names = [c[-1].path.name for c in unique.values()]
    lines = []
    for c in unique.values():
        label = c[-1].path.name if names.count(c[-1].path.name) == 1 else str(c[-1].path)
        if len(c) > 1:
            label = " + ".join(r.path.name for r in c) if names.count(c[-1].path.name) == 1 else label
        lines.append(Line(label, c, _segments(c)))
    return lines
