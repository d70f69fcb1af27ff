# The `smolvlm` Typer app. Each command parses its options and calls one function of a module; the train commands
# live in cli_train.py, the `data` commands in cli_data.py.
# No torch / transformers / deepspeed import at module level: `--help` must stay fast.
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .cli_common import DEBUG, RecipeOpt, SetOpt, SmolGroup, user_errors
from .cli_data import data_app
from .cli_train import DeepspeedOpt, add_train_commands
from .deploy import FORMATS

app = typer.Typer(
    cls=SmolGroup,
    name="smolvlm",
    help="Build, train, evaluate and export SmolVLM2 vision-language models from recipe files.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smolvlm-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    DEBUG["debug"] = debug
    if not debug:
        import logging
        import os
        import warnings

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # for relaunched ranks too
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # our own Rich output says what happens
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore", category=FutureWarning)
        # bitsandbytes (imported by peft) warns at import on CPUs its optional kernel package does not cover
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@app.command()
@user_errors
def init(
    recipe: Path = RecipeOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the assembled model to."),
    vision: Optional[str] = typer.Option(None, "--vision", help="Vision part: hub id, folder or random:NAME."),
    text: Optional[str] = typer.Option(None, "--text", help="Text part: hub id, folder, .gguf file or random:NAME."),
    set_: Optional[list[str]] = SetOpt,
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
) -> None:
    """Assemble a SmolVLM from a SigLIP vision tower, a SmolLM2 language model and a new connector."""
    from .assemble import init_model
    from .recipe import load_recipe
    from .report import print_init_summary

    loaded = load_recipe(recipe, set_ or [])
    result = init_model(loaded, out, force=force, vision_ref=vision, text_ref=text)
    print_init_summary(result)


@app.command()
@user_errors
def download(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe YAML whose model parts and datasets "
                                          "to fetch, e.g. recipes/smolvlm2-256m.yaml.", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Instead of a recipe: a released checkpoint to "
                                        "fine-tune with --init ID, e.g. HuggingFaceTB/SmolVLM2-256M-Video-Instruct."),
    revision: Optional[str] = typer.Option(None, "--revision", help="With --model: branch, tag or commit sha."),
    what: Optional[str] = typer.Option(None, "--what", help="models | data | all (default: all)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Only the data sources of this stage: vision | video."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples",
                                              help="Save only the first N rows of each hub dataset (streamed)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Self-contained folder (models/, data/, manifest.json) to copy anywhere; "
                                            "default: the Hugging Face caches."),
    set_: Optional[list[str]] = SetOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be fetched and how large; fetch nothing."),
) -> None:
    """Fetch a recipe's model parts and datasets, or a released checkpoint (--model), from the Hugging Face Hub and
    write a manifest."""
    from .download_checkpoint import cli_download_any

    cli_download_any(recipe, model, revision, what=what, stage=stage, max_samples=max_samples, out=out,
                     overrides=set_ or [], dry_run=dry_run)


