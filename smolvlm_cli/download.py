# `smolvlm download`: fetch a recipe's hub model parts (snapshot downloads of weights, config and tokenizer files),
# hub datasets and their media archives, and record ids, commits, files and sizes in a manifest init and train keep.
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Sequence

# planning, manifest and report helpers live in their own modules; the names other modules import stay here too
from .download_manifest import (MANIFEST_NAME, default_download_dir, present_in_manifest, read_manifest,  # noqa: F401
                                read_or_empty, recorded_manifest, write_manifest)
from .download_plan import (CHECKPOINT, MODEL_FILE_PATTERNS, TOKENIZER_FILE_PATTERNS, Item,  # noqa: F401
                            card_split_info, plan_downloads, select_files)
from .download_report import (MAX_SAMPLES_MEDIA, archive_rows, dry_status, fetched_status, media_dry_status,
                              media_row, print_overrides, print_table, progress_bars, rich_tqdm, row)
from .errors import OutputError, UserError
from .media_archives import Archive, Target, archives_from_siblings, fetch_media, select_archives


class DownloadError(UserError):
    """Something the recipe names cannot be fetched (offline, unknown repo, unreadable dataset)."""


@dataclass
class Remote:
    """What the hub says about an item at its resolved commit."""

    sha: str
    files: dict[str, int | None] = field(default_factory=dict)  # models: the files to fetch and their sizes
    present: set[str] = field(default_factory=set)  # of those, already on disk
    rows: int | None = None  # datasets: from the dataset card, when it says
    size: int | None = None
    archives: list[Archive] | None = None  # datasets with a media root: the repo's media archives to unpack
    split_zips: list[Archive] = field(default_factory=list)  # ... and those zipfile cannot read (multi-part)


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
            info = api.dataset_info(item.ref, revision=item.revision, files_metadata=item.media_root is not None)
    except RevisionNotFoundError:
        where = "--revision" if _is_checkpoint(item) else "the revision in the recipe"
        raise DownloadError(f"{item.label} '{item.ref}' has no revision '{item.revision}'",
                            f"fix {where} (a branch, tag or commit sha)") from None
    except GatedRepoError:
        raise DownloadError(f"{item.label} '{item.ref}' is gated",
                            "accept its terms on the hub page, then log in with hf auth login") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"{item.label} '{item.ref}' is not a {repo_type} repo on the hub",
                            f"check the id, log in (hf auth login) if it is private, or fix {item.set_key}") from None
    if item.kind == "dataset":
        card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else None
        rows, size = card_split_info(card, item.config, item.split)
        remote = Remote(info.sha, rows=rows, size=size)
        if item.media_root is not None:
            remote.archives, remote.split_zips = select_archives(archives_from_siblings(info.siblings), item.config)
        return remote
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
                                    tqdm_class=rich_tqdm(progress, f"{item.ref}: ")))
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
    A source with a `media_root` also gets its repo's media archives (tar, tar.gz, zip) unpacked there, whatever
    `out` is (the trainer reads media from the media root), except with --max-samples.
    """
    from rich.console import Console

    console = console or Console()
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples must be at least 1, got {max_samples}", "pass a positive row count")
    items = plan_downloads(recipe, what, stage)
    base = Path(out) if out is not None else default_download_dir(recipe.name)
    if base.exists() and not base.is_dir():
        raise OutputError(f"--out '{base}' is a file", "pass a folder")
    manifest_path = base / MANIFEST_NAME
    old = read_or_empty(manifest_path)
    if all(i.skip is not None for i in items):
        print_table(console, [row(i, None, f"skipped: {i.skip}") for i in items], f"{recipe.name}: nothing to fetch")
        return old
    if offline_requested():
        return _offline(console, recipe.name, items, old)
    local = base if out is not None else None
    remotes = _resolve_all(items, local)
    if dry_run:
        return _dry_run(console, recipe.name, items, remotes, max_samples)
    models, data, statuses = _fetch_all(items, remotes, local, base, max_samples, console)
    manifest = write_manifest(manifest_path, recipe.name, models, data)
    _report(console, f"{recipe.name}: downloads (manifest: {manifest_path})", items, remotes, statuses, manifest)
    print_overrides(console, [i for i in items if i.skip is None], manifest, out is not None)
    return manifest


def _model_dir(local: Path | None, item: Item) -> Path | None:
    return local / "models" / item.ref.replace("/", "--") if local is not None else None


def _media_target(item: Item, remote: Remote) -> Target:
    return Target(item.name, item.ref, remote.sha, Path(item.media_root).expanduser().absolute())


def _offline(console, name: str, items: list[Item], old: dict) -> dict:
    _raise_missing([i for i in items if i.skip is None and not present_in_manifest(old, i)], "HF_HUB_OFFLINE is set")
    rows = []
    for i in items:
        rows.append(row(i, None, "present (offline)" if i.skip is None else f"skipped: {i.skip}"))
        if i.skip is None:
            rows[-1]["revision"] = old["models" if i.kind == "model" else "datasets"][i.name]["sha"][:12]
    print_table(console, rows, f"{name}: offline, nothing fetched")
    return old


def _resolve_all(items: list[Item], local: Path | None) -> dict[tuple[str, str], Remote]:
    """Resolve everything before fetching anything: one error lists every unreachable item, nothing half-fetched."""
    from huggingface_hub import HfApi, constants

    api = HfApi()
    remotes: dict[tuple[str, str], Remote] = {}
    unreachable, failure = [], None
    for item in (i for i in items if i.skip is None):
        try:
            remotes[item.kind, item.name] = _resolve(api, item, _model_dir(local, item))
        except _network_errors() as e:
            unreachable.append(item)
            failure = failure or e
    if unreachable:
        _raise_missing(unreachable, f"the hub ({constants.ENDPOINT}) cannot be reached ({type(failure).__name__})")
    return remotes


def _dry_run(console, name: str, items: list[Item], remotes: dict, max_samples: int | None) -> dict:
    rows, archives = [], []
    for item in items:
        remote = remotes.get((item.kind, item.name))
        rows.append(row(item, remote, dry_status(item, remote, max_samples)))
        if remote is not None and remote.archives is not None:
            target = _media_target(item, remote)
            rows.append(media_row(item, remote, media_dry_status(target, remote, max_samples)))
            archives.extend(archive_rows(target, remote, max_samples))
    print_table(console, rows, f"{name}: would fetch (dry run, nothing written)")
    if archives:
        print_table(console, archives, f"{name}: media archives", ("source", "archive", "size", "status"))
    return {"dry_run": True, "items": rows, "archives": archives}


def _fetch_all(items: list[Item], remotes: dict, local: Path | None, base: Path, max_samples: int | None, console):
    """Fetch every item: (model entries, dataset entries, status per (kind, name), with kind "media" for archives)."""
    models, data, statuses = {}, {}, {}
    for item in (i for i in items if i.skip is None):
        remote = remotes[item.kind, item.name]
        try:
            if item.kind == "model":
                with progress_bars(console) as progress:
                    models[item.name] = _fetch_model(item, remote, _model_dir(local, item), progress)
                statuses[item.kind, item.name] = fetched_status(remote)
                continue
            dest = base / "data" / item.name if (local is not None or max_samples is not None) else None
            data[item.name] = entry = _fetch_dataset(item, remote, dest, max_samples, console)
            statuses[item.kind, item.name] = ("left for streaming" if entry["mode"] == "streaming"
                                              else f"{entry['mode']}: {entry['rows']} rows")
            if remote.archives is not None:
                statuses["media", item.name] = _fetch_media(item, remote, entry, max_samples, console)
        except _network_errors() as e:
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(f"no space left on the device while downloading {item.label} {item.display_ref}",
                                    "free space, then run the same command again") from None
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DownloadError(f"downloading {item.label} {item.display_ref} failed: {reason}",
                                "run the same command again: finished files are kept, partial ones resume") from None
    return models, data, statuses


def _fetch_media(item: Item, remote: Remote, entry: dict, max_samples: int | None, console) -> str:
    if max_samples is not None:
        return MAX_SAMPLES_MEDIA
    entry["media"], status = fetch_media(_media_target(item, remote), remote.archives, console)
    if remote.split_zips:
        status += "; left out split zips (merge with zip -s 0, then unpack): " + ", ".join(
            a.path for a in remote.split_zips)
    return status


def _report(console, title: str, items: list[Item], remotes: dict, statuses: dict, manifest: dict) -> None:
    rows = []
    for item in items:
        if item.skip is not None:
            rows.append(row(item, None, f"skipped: {item.skip}"))
            continue
        entry = (manifest["models"] if item.kind == "model" else manifest["datasets"])[item.name]
        remote = remotes[item.kind, item.name]
        rows.append(row(item, remote, statuses[item.kind, item.name], entry))
        if ("media", item.name) in statuses:
            rows.append(media_row(item, remote, statuses["media", item.name]))
    print_table(console, rows, title)


def _raise_missing(missing: list[Item], why: str) -> None:
    if not missing:
        return
    names = ", ".join(f"{i.label} {i.display_ref}" for i in missing)
    overrides = " ".join(f"--set {i.set_key}={_placeholder(i)}" for i in missing if not _is_checkpoint(i))
    local = [f"point the recipe at local copies: {overrides}"] if overrides else []
    if any(_is_checkpoint(i) for i in missing):  # a whole model is not a recipe part: training takes it as --init
        local.append("train from a local copy: --init /path/to/folder")
    raise DownloadError(f"cannot download: {why}; not available locally: {names}",
                        f"run smolvlm download where the hub is reachable (--out DIR, then copy DIR here), or "
                        + ", or ".join(local))


def _is_checkpoint(item: Item) -> bool:
    return item.kind == "model" and item.name == CHECKPOINT


def _placeholder(item: Item) -> str:
    if item.kind == "dataset":
        return "/path/to/data"
    return "/path/to/model.gguf" if item.name == "text" else f"/path/to/{item.name}-folder"


def cli_download(recipe: str | os.PathLike, what: str = "all", stage: str | None = None,
                 max_samples: int | None = None, out: str | os.PathLike | None = None,
                 overrides: Sequence[str] = (), dry_run: bool = False, console=None) -> dict:
    """`smolvlm download`: load the recipe (with --set overrides) and fetch what it references."""
    from .recipe import load_recipe

    return download(load_recipe(recipe, list(overrides)), what=what, stage=stage, max_samples=max_samples,
                    out=out, dry_run=dry_run, console=console)
