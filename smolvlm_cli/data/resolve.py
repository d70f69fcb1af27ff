# Turn a recipe's named sources into opened Sources, writing the built-in synthetic data on first use.
# `synthetic:TASK` reads train/TASK.jsonl (or test/ with split: test); `synthetic:cauldron/colour` and
# `synthetic:llava/direction` read the mirrors in the real Cauldron / LLaVA schemas.
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from ..errors import RecipeError
from ..fsutil import cache_root

SYNTHETIC_PREFIX = "synthetic:"


def synthetic_root(settings=None, cache_dir: str | Path | None = None) -> Path:
    """The synthetic dataset for these settings (a recipe's `synthetic` section; default sizes when None),
    generated once (atomically) into the cache."""
    from ..recipe import SyntheticSettings
    from .synthetic import DATASET_VERSION, write_synthetic

    conf = (settings or SyntheticSettings()).model_dump()
    keyed = {**conf, "version": DATASET_VERSION}  # a new version of the generator writes a fresh copy
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(cache_dir) if cache_dir else cache_root()
    root = base / "synthetic" / key
    if (root / "done.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root.parent))
    try:
        counts = write_synthetic(tmp, conf["n_train"], conf["n_test"], seed=conf["seed"],
                                 image_size=conf["image_size"])
        (tmp / "done.json").write_text(json.dumps({"settings": conf, "counts": counts}))
        try:
            tmp.rename(root)
        except OSError:  # another process finished first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def synthetic_path(task: str, split: str, root: Path) -> Path:
    if task == "cauldron/colour":
        return root / "cauldron" / "colour" / "train.parquet"
    if task == "llava/direction":
        return root / "llava" / "direction_train.json"
    path = root / split / f"{task}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "train").glob("*.jsonl"))
        raise RecipeError(f"unknown synthetic task '{task}'",
                          f"use synthetic:NAME with NAME in {', '.join(known)}, cauldron/colour, llava/direction")
    return path


def open_sources(specs: dict, names: list[str], synthetic=None, cache_dir=None) -> dict:
    """name -> Source for the given recipe source names (`synthetic`: the recipe's synthetic settings)."""
    from .sources import load_source

    opened = {}
    for name in names:
        spec = specs[name]
        if spec.path.startswith(SYNTHETIC_PREFIX):
            task = spec.path[len(SYNTHETIC_PREFIX):]
            root = synthetic_root(synthetic, cache_dir)
            media_root = str(root / "media") if task == "llava/direction" else spec.media_root
            spec = replace(spec, path=str(synthetic_path(task, spec.split, root)), media_root=media_root)
        opened[name] = load_source(replace(spec, name=spec.name or name))
    return opened
