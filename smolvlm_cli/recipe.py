# The typed recipe schema, YAML loading and `--set key.path=value` overrides.
# Unknown keys are errors that name their path; every section is strict.
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .data.sources import SourceSpec
from .errors import RecipeError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RandomVision(Strict):
    """Shape of a randomly initialised SigLIP vision tower (for tests and the tiny recipe)."""

    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    image_size: int = Field(gt=0)
    patch_size: int = Field(gt=0)


class RandomText(Strict):
    """Shape of a randomly initialised Llama-family LM with a built-in byte-level BPE tokenizer."""

    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    max_position_embeddings: int = Field(default=2048, gt=0)
    tie_word_embeddings: bool = True
    tokenizer_vocab_size: int = Field(default=1024, ge=300)


class RandomPart(Strict):
    vision: RandomVision | None = None
    text: RandomText | None = None


class VisionSection(Strict):
    source: str = Field(description="hub id, local folder or random:NAME")
    revision: str | None = None
    # Expectations checked against the part before anything is built.
    image_size: int = Field(gt=0)
    patch_size: int = Field(gt=0)
    hidden_size: int | None = Field(default=None, gt=0)


class TextSection(Strict):
    source: str = Field(description="hub id, local folder, .gguf file or random:NAME")
    revision: str | None = None
    tokenizer: str | None = Field(default=None, description="where the tokenizer lives, if not with the LM")
    hidden_size: int | None = Field(default=None, gt=0)


class ProcessorSection(Strict):
    longest_edge: int = Field(default=2048, gt=0, description="images are resized to this longest edge")
    do_image_splitting: bool = True
    video_fps: float = Field(default=1.0, gt=0)
    video_max_frames: int = Field(default=64, gt=0)
    video_longest_edge: int | None = Field(default=None, gt=0, description="defaults to the tile size")


class ModelSection(Strict):
    vision: VisionSection
    text: TextSection
    scale_factor: int = Field(default=4, gt=0, description="pixel-shuffle factor of the connector")
    rope_theta: float | None = Field(default=None, gt=0, description="None keeps the LM's own")
    max_position_embeddings: int | None = Field(default=None, gt=0)
    tie_word_embeddings: bool = False
    vocab_multiple: int = Field(default=128, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    processor: ProcessorSection = Field(default_factory=ProcessorSection)
    random_parts: dict[str, RandomPart] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tiles_fit(self) -> "ModelSection":
        v = self.vision
        step = v.patch_size * self.scale_factor
        if v.image_size % step:
            raise ValueError(
                f"vision.image_size {v.image_size} is not divisible by patch_size x scale_factor "
                f"= {v.patch_size} x {self.scale_factor} = {step}"
            )
        if self.processor.longest_edge % v.image_size:
            raise ValueError(
                f"processor.longest_edge {self.processor.longest_edge} must be a multiple of "
                f"vision.image_size {v.image_size}"
            )
        return self


PART_NAMES = ("vision", "connector", "text", "embeddings")


class PartTraining(Strict):
    """How one part trains in a phase. `embeddings` = the LM's input embeddings (incl. new token rows) + lm_head."""

    mode: Literal["frozen", "dora", "lora", "full"] = "frozen"
    lr: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _lr_when_trained(self) -> "PartTraining":
        if self.mode != "frozen" and self.lr is None:
            raise ValueError(f"a part in mode '{self.mode}' needs an lr")
        return self


class AdapterSettings(Strict):
    r: int = Field(default=64, gt=0)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="module names to adapt inside the adapted parts, e.g. [q_proj, v_proj]; "
                                  "default: every attention and MLP projection (and lm_head)")


class Schedule(Strict):
    type: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_ratio: float | None = Field(default=None, ge=0, le=1)


class MixtureEntry(Strict):
    source: str
    weight: float = Field(ge=0, description="percent of the phase's samples")
    max_samples: int | None = Field(default=None, gt=0)
    max_epochs: float | None = Field(default=None, gt=0, description="cap on passes over the source")


