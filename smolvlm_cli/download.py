# `smolvlm download`: fetch a recipe's hub model parts (snapshot downloads of weights, config and tokenizer files)
# and hub datasets, and record ids, commit shas, files and sizes in a manifest that init and train can keep.
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Sequence

from .errors import OutputError, RecipeError, UserError

# Top-level files a part needs: weights (safetensors only: nothing pickled is ever loaded), configs, tokenizer.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "tokenizer*", "*.model", "*.txt", "*.jinja")
TOKENIZER_FILE_PATTERNS = ("*.json", "tokenizer*", "*.model", "*.txt", "*.jinja")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WHAT = ("models", "data", "all")
SYNTHETIC_PREFIX = "synthetic:"


class DownloadError(UserError):
    """Something the recipe names cannot be fetched (offline, unknown repo, unreadable dataset)."""


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

    @property
    def label(self) -> str:
        return f"{self.name} part" if self.kind == "model" else f"dataset '{self.name}'"

    @property
    def set_key(self) -> str:
        """The `--set` key that points the recipe at a local copy instead."""
        if self.kind == "dataset":
            return f"sources.{self.name}.path"
        return "model.text.tokenizer" if self.name == "tokenizer" else f"model.{self.name}.source"

    @property
    def display_ref(self) -> str:
        return f"{self.ref}:{self.config}" if self.config else self.ref


@dataclass
class Remote:
    """What the hub says about an item at its resolved commit."""

    sha: str
    files: dict[str, int | None] = field(default_factory=dict)  # models: the files to fetch and their sizes
    present: set[str] = field(default_factory=set)  # of those, already on disk
    rows: int | None = None  # datasets: from the dataset card, when it says
    size: int | None = None


# ---------------------------------------------------------------------------------------------------------------
# Planning (no network)
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
    if what in ("models", "all"):
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

    item = Item("dataset", name, spec.path, spec.revision, spec.config, spec.split, spec.streaming)
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


# ---------------------------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------------------------


def default_download_dir(recipe_name: str) -> Path:
    base = Path(os.environ.get("SMOLVLM_CACHE") or Path.home() / ".cache" / "smolvlm")
    return base / "downloads" / recipe_name


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


def recorded_manifest(recipe) -> dict | None:
    """The manifest of the downloads this recipe uses, for init and the trainer to record: the default download
    folder's, or that of a `--out DIR` folder the recipe's parts or sources point into
    (DIR/models/..., DIR/data/...)."""
    candidates = [default_download_dir(recipe.name) / MANIFEST_NAME]
    paths = [recipe.model.vision.source, recipe.model.text.source, *(s.path for s in recipe.sources.values())]
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


def _write_manifest(path: Path, recipe_name: str, models: dict, datasets: dict) -> dict:
    from huggingface_hub import constants

    old = read_manifest(path) if path.is_file() else {"models": {}, "datasets": {}}
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


def _present_in_manifest(manifest: dict, item: Item) -> bool:
    """Offline, an item counts as present when an earlier download recorded it and its files are still there."""
    entry = manifest.get("models" if item.kind == "model" else "datasets", {}).get(item.name)
    if not entry or entry.get("repo_id") != item.ref or entry.get("requested_revision") != item.revision:
        return False
    if item.kind == "dataset" and (entry.get("config") != item.config or entry.get("split") != item.split):
        return False
    if entry.get("path") is None:
        return entry.get("mode") == "streaming"
    return all((Path(entry["path"]) / f["path"]).is_file() for f in entry.get("files", []))


# ---------------------------------------------------------------------------------------------------------------
# Hub calls
# ---------------------------------------------------------------------------------------------------------------