@app.command()
@user_errors
def generate(
    prompt: str = typer.Argument(..., help="The question or instruction."),
    model: Path = typer.Option(..., "--model", "-m", help="SmolVLM model folder (from init, train or export)."),
    image: Optional[list[Path]] = typer.Option(None, "--image", "-i", help="Image file (repeatable)."),
    video: Optional[Path] = typer.Option(None, "--video", help="Video file; frames are sampled as in training."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest answer, in tokens."),
) -> None:
    """Answer a prompt about images or a video with a SmolVLM, streaming the answer (greedy)."""
    from .generate import cli_generate

    cli_generate(model, prompt, image or [], video, max_new_tokens)


add_train_commands(app)


@app.command()
@user_errors
def plan(recipe: Path = RecipeOpt, stage: str = typer.Option("vision", "--stage", help="vision | video"),
         gpus: int = typer.Option(8, "--gpus", min=1, help="Data-parallel GPUs in all."),
         gpu_memory: float = typer.Option(80, "--gpu-memory", min=0.1, help="Memory of one GPU, in GiB."),
         set_: Optional[list[str]] = SetOpt, deepspeed: Optional[str] = DeepspeedOpt,
         supervised: float = typer.Option(0.25, "--supervised", min=0.0, max=1.0,
                                          help="Share of token positions with a label (the loss projects only "
                                               "those to the vocabulary).")) -> None:
    """Per phase: parameters (trainable / frozen), memory per GPU under ZeRO, tokens per step, and whether it fits.
    Counts come from the recipe's shapes on the meta device: no weights, no network, no GPU."""
    from .planner import cli_plan

    cli_plan(recipe, stage, gpus, gpu_memory, set_ or [], deepspeed, supervised)


@app.command("eval")
@user_errors
def eval_(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="SmolVLM model folder."),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t",
                                        help="Comma list of tasks or groups: all, image, video, synthetic."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N questions per task (per subset)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Questions generated together (left padding)."),
    out: Path = typer.Option(Path("eval_results.json"), "--out", "-o",
                             help="Results JSON; predictions go to <stem>.predictions.jsonl beside it."),
    dataset_path: Optional[list[str]] = typer.Option(
        None, "--dataset-path", help="TASK=FOLDER of parquet files with the hub dataset's columns; "
                                     "synthetic=DIR for the synthetic tasks. Repeatable."),
    media_root: Optional[list[str]] = typer.Option(None, "--media-root",
                                                   help="TASK=FOLDER holding a video benchmark's videos."),
    prompt_style: str = typer.Option("lmms", "--prompt-style",
                                     help="lmms (lmms-eval's prompts) or vlmevalkit (the paper's numbers')."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Cap every task's answer length."),
    list_tasks: bool = typer.Option(False, "--list", help="List the tasks with their datasets and exit."),
    compare: Optional[tuple[Path, Path]] = typer.Option(
        None, "--compare", help="A.json B.json: print each task's score in both results files (ours or "
                                        "lmms-eval's) and B - A, then exit."),
) -> None:
    """Score a SmolVLM on the SmolVLM paper's benchmarks and the synthetic tasks with the official scoring."""
    if compare and compare[0] is not None:
        from .eval.report import print_compare

        print_compare(*compare)
        return
    from .eval.runner import cli_eval

    if model is not None and (Path(model) / "run.json").is_file():
        from .train.run import resolve_init

        model = resolve_init(model)  # a run folder: its last finished phase
    if dataset_path is None and tasks and "synthetic" in tasks:
        from .data.resolve import synthetic_root

        dataset_path = [f"synthetic={synthetic_root()}"]
    cli_eval(model, tasks, limit, batch_size, out, dataset_path, media_root, prompt_style, list_tasks,
             max_new_tokens)


@app.command()
@user_errors
def export(
    source: Path = typer.Argument(..., help="A run folder, a checkpoint folder or a model folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write to (with several --format: one sub-folder "
                                                       "per format)."),
    formats: Optional[list[str]] = typer.Option(None, "--format", "-f", help=f"{' | '.join(FORMATS)}, repeatable "
                                                "(default hf); adapters are always merged for the non-HF formats."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="best | last | STEP (for a run folder)."),
    merge_adapters: bool = typer.Option(True, "--merge-adapters/--keep-adapters",
                                        help="Merge DoRA/LoRA/QLoRA into the weights (QLoRA: de-quantised), or "
                                             "write them as a peft adapter."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16 | float16 | float32"),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
) -> None:
    """Write a folder that plain transformers loads (weights, config, processor, generation config, model card), or
    the formats people deploy in, each with a model card saying how to run it."""
    from rich.console import Console

    from .deploy import export_formats

    console = Console()
    paths = export_formats(source, out, formats or ["hf"], checkpoint=checkpoint, merge=merge_adapters, dtype=dtype,
                           force=force, say=console.print)
    for fmt, path in paths.items():
        loads = " (AutoModelForImageTextToText / AutoProcessor load it)" if fmt == "hf" else ""
        console.print(f"exported {fmt} to [bold]{path}[/]{loads}")


@app.command()
@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders (a video run brings the vision run it continues); a "
                                                "folder of runs stands for its runs. Several overlay."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html and the PNG plots."),
) -> None:
    """Plot runs (also one still training): loss, learning rates, throughput, memory, skips, mixture, evals."""
    from rich.console import Console

    from .runreport.render import write_report

    Console().print(f"report: [bold]{write_report(runs, out)}[/] (opens offline; PNGs beside it)")


app.add_typer(data_app, name="data")


def without_launcher_rank(argv: list[str]) -> list[str]:
    """`argv` less the `--local_rank=N` (or `--local_rank N`) that the DeepSpeed launcher puts right after the program,
    before the command name. Training reads LOCAL_RANK from the environment, which the launcher also sets. Dropped
    here rather than declared on the app: Typer coerces every root option with pydantic before a subcommand runs,
    and importing pydantic would cost every `smolvlm COMMAND --help` 45 ms."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--local_rank" and i + 1 < len(argv):
            skip = True
        elif not arg.startswith("--local_rank="):
            out.append(arg)
    return out


def main(argv: Optional[list[str]] = None) -> None:
    try:
        app(args=without_launcher_rank(sys.argv[1:] if argv is None else argv), prog_name="smolvlm")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