class Phase(Strict):
    name: str
    steps: int | None = Field(default=None, gt=0, description="optimizer steps; wins over epochs when both are set")
    epochs: float | None = Field(default=None, gt=0, description="passes over the phase's sources' rows")
    global_batch_size: int = Field(gt=0, description="samples per optimizer step over all ranks")
    micro_batch_size: int = Field(default=1, gt=0)
    max_seq_len: int = Field(default=2048, gt=0)
    packing: bool = False
    group_by_length: bool = True
    neftune_alpha: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(default=1.0, gt=0)
    schedule: Schedule = Field(default_factory=Schedule)
    parts: dict[Literal["vision", "connector", "text", "embeddings"], PartTraining]
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    data: list[MixtureEntry] = Field(min_length=1)
    video_fps: float | None = Field(default=None, gt=0, description="default: the model's processor's, as eval")
    video_max_frames: int | None = Field(default=None, gt=0, description="default: the model's processor's")
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _length_given(self) -> "Phase":
        if self.steps is None and self.epochs is None:
            raise ValueError(f"phase '{self.name}' needs steps or epochs")
        return self

    @model_validator(mode="after")
    def _something_trains(self) -> "Phase":
        if all(p.mode == "frozen" for p in self.parts.values()):
            raise ValueError(f"phase '{self.name}' trains nothing: every part is frozen")
        return self


class Stage(Strict):
    phases: list[Phase] = Field(min_length=1)


class TrainSettings(Strict):
    deepspeed: str = Field(default="zero3", description="zero2 | zero3 | zero3_offload | path to a JSON config")
    zero3_persistence_threshold: int | None = Field(
        default=None, ge=0, description="ZeRO-3: parameters with at most this many elements stay whole on every "
        "rank (0 partitions all); default max(10 x text hidden size, 100000)")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    log_every: int = Field(default=1, gt=0)
    checkpoint_every: int = Field(default=500, gt=0)
    keep_last: int = Field(default=2, gt=0)
    max_bad_steps: int = Field(default=3, gt=0, description="consecutive non-finite losses before stopping")
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1, description="stop if more samples are unusable")
    num_workers: int = Field(default=0, ge=0)
    video_backend: Literal["auto", "decord", "pyav"] = "auto"
    group_window: int = Field(default=16, gt=0, description="micro-batches per length-grouping window")
    tensorboard: bool = False
    deterministic: bool = Field(default=False, description="torch's deterministic kernels (slower on GPU): the same "
                                "run on the same hardware and versions gives the same weights")


class SyntheticSettings(Strict):
    """Size of the built-in synthetic dataset that `synthetic:TASK` sources read (generated once, cached)."""

    n_train: int = Field(default=400, gt=0, description="training examples per task")
    n_test: int = Field(default=100, gt=0, description="held-out examples per task")
    image_size: int = Field(default=64, ge=32)
    seed: int = 0


class EvalSettings(Strict):
    every_steps: int = Field(gt=0)
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, gt=0)
    keep_best: int = Field(default=2, gt=0)
    weights: dict[str, float] | None = Field(
        default=None, description="composite weight per task (tasks not named weigh 0); default: the paper's "
                                  "checkpoint-selection benchmarks among the tasks, else all equally")
    dataset_paths: dict[str, str] = Field(
        default_factory=dict, description="task -> local dataset, as `smolvlm eval --dataset-path`; default: the "
                                          "hub, and the recipe's synthetic set for the synthetic tasks")
    media_roots: dict[str, str] = Field(
        default_factory=dict, description="video task -> folder of its videos, as `smolvlm eval --media-root`")
    prompt_style: str = Field(default="lmms", description="lmms | vlmevalkit, as `smolvlm eval --prompt-style`")

    @model_validator(mode="after")
    def _weights_score_run_tasks(self) -> "EvalSettings":
        """The composite ranks the checkpoints of periodic eval: checked here, a bad task name or weight is a recipe
        error at load time instead of a crash (or an ignored weight) at the first eval, hours into training."""
        from .errors import UserError
        from .eval.tasks import PROMPT_STYLES, resolve_tasks

        try:
            run = resolve_tasks(self.tasks)
        except UserError as e:
            raise ValueError(f"eval.tasks: {e.message} ({e.hint})") from None
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"eval.prompt_style {self.prompt_style!r} is not one of {', '.join(PROMPT_STYLES)}")
        _check_task_paths(self, run)
        if self.weights is None:
            return self
        stray = [k for k in self.weights if k not in run]
        if stray:
            raise ValueError(f"eval.weights names {', '.join(map(repr, stray))}, not among the tasks eval.tasks runs "
                             f"({', '.join(run)})")
        negative = [k for k, w in self.weights.items() if w < 0]
        if negative:
            raise ValueError(f"eval.weights gives {', '.join(map(repr, negative))} a negative weight")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("eval.weights gives no task a positive weight, so no checkpoint could be ranked")
        return self


