# `smolvlm data ...`: the built-in synthetic data, data inspection and checks, and the video frame cache.
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import InitOpt, RecipeOpt, SetOpt, SmolGroup, user_errors

data_app = typer.Typer(cls=SmolGroup, help="Built-in synthetic data, data inspection and the video frame cache.",
                       no_args_is_help=True)


@data_app.command("synth")
@user_errors
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the synthetic dataset to."),
    train: int = typer.Option(400, "--train", help="Training examples per task."),
    test: int = typer.Option(100, "--test", help="Held-out examples per task."),
    seed: int = typer.Option(0, "--seed"),
    image_size: int = typer.Option(64, "--image-size"),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
) -> None:
    """Write the built-in synthetic dataset (PNG images, mp4 videos, JSONL; Cauldron and LLaVA mirrors)."""
    from rich.console import Console

    from .data.synthetic import write_synthetic
    from .fsutil import atomic_output_dir

    with atomic_output_dir(out, force) as tmp:
        counts = write_synthetic(tmp, train, test, seed=seed, image_size=image_size)
    Console().print(f"wrote {sum(counts['train'].values())} train and {sum(counts['test'].values())} test examples "
                    f"({len(counts['train'])} tasks) to [bold]{out}[/]")


@data_app.command("inspect")
@user_errors
def data_inspect(recipe: Path = RecipeOpt, stage: str = typer.Option("vision", "--stage", help="vision | video"),
                 init: Path = InitOpt, set_: Optional[list[str]] = SetOpt,
                 samples: int = typer.Option(512, "--samples", help="Samples to draw per phase.")) -> None:
    """Report a stage's data per phase: sources, modalities, token lengths, skipped samples, batch efficiency."""
    from .data.inspect import inspect_stage

    inspect_stage(recipe, stage, init, set_ or [], None, n_samples=samples)


@data_app.command("check")
@user_errors
def data_check(
    path: Path = typer.Argument(..., help="A JSONL or CSV file, or an image folder with metadata.jsonl / .csv."),
    init: Path = InitOpt,
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe whose images: section and "
                                          "max_seq_len to check under (default: the model's processor, 2048).",
                                          show_default=False),
    stage: str = typer.Option("vision", "--stage", help="vision | video: whose phases' max_seq_len to use."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Check against this instead of the "
                                              "recipe's smallest phase max_seq_len."),
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Check a data file before training: rows, missing or corrupt media, image tokens per sample under the image
    settings, samples over max_seq_len, each by row. Exits 1 when training would skip a row."""
    from .data.check import cli_check

    code = cli_check(path, init, recipe, stage, set_ or [], max_seq_len)
    if code:
        raise typer.Exit(code)


@data_app.command("cache")
@user_errors
def data_cache(recipe: Path = RecipeOpt, stage: str = typer.Option("video", "--stage", help="vision | video"),
               nproc: int = typer.Option(1, "--nproc", help="Worker processes decoding in parallel."),
               init: Optional[Path] = typer.Option(None, "--init", help="Model or run folder whose processor "
                                                   "settings to use (default: those init builds from the recipe)."),
               set_: Optional[list[str]] = SetOpt) -> None:
    """Decode every video of a stage's sources once, with each phase's sampling, into the frame cache
    ($SMOLVLM_CACHE/frames) that training and generate read. Resumable; corrupt videos are listed."""
    from .data.frame_cache import cli_cache

    cli_cache(recipe, stage, set_ or [], nproc, init)
