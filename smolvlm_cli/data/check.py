# `smolvlm data check PATH`: every row of a user's data file encoded as training would, before any training: rows,
# missing or corrupt media, image tokens per sample under the processor's (and recipe's) settings, over-long samples.
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.table import Table

DEFAULT_MAX_SEQ_LEN = 2048


@dataclass
class RowCheck:
    """One row's verdict. `row` counts data rows from 1 (a JSONL line, a CSV row after the header)."""

    row: int
    status: str  # ok | fitted (shrunk to fit max_seq_len, as training does) | skipped (training skips it)
    reason: str = ""
    detail: str = ""
    tokens: int | None = None  # under the full settings, before any fitting
    image_tokens: int | None = None


def check_rows(source, encoder, max_seq_len: int) -> Iterator[RowCheck]:
    """Each row of `source` (data.sources.Source) through `encoder` (data.encode.Encoder), as training reads it.
    An over-long sample is fitted the way training fits it (fewer frames, no image splitting) or skipped, never cut."""
    from .images import image_token_count
    from .sample import SampleError

    processor = encoder.processor
    for index, row in source.rows():
        try:
            sample = source.to_sample(index, row)
            enc = encoder.encode(sample)
        except SampleError as e:
            yield RowCheck(index + 1, "skipped", e.reason, e.detail)
            continue
        n, img = len(enc), image_token_count(enc.input_ids, processor)
        if n <= max_seq_len:
            yield RowCheck(index + 1, "ok", tokens=n, image_tokens=img)
            continue
        try:
            fitted = encoder(sample)
        except SampleError:
            yield RowCheck(index + 1, "skipped", "too long", f"{n} tokens ({img} image tokens) > max_seq_len "
                           f"{max_seq_len}", tokens=n, image_tokens=img)
            continue
        yield RowCheck(index + 1, "fitted", fitted.fitted or "", f"{n} -> {len(fitted)} tokens "
                       f"({image_token_count(fitted.input_ids, processor)} image tokens)", n, img)


def _recipe(recipe_path: Path | None, overrides: list[str], stage: str, path: Path):
    """The recipe with PATH as the stage's data, as `--data PATH` gives it (or, without a recipe, an empty one that
    `--set images.KEY=VALUE` can still fill)."""
    from pydantic import ValidationError

    from ..recipe import Recipe, _validation_message, apply_override, load_recipe, parse_override
    from ..train.run import data_overrides

    if recipe_path is not None:
        return load_recipe(recipe_path, [*overrides, *data_overrides(recipe_path, stage, [path])])
    data: dict = {"name": "data-check"}
    for text in overrides:
        apply_override(data, *parse_override(text))
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise _validation_message(e, "--set") from None


def _phase(recipe, stage: str):
    """The stage's phase with the smallest max_seq_len (the one that skips most), or None."""
    from ..errors import RecipeError

    if recipe.stages and stage not in recipe.stages:
        raise RecipeError(f"recipe '{recipe.name}' has no stages.{stage}", "pass --stage vision or --stage video")
    phases = recipe.stages[stage].phases if stage in recipe.stages else []
    return min(phases, key=lambda p: p.max_seq_len) if phases else None


def check_data(path: str | Path, init: str | Path, recipe_path: Path | None = None, stage: str = "vision",
               overrides: list[str] | None = None, max_seq_len: int | None = None) -> dict:
    """Check every row of the file or folder at `path` with the processor of `init` under the recipe's image
    settings; max_seq_len from --max-seq-len, else the stage's smallest phase max_seq_len, else 2048."""
    from ..errors import UserError
    from ..train.run import resolve_init
    from .encode import EncodeConfig, Encoder
    from .images import load_processor
    from .sources import SourceSpec, load_source

    if max_seq_len is not None and max_seq_len < 1:
        raise UserError(f"--max-seq-len must be positive, got {max_seq_len}", "pass e.g. --max-seq-len 2048")
    full = Path(path).expanduser()
    if not full.exists():
        raise UserError(f"data '{path}' not found", "pass a JSONL or CSV file, or an image folder with "
                        "metadata.jsonl / metadata.csv")
    recipe = _recipe(recipe_path, list(overrides or []), stage, full)
    phase = _phase(recipe, stage)
    limit = max_seq_len or (phase.max_seq_len if phase is not None else DEFAULT_MAX_SEQ_LEN)
    source = load_source(SourceSpec(path=str(full.absolute()), name=full.name))
    processor = load_processor(resolve_init(init), recipe.images)
    config = EncodeConfig(max_seq_len=limit, video_fps=getattr(phase, "video_fps", None),
                          video_max_frames=getattr(phase, "video_max_frames", None),
                          video_backend=recipe.train.video_backend)
    rows = list(check_rows(source, Encoder(processor, config), limit))
    return {"path": str(path), "max_seq_len": limit, "settings": settings_line(processor), "rows": rows}


def settings_line(processor) -> str:
    """The image settings in effect, in words."""
    from .images import UPSCALE_KEY

    ip = processor.image_processor
    edge = ip.size["longest_edge"] if isinstance(ip.size, dict) else ip.size.longest_edge
    tile = ip.max_image_size["longest_edge"]
    upscale = getattr(ip, UPSCALE_KEY, True) is not False
    return (f"longest_edge {edge}, tiles of {tile} px ({processor.image_seq_len} tokens each), splitting "
            f"{'on' if ip.do_image_splitting else 'off'}, small images {'upscaled' if upscale else 'not upscaled'}")


def _stats(values: list[int]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"min {v[0]}, median {v[len(v) // 2]}, max {v[-1]}, mean {sum(v) / len(v):.0f}"


def print_check(report: dict, console: Console) -> None:
    rows: list[RowCheck] = report["rows"]
    status = Counter(r.status for r in rows)
    console.print(f"[bold]{report['path']}[/]: {len(rows)} rows; usable {status['ok']}, fitted {status['fitted']}, "
                  f"skipped {status['skipped']} (max_seq_len {report['max_seq_len']})")
    console.print(f"images: {report['settings']}")
    counted = [r for r in rows if r.tokens is not None]
    console.print(f"tokens per sample: {_stats([r.tokens for r in counted])}")
    console.print(f"image tokens per sample: {_stats([r.image_tokens for r in counted])}")
    problems = [r for r in rows if r.status != "ok"]
    if not problems:
        console.print("[green]every row is usable as it is[/]")
        return
    t = Table(title="rows training would skip or shrink", title_justify="left")
    for name, justify in (("row", "right"), ("status", "left"), ("reason", "left"), ("detail", "left")):
        t.add_column(name, justify=justify, overflow="fold")
    for r in problems:
        t.add_row(str(r.row), r.status, r.reason, r.detail)
    console.print(t)
    reasons = Counter(r.reason for r in problems if r.status == "skipped")
    if reasons:
        console.print("[yellow]skipped[/]: " + ", ".join(f"{k} {n}" for k, n in reasons.most_common()))


def cli_check(path: Path, init: Path, recipe: Path | None, stage: str, overrides: list[str],
              max_seq_len: int | None, console: Console | None = None) -> int:
    """`smolvlm data check`: print the report; 1 when a row would be skipped, else 0."""
    report = check_data(path, init, recipe, stage, overrides, max_seq_len)
    print_check(report, console or Console())
    return 1 if any(r.status == "skipped" for r in report["rows"]) else 0