def offline_requested() -> bool:
    """`huggingface_hub` reads these at import; read them now so a value set since then still means offline."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of whichever HTTP client this huggingface_hub uses (all mean: the hub is unreachable)."""
    errors: list[type[BaseException]] = [OSError]  # ConnectionError, OfflineModeIsEnabled, requests' errors
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _resolve(api, item: Item, local_dir: Path | None) -> Remote:
    """Commit sha, files and sizes of a hub item. Raises DownloadError for repos the hub does not serve."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    repo_type = "model" if item.kind == "model" else "dataset"
    try:
        if item.kind == "model":
            info = api.model_info(item.ref, revision=item.revision, files_metadata=True)
        else:
            info = api.dataset_info(item.ref, revision=item.revision)
    except RevisionNotFoundError:
        raise DownloadError(f"{item.label} '{item.ref}' has no revision '{item.revision}'",
                            "fix the revision in the recipe (a branch, tag or commit sha)") from None
    except GatedRepoError:
        raise DownloadError(f"{item.label} '{item.ref}' is gated",
                            "accept its terms on the hub page, then log in with hf auth login") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"{item.label} '{item.ref}' is not a {repo_type} repo on the hub",
                            f"check the id, log in (hf auth login) if it is private, or fix {item.set_key}") from None
    if item.kind == "dataset":
        card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else None
        rows, size = card_split_info(card, item.config, item.split)
        return Remote(info.sha, rows=rows, size=size)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    patterns = TOKENIZER_FILE_PATTERNS if item.name == "tokenizer" else MODEL_FILE_PATTERNS
    files = {f: sizes[f] for f in select_files(list(sizes), patterns)}
    if item.name != "tokenizer" and not any(f.endswith(".safetensors") for f in files):
        raise DownloadError(f"{item.label} '{item.ref}' has no safetensors weights at its top level",
                            "pick a repo or revision with model.safetensors: pickled weights are never loaded")
    return Remote(info.sha, files, _present(item.ref, info.sha, files, local_dir))


def _present(repo_id: str, sha: str, files: dict[str, int | None], local_dir: Path | None) -> set[str]:
    from huggingface_hub import try_to_load_from_cache

    have = set()
    for name, size in files.items():
        if local_dir is not None:
            path = local_dir / name
            found = path if path.is_file() else None
        else:
            cached = try_to_load_from_cache(repo_id, name, revision=sha)
            found = Path(cached) if isinstance(cached, str) else None
        if found is not None and (size is None or found.stat().st_size == size):
            have.add(name)
    return have


def _fetch_model(item: Item, remote: Remote, local_dir: Path | None, progress) -> dict:
    from huggingface_hub import snapshot_download

    # The requested revision (not the sha) so the cache records refs/<branch>: init looks parts up by branch.
    folder = Path(snapshot_download(item.ref, revision=item.revision, allow_patterns=list(remote.files),
                                    local_dir=str(local_dir) if local_dir is not None else None,
                                    tqdm_class=_rich_tqdm(progress, f"{item.ref}: ")))
    if local_dir is None and folder.name != remote.sha:  # the branch moved since it was resolved: record what came
        remote.sha = folder.name
    return {"repo_id": item.ref, "requested_revision": item.revision, "sha": remote.sha, "path": str(folder),
            **_files_entry(folder, list(remote.files))}


def _fetch_dataset(item: Item, remote: Remote, dest: Path | None, max_samples: int | None, console) -> dict:
    import datasets
    from datasets.exceptions import DatasetsError

    entry: dict[str, Any] = {"repo_id": item.ref, "requested_revision": item.revision, "sha": remote.sha,
                             "config": item.config, "split": item.split}
    if item.streaming and max_samples is None:
        return {**entry, "mode": "streaming", "rows": remote.rows, "path": None, "files": [], "size": None}
    try:
        if max_samples is not None:
            stream = datasets.load_dataset(item.ref, item.config, split=item.split, streaming=True,
                                           revision=remote.sha)
            features = stream.features  # as published (images decode on access), before turning decoding off
            stream = stream.decode(False)  # keep media bytes as stored: no decode / re-encode round trip
            with console.status(f"streaming the first {max_samples} rows of {item.display_ref}"):
                rows = list(islice(stream, max_samples))
            data = datasets.Dataset.from_list(rows, features=features)
            mode = f"first {max_samples}"
        else:
            with console.status(f"downloading {item.display_ref} (split {item.split})"):
                data = datasets.load_dataset(item.ref, item.config, split=item.split, revision=remote.sha)
            mode = "full"
    except (ValueError, DatasetsError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DownloadError(f"cannot load {item.label} ({item.display_ref}, split {item.split}): {reason}",
                            f"check config and split in the recipe's sources.{item.name}") from None
    entry.update(mode=mode, rows=len(data))
    if dest is None:
        files = [Path(f["filename"]) for f in data.cache_files]
        return {**entry, "path": str(files[0].parent) if files else None,
                **_files_entry(files[0].parent if files else Path("."), [f.name for f in files])}
    _save_atomically(data, dest)
    return {**entry, "path": str(dest), **_files_entry(dest, sorted(
        p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()))}


def _save_atomically(data, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        data.save_to_disk(str(tmp))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _files_entry(folder: Path, names: Sequence[str]) -> dict:
    files = [{"path": n, "size": (folder / n).stat().st_size} for n in names]
    return {"files": files, "size": sum(f["size"] for f in files)}


def _rich_tqdm(progress, prefix: str = ""):
    """A tqdm class that draws every bar huggingface_hub opens (files, bytes) as a task of a Rich Progress."""
    from tqdm.auto import tqdm as base

    class RichTqdm(base):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True  # tqdm keeps n / total; Rich does all the drawing
            super().__init__(*args, **kwargs)
            self._task = progress.add_task(prefix + (kwargs.get("desc") or ""), total=self.total, completed=self.n,
                                           bytes=kwargs.get("unit") == "B")

        def update(self, n=1):
            self.n += n or 0
            self.refresh()

        def refresh(self, *args, **kwargs):
            if hasattr(self, "_task"):
                progress.update(self._task, completed=self.n, total=self.total)

        def set_description(self, desc=None, refresh=True):
            if hasattr(self, "_task"):
                progress.update(self._task, description=prefix + (desc or ""))

        set_description_str = set_description

        def close(self):
            if hasattr(self, "_task"):
                self.refresh()

    return RichTqdm


def _progress(console):
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn)

    class Amount(ProgressColumn):
        def render(self, task):
            return (DownloadColumn() if task.fields.get("bytes") else MofNCompleteColumn()).render(task)

    return Progress(TextColumn("{task.description}"), BarColumn(), Amount(), TimeElapsedColumn(), console=console,
                    transient=True)


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def download(recipe, *, what: str = "all", stage: str | None = None, max_samples: int | None = None,
             out: str | os.PathLike | None = None, dry_run: bool = False, console=None) -> dict:
    """Fetch what `recipe` references from the hub. Returns the manifest (with --dry-run: the plan, nothing written).

    `out` None: models go to the Hugging Face cache (where init looks hub ids up), whole datasets to the `datasets`
    cache, --max-samples subsets and the manifest to $SMOLVLM_CACHE/downloads/RECIPE. `out` DIR: a self-contained
    folder to copy anywhere: DIR/models/OWNER--NAME, DIR/data/SOURCE (save_to_disk), DIR/manifest.json.
    A source with `streaming: true` is left for streaming (only its commit is recorded) unless --max-samples is set.
    """
    from huggingface_hub import HfApi, constants
    from rich.console import Console

    console = console or Console()
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples must be at least 1, got {max_samples}", "pass a positive row count")
    items = plan_downloads(recipe, what, stage)
    base = Path(out) if out is not None else default_download_dir(recipe.name)
    if base.exists() and not base.is_dir():
        raise OutputError(f"--out '{base}' is a file", "pass a folder")
    manifest_path = base / MANIFEST_NAME
    old = read_manifest(manifest_path) if manifest_path.is_file() else {"models": {}, "datasets": {}}
    todo = [i for i in items if i.skip is None]

    def model_dir(item: Item) -> Path | None:
        return base / "models" / item.ref.replace("/", "--") if out is not None else None

    if not todo:
        _print_table(console, [_row(i, None, f"skipped: {i.skip}") for i in items], f"{recipe.name}: nothing to fetch")
        return old
    if offline_requested():
        _raise_missing([i for i in todo if not _present_in_manifest(old, i)], "HF_HUB_OFFLINE is set")
        rows = []
        for i in items:
            rows.append(_row(i, None, "present (offline)" if i.skip is None else f"skipped: {i.skip}"))
            if i.skip is None:
                rows[-1]["revision"] = old["models" if i.kind == "model" else "datasets"][i.name]["sha"][:12]
        _print_table(console, rows, f"{recipe.name}: offline, nothing fetched")
        return old

    api = HfApi()
    remotes: dict[tuple[str, str], Remote] = {}
    unreachable, failure = [], None
    for item in todo:  # resolve everything first: one error lists every unreachable item, nothing half-fetched
        try:
            remotes[item.kind, item.name] = _resolve(api, item, model_dir(item) if item.kind == "model" else None)
        except _network_errors() as e:
            unreachable.append(item)
            failure = failure or e
    if unreachable:
        _raise_missing(unreachable, f"the hub ({constants.ENDPOINT}) cannot be reached ({type(failure).__name__})")

    if dry_run:
        rows = [_row(i, remotes.get((i.kind, i.name)), _dry_status(i, remotes.get((i.kind, i.name)), max_samples))
                for i in items]
        _print_table(console, rows, f"{recipe.name}: would fetch (dry run, nothing written)")
        return {"dry_run": True, "items": rows}

    models, data, statuses = {}, {}, {}
    for item in todo:
        remote = remotes[item.kind, item.name]
        try:
            if item.kind == "model":
                with _progress(console) as progress:
                    models[item.name] = _fetch_model(item, remote, model_dir(item), progress)
                statuses[item.name] = _fetched_status(remote)
            else:
                dest = base / "data" / item.name if (out is not None or max_samples is not None) else None
                data[item.name] = entry = _fetch_dataset(item, remote, dest, max_samples, console)
                statuses[item.name] = ("left for streaming" if entry["mode"] == "streaming"
                                       else f"{entry['mode']}: {entry['rows']} rows")
        except _network_errors() as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DownloadError(f"downloading {item.label} {item.display_ref} failed: {reason}",
                                "run the same command again: finished files are kept, partial ones resume") from None
    manifest = _write_manifest(manifest_path, recipe.name, models, data)
    rows = []
    for item in items:
        if item.skip is not None:
            rows.append(_row(item, None, f"skipped: {item.skip}"))
        else:
            entry = (manifest["models"] if item.kind == "model" else manifest["datasets"])[item.name]
            rows.append(_row(item, remotes[item.kind, item.name], statuses[item.name], entry))
    _print_table(console, rows, f"{recipe.name}: downloads (manifest: {manifest_path})")
    _print_overrides(console, todo, manifest, out is not None)
    return manifest


def _fetched_status(remote: Remote) -> str:
    new = [f for f in remote.files if f not in remote.present]
    if not new:
        return "already present"
    return f"fetched {len(new)} of {len(remote.files)} files ({_size(sum(remote.files[f] or 0 for f in new))})"


def _raise_missing(missing: list[Item], why: str) -> None:
    if not missing:
        return
    names = ", ".join(f"{i.label} {i.display_ref}" for i in missing)
    overrides = " ".join(f"--set {i.set_key}={_placeholder(i)}" for i in missing)
    raise DownloadError(f"cannot download: {why}; not available locally: {names}",
                        f"run smolvlm download where the hub is reachable (--out DIR, then copy DIR here), or point "
                        f"the recipe at local copies: {overrides}")


def _placeholder(item: Item) -> str:
    if item.kind == "dataset":
        return "/path/to/data"
    return "/path/to/model.gguf" if item.name == "text" else f"/path/to/{item.name}-folder"


def _dry_status(item: Item, remote: Remote | None, max_samples: int | None) -> str:
    if item.skip is not None:
        return f"skipped: {item.skip}"
    if item.kind == "dataset":
        if max_samples is not None:
            return f"would stream the first {max_samples} rows"
        return "would leave for streaming" if item.streaming else "would download the split"
    new = [f for f in remote.files if f not in remote.present]
    if not new:
        return "already present"
    sizes = [remote.files[f] for f in new]
    size = _size(sum(s or 0 for s in sizes)) + ("+" if None in sizes else "")
    return f"would fetch {len(new)} of {len(remote.files)} files ({size})"


def _row(item: Item, remote: Remote | None, status: str, entry: dict | None = None) -> dict:
    if remote is None:
        files, size = "", ""
    elif item.kind == "model":
        files = ", ".join(remote.files)
        size = _size(sum(s or 0 for s in remote.files.values()))
    else:
        files = f"{entry['rows']} rows" if entry and entry.get("rows") is not None else (
            f"{remote.rows} rows" if remote.rows is not None else "rows unknown")
        size = _size(entry["size"]) if entry and entry.get("size") else (
            _size(remote.size) if remote.size is not None else "unknown")
    return {"kind": item.kind, "name": item.name, "ref": item.display_ref,
            "revision": remote.sha[:12] if remote else (item.revision or ""), "files": files, "size": size,
            "status": status}


def _size(n: int) -> str:
    from rich.filesize import decimal

    return decimal(n)


def _print_table(console, rows: list[dict], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("kind", "name", "ref", "revision", "files", "size", "status"):
        table.add_column(column, overflow="fold", justify="right" if column == "size" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("kind", "name", "ref", "revision", "files", "size", "status")))
    console.print(table)


def _print_overrides(console, todo: list[Item], manifest: dict, always: bool) -> None:
    """Local copies only help if the recipe points at them: print the --set flags that do."""
    flags = []
    for item in todo:
        entry = (manifest["models"] if item.kind == "model" else manifest["datasets"])[item.name]
        local = always or (item.kind == "dataset" and entry.get("mode", "").startswith("first"))
        if local and entry.get("path"):
            flags.append(f"--set {item.set_key}={entry['path']}")
    if flags:
        console.print("use the local copies with: " + " ".join(flags), soft_wrap=True, highlight=False)


def cli_download(recipe: str | os.PathLike, what: str = "all", stage: str | None = None,
                 max_samples: int | None = None, out: str | os.PathLike | None = None,
                 overrides: Sequence[str] = (), dry_run: bool = False, console=None) -> dict:
    """`smolvlm download`: load the recipe (with --set overrides) and fetch what it references."""
    from .recipe import load_recipe

    return download(load_recipe(recipe, list(overrides)), what=what, stage=stage, max_samples=max_samples,
                    out=out, dry_run=dry_run, console=console)
