# The typed recipe schema, YAML loading and `--set key.path=value` overrides.
# Unknown keys are errors that name their path; every section is strict.
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .data.sources import SourceSpec
from .errors import RecipeError
from .recipe_base import Strict
from .recipe_eval import EvalSettings
from .recipe_images import ImageSettings
from .recipe_train import MixtureEntry, Phase, Stage, TrainSettings  # noqa: F401 (imported from here)


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


class SyntheticSettings(Strict):
    """Size of the built-in synthetic dataset that `synthetic:TASK` sources read (generated once, cached)."""

    n_train: int = Field(default=400, gt=0, description="training examples per task")
    n_test: int = Field(default=100, gt=0, description="held-out examples per task")
    image_size: int = Field(default=64, ge=32)
    seed: int = 0


class Recipe(Strict):
    name: str
    description: str = ""
    seed: int = 0
    model: ModelSection | None = Field(default=None, description="needed by init and plan; optional when "
                                      "training starts from a checkpoint, which it is then checked against")
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    stages: dict[Literal["vision", "video"], Stage] = Field(default_factory=dict)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings | None = None
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    images: ImageSettings = Field(default_factory=ImageSettings, description="image resizing and tiling; "
                                  "unset fields keep the model's processor settings")

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

    def model_section(self, needed_by: str) -> ModelSection:
        if self.model is None:
            raise RecipeError(f"recipe '{self.name}' has no model section, which {needed_by} needs",
                              "add one (see recipes/smolvlm2-256m.yaml)")
        return self.model


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

    if recipe.model is not None:
        for section in (recipe.model.vision, recipe.model.text):
            section.source = local(section.source)
        recipe.model.text.tokenizer = local(recipe.model.text.tokenizer)
    for spec in recipe.sources.values():
        for attr in ("path", "media_root"):
            setattr(spec, attr, local(getattr(spec, attr)))
    for paths in (recipe.eval.dataset_paths, recipe.eval.media_roots) if recipe.eval else ():
        paths.update({key: local(value) for key, value in paths.items()})
    if recipe.eval is not None:
        recipe.eval.data = [local(path) for path in recipe.eval.data]
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False)
