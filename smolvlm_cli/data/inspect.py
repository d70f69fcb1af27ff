# `--dry-run` / `smolvlm data inspect`: what a stage's data looks like without training: samples per source,
# modality shares, token lengths, skipped samples with reasons, and real-token share with and without grouping/packing.
from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table


def phase_report(recipe, phase, index: int, processor, n: int) -> dict:
    from ..train.stream import phase_stream
    from .batching import group_by_length, pack, real_token_fraction

    stream = phase_stream(recipe, phase, index, processor, max_skip_fraction=1.0)
    samples, skipped, per_source, modality = [], Counter(), Counter(), Counter()
    for k, (item, _) in enumerate(stream.encoded()):
        if k >= n:
            break
        if isinstance(item, str):
            skipped[item] += 1
            continue
        samples.append(item)
        per_source[item.source] += 1
        modality[item.modality] += 1
    bs = phase.micro_batch_size
    lengths = sorted(len(s) for s in samples)
    plain = [[[s] for s in samples[i: i + bs]] for i in range(0, len(samples), bs)]
    grouped = [[[s] for s in b] for b in group_by_length(samples, bs, window=recipe.train.group_window)]
    packed = [list(pack(samples[i: i + bs], phase.max_seq_len)) for i in range(0, len(samples), bs)]
    return {
        "phase": phase.name, "drawn": len(samples) + sum(skipped.values()), "per_source": per_source,
        "modality": modality, "skipped": skipped, "fitted": sum(1 for s in samples if s.fitted),
        "lengths": lengths, "efficiency": {"padded": real_token_fraction(plain),
                                           "grouped": real_token_fraction(grouped),
                                           "packed": real_token_fraction(packed)},
    }


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def print_report(report: dict, console: Console) -> None:
    total = sum(report["per_source"].values())
    t = Table(title=f"phase {report['phase']}: {report['drawn']} samples drawn", title_justify="left")
    t.add_column("source")
    t.add_column("samples", justify="right")
    t.add_column("share", justify="right")
    for name, count in report["per_source"].most_common():
        t.add_row(name, str(count), _pct(count, total))
    console.print(t)
    mods = ", ".join(f"{m} {_pct(c, total)}" for m, c in report["modality"].most_common())
    lengths = report["lengths"]
    if lengths:
        q = lambda f: lengths[min(len(lengths) - 1, int(f * len(lengths)))]  # noqa: E731
        console.print(f"modalities: {mods}")
        console.print(f"tokens per sample: min {lengths[0]}, median {q(0.5)}, p95 {q(0.95)}, max {lengths[-1]}, "
                      f"mean {sum(lengths) / len(lengths):.0f}; fitted to the budget: {report['fitted']}")
    eff = report["efficiency"]
    console.print(f"real tokens per batch: padded {eff['padded']:.1%}, length-grouped {eff['grouped']:.1%}, "
                  f"packed {eff['packed']:.1%}")
    skipped = report["skipped"]
    if skipped:
        console.print("[yellow]skipped[/]: " + ", ".join(f"{r} {c}" for r, c in skipped.most_common()))
    else:
        console.print("skipped: none")


def inspect_stage(recipe_path: Path, stage: str, init: Path, overrides: list[str], max_steps: int | None,
                  n_samples: int = 512, console: Console | None = None) -> list[dict]:
    from ..train.run import prepare, resolve_init
    from .images import load_processor

    console = console or Console()
    recipe = prepare(recipe_path, stage, overrides, max_steps)
    processor = load_processor(resolve_init(init), recipe.images)
    reports = []
    for i, phase in enumerate(recipe.stages[stage].phases):
        n = min(n_samples, phase.steps * phase.global_batch_size)
        report = phase_report(recipe, phase, i, processor, n)
        print_report(report, console)
        reports.append(report)
    return reports
