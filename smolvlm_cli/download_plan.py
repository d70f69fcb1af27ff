# What `smolvlm download` would fetch for a recipe, worked out without the network: the items (model parts, data
# sources) and why some need nothing, which repo files a part needs, and what a dataset card says about a split.
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import RecipeError, UserError

# Top-level files a part needs: weights (safetensors only: nothing pickled is ever loaded), configs, tokenizer.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "tokenizer*", "*.model", "*.txt", "*.jinja")
TOKENIZER_FILE_PATTERNS = ("*.json", "tokenizer*", "*.model", "*.txt", "*.jinja")
WHAT = ("models", "data", "all")
SYNTHETIC_PREFIX = "synthetic:"
CHECKPOINT = "checkpoint"  # the name of a whole released model fetched by `download --model` (not a recipe part)


@dataclass
class Item:
    """One thing a recipe references; `skip` says why nothing is fetched for it."""

    kind: str  # "model" | "dataset"
    name: str  # vision | text | tokenizer | the recipe's source name
    ref: str
    revision: str | None = None
    config: str | None = None
    split: str = "train"
    streaming: bool = False
    skip: str | None = None
    media_root: str | None = None  # datasets: where the repo's media archives are unpacked

    @property
    def label(self) -> str:
        if self.kind == "dataset":
            return f"dataset '{self.name}'"
        return CHECKPOINT if self.name == CHECKPOINT else f"{self.name} part"

    @property
    def set_key(self) -> str:
        """The `--set` key that points the recipe at a local copy instead (a checkpoint: the option naming it)."""
        if self.kind == "dataset":
            return f"sources.{self.name}.path"
        if self.name == CHECKPOINT:
            return "--model"
        return "model.text.tokenizer" if self.name == "tokenizer" else f"model.{self.name}.source"

    @property
    def display_ref(self) -> str:
        return f"{self.ref}:{self.config}" if self.config else self.ref


# ---------------------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------------------


def select_files(paths: Sequence[str], patterns: Sequence[str] = MODEL_FILE_PATTERNS) -> list[str]:
    """Top-level repo files matching any pattern, sorted. Sub-folders (onnx/, runs/, checkpoints) never match."""
    return sorted(p for p in paths if "/" not in p and any(fnmatch.fnmatch(p, pat) for pat in patterns))


def plan_downloads(recipe, what: str = "all", stage: str | None = None) -> list[Item]:
    """Everything `recipe` references that `what` selects: model parts first, then data sources (those of `stage`
    when given, else all). Random parts, local folders, .gguf files, local data and synthetic data are skipped."""
    if what not in WHAT:
        raise UserError(f"--what '{what}' is not one of {', '.join(WHAT)}", "pass --what models, data or all")
    if stage is not None and stage not in recipe.stages:
        known = ", ".join(recipe.stages) or "none"
        raise RecipeError(f"recipe '{recipe.name}' has no stage '{stage}'", f"use one of: {known}")
    items: list[Item] = []
    if what in ("models", "all") and recipe.model is not None:
        m = recipe.model
        items.append(_model_item("vision", m.vision.source, m.vision.revision))
        items.append(_model_item("text", m.text.source, m.text.revision))
        if m.text.tokenizer and m.text.tokenizer != m.text.source:
            items.append(_model_item("tokenizer", m.text.tokenizer, m.text.revision))
    if what in ("data", "all"):
        if stage is None:
            names = list(recipe.sources)
        else:
            names = list(dict.fromkeys(e.source for p in recipe.stages[stage].phases for e in p.data))
        items.extend(_data_item(name, recipe.sources[name]) for name in names)
    return items


def _model_item(name: str, ref: str, revision: str | None) -> Item:
    from .parts import HUB_ID

    item = Item("model", name, ref, revision)
    path = Path(ref).expanduser()
    if ref.startswith("random:"):
        item.skip = "random weights, built by init"
    elif path.suffix == ".gguf" and path.is_file():
        item.skip = "local GGUF file"
    elif path.is_dir():
        item.skip = "local folder"
    elif path.exists() or ref.startswith((".", "/", "~")) or path.suffix == ".gguf" or not HUB_ID.match(ref):
        raise RecipeError(f"{item.label} '{ref}' is neither a local folder / .gguf file nor a hub id",
                          f"fix {item.set_key} (a hub id looks like owner/name)")
    return item


def _data_item(name: str, spec) -> Item:
    from .data.sources import FILE_BUILDERS
    from .parts import HUB_ID

    item = Item("dataset", name, spec.path, spec.revision, spec.config, spec.split, spec.streaming,
                media_root=spec.media_root)
    path = Path(spec.path).expanduser()
    if spec.path.startswith(SYNTHETIC_PREFIX):
        item.skip = "built-in synthetic data"
    elif path.exists():
        item.skip = "local data"
    elif not HUB_ID.match(spec.path) or path.suffix.lower() in FILE_BUILDERS:
        raise RecipeError(f"{item.label} path '{spec.path}' is neither local data nor a hub dataset id",
                          f"fix {item.set_key}")
    return item


def card_split_info(card: dict | None, config: str | None, split: str) -> tuple[int | None, int | None]:
    """(rows of `split`, download bytes of `config`) as a dataset card's `dataset_info` states them, else None."""
    infos = (card or {}).get("dataset_info")
    if isinstance(infos, dict):
        infos = [infos]
    if not isinstance(infos, list):
        return None, None
    wanted = config or "default"
    for info in infos:
        if not isinstance(info, dict):
            continue
        if info.get("config_name", "default") != wanted and not (config is None and len(infos) == 1):
            continue
        rows = next((s.get("num_examples") for s in info.get("splits") or [] if s.get("name") == split), None)
        return rows, info.get("download_size")
    return None, None
