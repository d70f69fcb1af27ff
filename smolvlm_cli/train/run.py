# `train-vision` / `train-video`: run a recipe stage's phases in order inside RUN, each phase starting from the
# previous phase's merged model, resuming automatically from RUN's latest checkpoint.
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..errors import OutputError, RecipeError, UserError
from ..recipe import Recipe, dump_recipe, load_recipe
from . import checkpoint as ckpt
from .launch import Dist, Launch, check, init_distributed, relaunch


def resolve_init(init: str | Path) -> Path:
    """A model folder, a run folder (its last finished phase), or the hub id of a checkpoint in the local Hugging Face
    cache (`smolvlm download --model ID` puts it there; training never downloads)."""
    ref = str(init)
    init = Path(init).expanduser()
    from_hub = not init.exists() and _hub_id(ref)
    if from_hub:
        init = _cached_init(ref)
    phases = sorted(p for p in (init / "phases").glob("*") if (p / "config.json").is_file()) if init.is_dir() else []
    if phases:
        return phases[-1]
    config = init / "config.json"
    if not config.is_file():
        raise UserError(f"'{init}' is neither a model folder nor a run with finished phases",
                        "pass the folder written by `smolvlm init`, a finished train-vision run or the hub id of a "
                        "checkpoint fetched by `smolvlm download --model ID`")
    model_type = json.loads(config.read_text()).get("model_type")
    name = ref if from_hub else str(init)
    if model_type == "idefics3":  # SmolVLM v1: trained from a SmolVLM copy (same weights), made once
        from ..idefics3 import converted_idefics3

        return converted_idefics3(init)
    if model_type != "smolvlm":
        raise UserError(f"'{name}' is not a SmolVLM model folder (model_type {model_type})",
                        "pass the folder written by `smolvlm init`, a SmolVLM2 or an Idefics3 (SmolVLM v1) "
                        "checkpoint")
    return init


def _hub_id(ref: str) -> bool:
    from ..download_checkpoint import looks_like_hub_id

    return looks_like_hub_id(ref)


def _cached_init(repo_id: str) -> Path:
    from ..download_checkpoint import cached_checkpoint

    folder = cached_checkpoint(repo_id)
    if folder is None:
        raise UserError(f"--init '{repo_id}' is not a local folder, and no checkpoint '{repo_id}' is in the local "
                        "Hugging Face cache", f"fetch it with smolvlm download --model {repo_id}, or pass a model "
                        "or run folder")
    return folder


# recipe model section field -> where the checkpoint's config states it
MODEL_FIELDS = (("vision.image_size", "vision_config.image_size"), ("vision.patch_size", "vision_config.patch_size"),
                ("vision.hidden_size", "vision_config.hidden_size"), ("text.hidden_size", "text_config.hidden_size"),
                ("scale_factor", "scale_factor"),
                ("max_position_embeddings", "text_config.max_position_embeddings"),
                ("rope_theta", "text_config.rope_theta"))


def check_model_section(recipe: Recipe, init_dir: Path, name: str | None = None) -> None:
    """Stop before anything is built if what the recipe's model section states disagrees with the checkpoint
    training starts from (fields the recipe leaves unset are not compared)."""
    from transformers import AutoConfig

    if recipe.model is None:
        return
    config = AutoConfig.from_pretrained(init_dir)  # the values in effect: a config.json leaves defaults out
    wrong = []
    for key, path in MODEL_FIELDS:
        want = _dotted(recipe.model, key)
        have = _config_value(config, path)
        if want is not None and have is not None and want != have:
            wrong.append(f"model.{key} is {want} but checkpoint {name or init_dir} has {path} {have}")
    if wrong:
        raise RecipeError("recipe " + "; ".join(wrong),
                          "fix the recipe's model section (e.g. --set model.KEY=VALUE) or pick the matching "
                          "checkpoint")


