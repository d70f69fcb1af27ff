# The manifest `smolvlm download` writes (ids, commit shas, files, sizes of what it fetched) and how init and the
# trainer find it again: reading, merging and atomic writing, and the offline "is it still here" check.
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def default_download_dir(recipe_name: str) -> Path:
    from .fsutil import cache_root

    return cache_root() / "downloads" / recipe_name


def read_manifest(path: str | os.PathLike) -> dict:
    """A manifest written by `smolvlm download` (the file, or the folder holding manifest.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"download manifest '{path}' not found", "run smolvlm download first") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"download manifest '{path}' is not valid JSON", "re-run smolvlm download") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not all(
        isinstance(data.get(k), dict) for k in ("models", "datasets")
    ):
        raise UserError(f"'{path}' is not a smolvlm download manifest (format {MANIFEST_FORMAT})",
                        "re-run smolvlm download")
    return data


def read_or_empty(path: Path) -> dict:
    return read_manifest(path) if path.is_file() else {"models": {}, "datasets": {}}


def recorded_manifest(recipe) -> dict | None:
    """The manifest of the downloads this recipe uses, for init and the trainer to record: the default download
    folder's, or that of a `--out DIR` folder the recipe's parts or sources point into
    (DIR/models/..., DIR/data/...)."""
    candidates = [default_download_dir(recipe.name) / MANIFEST_NAME]
    parts = [recipe.model.vision.source, recipe.model.text.source] if recipe.model else []
    paths = [*parts, *(s.path for s in recipe.sources.values())]
    for value in paths:
        path = Path(value).expanduser()
        if path.parent.name in ("models", "data"):
            candidates.append(path.parent.parent / MANIFEST_NAME)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return read_manifest(candidate)
            except UserError:
                continue
    return None


def write_manifest(path: Path, recipe_name: str, models: dict, datasets: dict) -> dict:
    """Merge these entries into the manifest at `path` (entries of other items are kept) and write it atomically."""
    from huggingface_hub import constants

    old = read_or_empty(path)
    manifest = {
        "format": MANIFEST_FORMAT,
        "recipe": recipe_name,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "endpoint": constants.ENDPOINT,
        "models": {**old["models"], **models},
        "datasets": {**old["datasets"], **datasets},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    return manifest


def present_in_manifest(manifest: dict, item) -> bool:
    """Offline, an item counts as present when an earlier download recorded it and its files are still there."""
    entry = manifest.get("models" if item.kind == "model" else "datasets", {}).get(item.name)
    if not entry or entry.get("repo_id") != item.ref or entry.get("requested_revision") != item.revision:
        return False
    if item.kind == "dataset" and (entry.get("config") != item.config or entry.get("split") != item.split):
        return False
    if entry.get("media"):
        from .media_archives import media_present

        if not media_present(entry["media"], item.ref):
            return False
    if entry.get("path") is None:
        return entry.get("mode") == "streaming"
    return all((Path(entry["path"]) / f["path"]).is_file() for f in entry.get("files", []))
