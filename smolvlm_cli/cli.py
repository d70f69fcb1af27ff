# The `smolvlm` Typer app. Each command parses its options and calls one function of a module.
# No torch / transformers / deepspeed import at module level: `--help` must stay fast.
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import UserError

if TYPE_CHECKING:
    from .train.launch import Launch



class _Group(TyperGroup):
    """Typer's group with a help flag that is False, not None, when absent: Typer 0.29 skips the pydantic coercion of
    a flag only when its value is a bool, so a None help flag of each group on the way to a command imported pydantic
    (45 ms) for every `smolvlm COMMAND --help`."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


app = typer.Typer(
    cls=_Group,
    name="smolvlm",
    help="Build, train, evaluate and export SmolVLM2 vision-language models from recipe files.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smolvlm-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _state["debug"] = debug
    if not debug:
        import os
        import warnings

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # for relaunched ranks too
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # our own Rich output says what happens
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore", category=FutureWarning)


def user_errors(fn):
    """Print a UserError as one red line (hint included) and exit 2; --debug re-raises it. In the ranks of a
    launch, errors.hand_off decides who prints, so that a launch reports one error once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if _state["debug"]:
                raise
            from .errors import hand_off

            show, code = hand_off(e)
            if show:
                from rich.console import Console

                colour = "yellow" if e.label == "stopped" else "red"
                Console(stderr=True, soft_wrap=True).print(f"[bold {colour}]{e.label}:[/] {e.one_line()}",
                                                           markup=True, highlight=False)
            raise typer.Exit(code) from None

    return wrapper


RecipeOpt = typer.Option(..., "--recipe", "-r", help="Recipe YAML, e.g. recipes/tiny.yaml.", show_default=False)
SetOpt = typer.Option(None, "--set", help="Override a recipe field: key.path=value (repeatable).")


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


def _train(stage: str, recipe: Path, init: Path, out: Path, set_: Optional[list[str]], max_steps: Optional[int],
           launch: Launch, deepspeed: Optional[str], dry_run: bool, data: Optional[list[Path]] = None) -> None:
    if dry_run:
        from .data.inspect import inspect_stage
        from .train.run import with_data

        inspect_stage(recipe, stage, init, with_data(recipe, stage, set_ or [], data), max_steps)
        return
    from .train.run import train_stage

    code = train_stage(recipe, stage, init, out, set_ or [], max_steps, launch, deepspeed, data or None)
    if code:
        raise typer.Exit(code)


InitOpt = typer.Option(..., "--init", help="Model folder from `smolvlm init`, a finished run folder, or the hub id "
                                           "of a checkpoint fetched by `smolvlm download --model ID`.")
OutOpt = typer.Option(..., "--out", "-o", help="Run folder (checkpoints, phase models, metrics.jsonl).")
MaxStepsOpt = typer.Option(None, "--max-steps", help="Cap every phase at this many optimizer steps.")
NprocOpt = typer.Option(1, "--nproc", help="Processes on this machine, or on each node with --nnodes (relaunches "
                                           "itself under torchrun).")
NnodesOpt = typer.Option(1, "--nnodes", help="Multi-node torchrun: run the same command on every node, each with "
                                             "its --node-rank and node 0's --master-addr.")
NodeRankOpt = typer.Option(None, "--node-rank", help="This node's number, 0..nodes-1 (--nnodes, or --hostfile with "
                                                     "--no-ssh).")
MasterAddrOpt = typer.Option(None, "--master-addr", help="Address of node 0, which every node can reach.")
MasterPortOpt = typer.Option(None, "--master-port", help="Free port on node 0, the same on every node "
                                                         "(default 29500).")
HostfileOpt = typer.Option(None, "--hostfile", help="DeepSpeed hostfile ('HOST slots=N' lines): the DeepSpeed "
                                                    "launcher starts every node over ssh (pdsh).")
NoSshOpt = typer.Option(False, "--no-ssh", help="With --hostfile: start only this node's processes; run on every "
                                                "node with --node-rank and --master-addr.")
DeepspeedOpt = typer.Option(None, "--deepspeed", help="zero2 | zero3 | zero3_offload | path to your JSON "
                                                      "config.")
DryRunOpt = typer.Option(False, "--dry-run", help="Report the data mixture, lengths and efficiency; no training.")
DataOpt = typer.Option(None, "--data", help="Train on this JSONL or CSV file, or image folder with metadata.jsonl / "
                                             ".csv, instead of the recipe's data (every phase of the stage); repeat "
                                             "to mix several by row count.")


def _train_command(stage: str, doc: str):
    @user_errors
    def command(recipe: Path = RecipeOpt, init: Path = InitOpt, out: Path = OutOpt,
                set_: Optional[list[str]] = SetOpt, max_steps: Optional[int] = MaxStepsOpt, nproc: int = NprocOpt,
                nnodes: int = NnodesOpt, node_rank: Optional[int] = NodeRankOpt,
                master_addr: Optional[str] = MasterAddrOpt, master_port: Optional[int] = MasterPortOpt,
                hostfile: Optional[Path] = HostfileOpt, no_ssh: bool = NoSshOpt,
                deepspeed: Optional[str] = DeepspeedOpt, dry_run: bool = DryRunOpt,
                data: Optional[list[Path]] = DataOpt) -> None:
        from .train.launch import Launch

        launch = Launch(nproc, nnodes, node_rank, master_addr, master_port, hostfile, no_ssh)
        _train(stage, recipe, init, out, set_, max_steps, launch, deepspeed, dry_run, data)

    command.__doc__ = doc
    app.command(f"train-{stage}")(command)


_train_command("vision", "Run the recipe's vision stage (its phases in order) with DeepSpeed; resumes from OUT's "
                         "checkpoints.")
_train_command("video", "Run the recipe's video stage from a vision-stage run (or a model folder); resumes from "
                        "OUT's checkpoints.")


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
) -> None:
    """Score a SmolVLM on the SmolVLM paper's benchmarks and the synthetic tasks with the official scoring."""
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
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the Hugging Face model to."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="best | last | STEP (for a run folder)."),
    merge_adapters: bool = typer.Option(True, "--merge-adapters/--keep-adapters",
                                        help="Merge DoRA/LoRA into the weights, or write them as a peft adapter."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="bfloat16 | float16 | float32"),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
) -> None:
    """Write a folder that plain transformers loads: weights, config, processor, generation config, model card."""
    from rich.console import Console

    from .export import export as run_export

    path = run_export(source, out, checkpoint=checkpoint, merge=merge_adapters, dtype=dtype, force=force)
    Console().print(f"exported to [bold]{path}[/] (AutoModelForImageTextToText / AutoProcessor load it)")


data_app = typer.Typer(cls=_Group, help="Built-in synthetic data, data inspection and the video frame cache.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


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