def _check_task_paths(settings: EvalSettings, run: list[str]) -> None:
    """dataset_paths / media_roots keys name tasks eval.tasks runs; every video task run has its media folder."""
    from .errors import UserError
    from .eval.tasks import registry, tasks_named

    def named(key: str) -> list[str]:
        try:
            return tasks_named(key, run)
        except UserError:  # an unknown name is reported as a stray key, like a weight's
            return []

    for field in ("dataset_paths", "media_roots"):
        stray = [k for k in getattr(settings, field) if not named(k)]
        if stray:
            raise ValueError(f"eval.{field} names {', '.join(map(repr, stray))}, not among the tasks eval.tasks "
                             f"runs ({', '.join(run)})")
    with_media = {n for k in settings.media_roots for n in named(k)}
    missing = [n for n in run if registry()[n].needs_media_root and n not in with_media]
    if missing:
        raise ValueError(f"eval.tasks runs the video task(s) {', '.join(map(repr, missing))} but eval.media_roots "
                         "gives no folder of their videos")


class Recipe(Strict):
    name: str
    description: str = ""
    seed: int = 0
    model: ModelSection
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    stages: dict[Literal["vision", "video"], Stage] = Field(default_factory=dict)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings | None = None
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)

    @model_validator(mode="after")
    def _mixtures_name_sources(self) -> "Recipe":
        for stage_name, stage in self.stages.items():
            for phase in stage.phases:
                names = [e.source for e in phase.data]
                if len(set(names)) != len(names):
                    raise ValueError(f"stages.{stage_name} phase '{phase.name}' lists a source twice")
                for entry in phase.data:
                    if entry.source not in self.sources:
                        known = ", ".join(self.sources) or "none"
                        raise ValueError(f"stages.{stage_name} phase '{phase.name}' uses unknown source "
                                         f"'{entry.source}' (defined: {known})")
        return self


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _validation_message(err: ValidationError, source: str) -> RecipeError:
    first = err.errors()[0]
    where = _format_loc(first["loc"])
    if first["type"] == "extra_forbidden":
        return RecipeError(
            f"unknown key '{where}' in {source}",
            "check the spelling against recipes/tiny.yaml or remove it",
        )
    if first["type"] == "missing":
        return RecipeError(f"missing key '{where}' in {source}", "add it to the recipe")
    got = first.get("input")
    got_text = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    where = f"'{where}'" if where else "recipe"
    return RecipeError(f"{where} in {source}: {first['msg']}{got_text}", "fix the value in the recipe or --set")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a', 'b', 'c'], parsed value). The value is read as YAML (so 3, 1e-4, true, [1,2])."""
    if "=" not in text:
        raise RecipeError(f"override '{text}' has no '='", "write it as --set key.path=value")
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in path):
        raise RecipeError(f"override '{text}' has an empty key", "write it as --set key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path[: i + 1])]
            continue
        if not isinstance(node, dict):
            raise RecipeError(f"cannot set '{'.'.join(path)}': '{'.'.join(path[:i])}' is not a section")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"cannot set '{'.'.join(path)}': '{'.'.join(path[:-1])}' is not a section")


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise RecipeError(f"'{'.'.join(path)}': '{part}' is not an index of a list of {len(node)}")
    return int(part)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML, apply overrides, validate. Relative part paths resolve against the recipe's folder."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' not found", "pass an existing YAML file, e.g. recipes/tiny.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"recipe '{path}' is not valid YAML{where}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe '{path}' must be a mapping at the top level", "see recipes/tiny.yaml")
    for text in overrides:
        apply_override(data, *parse_override(text))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise _validation_message(e, f"recipe '{path}'") from None
    return _resolve_relative(recipe, path.parent)


def _resolve_relative(recipe: Recipe, base: Path) -> Recipe:
    """Local paths written relative to the recipe file work from any working directory."""
    def local(value: str | None) -> str | None:
        relative = value and value.startswith((".", "..")) and (base / value).exists()
        return str((base / value).resolve()) if relative else value

    for section in (recipe.model.vision, recipe.model.text):
        section.source = local(section.source)
    for spec in recipe.sources.values():
        for attr in ("path", "media_root"):
            setattr(spec, attr, local(getattr(spec, attr)))
    recipe.model.text.tokenizer = local(recipe.model.text.tokenizer)
    for paths in (recipe.eval.dataset_paths, recipe.eval.media_roots) if recipe.eval else ():
        paths.update({key: local(value) for key, value in paths.items()})
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False)