def _dotted(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _config_value(config, path: str):
    if path == "text_config.rope_theta":  # transformers 5 keeps it in rope_parameters
        text = config.text_config
        params = getattr(text, "rope_parameters", None) or {}
        return params.get("rope_theta", getattr(text, "rope_theta", None))
    return _dotted(config, path)


def data_overrides(recipe_path: Path, stage: str, data: list[str | Path]) -> list[str]:
    """`--data PATH` (repeatable) as `--set` overrides: sources data0, data1, ... replace the data of every phase of
    the stage, weighted by their row counts. Each source is opened here, so a bad file stops before anything runs."""
    import yaml

    from ..data.sources import SourceSpec, load_source

    try:
        raw = yaml.safe_load(Path(recipe_path).read_text()) or {}
        phases = raw["stages"][stage]["phases"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []  # load_recipe / prepare report the recipe's own problem
    sources, mixture = [], []
    for i, path in enumerate(data):
        full = Path(path).expanduser().absolute()
        if not full.exists():
            raise UserError(f"--data '{path}' not found", "pass a JSONL or CSV file, or an image folder with "
                            "metadata.jsonl / metadata.csv")
        spec = {"path": str(full), "name": f"data{i}"}
        rows = len(load_source(SourceSpec(**spec)))
        sources.append(f"sources.data{i}={json.dumps(spec)}")
        mixture.append({"source": f"data{i}", "weight": rows})
    return sources + [f"stages.{stage}.phases.{j}.data={json.dumps(mixture)}" for j in range(len(phases))]


def _check_data_given(recipe_path: Path, stage: str) -> None:
    """The fine-tuning recipes leave every phase's data empty: --data gives it."""
    import yaml

    try:
        phases = yaml.safe_load(Path(recipe_path).read_text())["stages"][stage]["phases"]
        empty = [p.get("name", str(i)) for i, p in enumerate(phases) if p.get("data") == []]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return
    if empty:
        raise RecipeError(f"recipe '{recipe_path}' leaves the data of its {stage} stage to --data",
                          "pass --data PATH (a JSONL or CSV file, or an image folder with metadata.jsonl); repeat "
                          "it to mix several")


def with_data(recipe_path: Path, stage: str, overrides: list[str], data: list[str | Path] | None) -> list[str]:
    """The --set overrides with --data's sources folded in. Without --data, a recipe that leaves its data to --data
    (the fine-tuning recipes) stops with one line, unless the overrides give the stage's data."""
    if data:
        return [*overrides, *data_overrides(recipe_path, stage, data)]
    if not any(o.startswith(f"stages.{stage}") and o.partition("=")[0].endswith(".data") for o in overrides):
        _check_data_given(recipe_path, stage)
    return list(overrides)


def prepare(recipe_path: Path, stage: str, overrides: list[str], max_steps: int | None,
            data: list[str | Path] | None = None, eval_data: list[str | Path] | None = None) -> Recipe:
    if eval_data:
        from ..recipe_eval import eval_data_overrides

        overrides = [*overrides, *eval_data_overrides(eval_data)]
    recipe = load_recipe(recipe_path, with_data(recipe_path, stage, overrides, data))
    if recipe.eval is not None and recipe.eval.data:
        from ..eval.user_data import check_user_data

        check_user_data(recipe.eval.data)  # a bad row stops here, before anything is launched
    if stage not in recipe.stages:
        raise RecipeError(f"recipe '{recipe_path}' has no stages.{stage}", f"add a {stage} stage to the recipe")
    phases = recipe.stages[stage].phases
    for i, phase in enumerate(phases):
        steps = phase.steps if phase.steps is not None else steps_for_epochs(recipe, phase)
        # model_copy: the resolved phase keeps `epochs` for the record beside the steps it implies
        phases[i] = phase.model_copy(update={"steps": min(steps, max_steps) if max_steps else steps})
    return recipe


def steps_for_epochs(recipe: Recipe, phase) -> int:
    """Optimizer steps for `phase.epochs` passes over the rows of the phase's sources."""
    import math

    from ..data.resolve import open_sources

    sources = open_sources(recipe.sources, [e.source for e in phase.data], recipe.synthetic)
    streaming = [n for n, s in sources.items() if s.streaming]
    if streaming:
        raise RecipeError(f"phase '{phase.name}' is given in epochs but source '{streaming[0]}' is streamed "
                          "(its length is unknown)", "give the phase steps instead")
    rows = sum(len(s) for s in sources.values())
    return max(1, math.ceil(phase.epochs * rows / phase.global_batch_size))


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _recorded_recipe(run: Path) -> str | None:
    """The run's recipe.yaml as this version writes it: fields added since it was written take their defaults, so
    an upgrade does not make a run's own recipe look like another one."""
    try:
        return dump_recipe(load_recipe(run / "recipe.yaml"))
    except RecipeError:
        return None


def _claim_run(run: Path, recipe: Recipe, stage: str, init_dir: Path, dist: Dist) -> None:
    """RUN holds one stage of one recipe: refuse to mix, record what is needed to reproduce it."""
    from ..assemble import package_versions
    from ..download import recorded_manifest

    stamp = run / "run.json"
    text = dump_recipe(recipe)
    if stamp.is_file():
        prev = json.loads(stamp.read_text())
        if prev["stage"] != stage or _recorded_recipe(run) != text:
            raise OutputError(f"run folder '{run}' holds another run ({prev['stage']} stage of "
                              f"{prev['recipe']}) or a different recipe", "choose another --out")
        return
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "recipe.yaml").write_text(text)
        (run / "run.json").write_text(json.dumps({
            "recipe": recipe.name, "stage": stage, "init": str(init_dir), "versions": package_versions(),
            "git_revision": git_revision(), "download_manifest": recorded_manifest(recipe)}, indent=2))


def train_stage(recipe_path: Path, stage: str, init: Path, out: Path, overrides: list[str] | None = None,
                max_steps: int | None = None, launch: Launch | None = None, deepspeed: str | None = None,
                data: list[str | Path] | None = None, eval_data: list[str | Path] | None = None) -> int:
    launch = launch or Launch()
    check(launch)  # before reading the recipe: a bad launch option is the quickest thing to report
    recipe = prepare(recipe_path, stage, overrides or [], max_steps, data, eval_data)
    init_dir = resolve_init(init)
    check_model_section(recipe, init_dir, str(init))
    if not recipe.images.is_default:  # a bad images: section stops here, once, before any process starts
        from ..data.images import load_processor

        load_processor(init_dir, recipe.images)
    if launch.relaunches:
        return relaunch(launch)
    with ckpt.deferred_stops():
        try:
            return _train_here(recipe, stage, init_dir, Path(out), deepspeed)
        except UserError as e:
            if e.agreed:
                ckpt.disband(e)
            raise


def _train_here(recipe: Recipe, stage: str, init_dir: Path, run: Path, deepspeed: str | None) -> int:
    """The stage on this process, one rank of however many. Errors are agreed by all ranks (checkpoint.agree) so
    that they stop together, and a scheduler's signal stops them before a phase or at a step boundary."""
    from .log import RunLog

    dist = init_distributed()
    claimed = None
    try:
        _claim_run(run, recipe, stage, init_dir, dist)
        log = RunLog(run, dist.main, recipe.train.report_to)  # rank 0 alone may miss a logger package
    except UserError as e:
        claimed = e
    ckpt.agree(claimed, signals=False)  # also the barrier: rank 0 has written run.json
    start = init_dir
    for i, phase in enumerate(recipe.stages[stage].phases):
        out_dir = run / "phases" / f"{i:02d}-{phase.name}"
        if (out_dir / "config.json").is_file():
            log.info(f"phase {i + 1} '{phase.name}' already finished: {out_dir}")
            start = out_dir
            continue
        signum = ckpt.agree()
        if signum is not None:
            last = ckpt.latest(run)
            raise ckpt.stopped(signum, f"before phase {i + 1} '{phase.name}'",
                               f"the last checkpoint is {last.name if last else 'none'}")
        run_one_phase(recipe, stage, i, phase, start, run, dist, out_dir, deepspeed or recipe.train.deepspeed, log)
        start = out_dir
    log.info(f"[bold green]{stage} stage finished[/]: {start}")
    log.close()
    return 0


def run_one_phase(recipe, stage, index, phase, start, run, dist, out_dir, ds_config, log) -> Path:
    from ..data.images import load_processor
    from .engine import PhaseJob, run_phase
    from .evaluate import make_evaluator
    from .stream import phase_stream

    processor = load_processor(start, recipe.images)  # the recipe's images: section in effect

    def shard_stream(shard, shards, state):
        return phase_stream(recipe, phase, index, processor, shard, shards, state)

    job = PhaseJob(recipe=recipe, stage=stage, index=index, phase=phase, start_dir=Path(start), run=run, dist=dist,
                   out_dir=out_dir, ds_config=ds_config, log=log, pad_id=processor.tokenizer.pad_token_id)
    job.evaluator = make_evaluator(recipe, job)
    return run_phase(job, shard_stream)
