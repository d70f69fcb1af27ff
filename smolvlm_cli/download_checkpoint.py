# `smolvlm download --model ID`: fetch a released SmolVLM checkpoint (its top-level weights, config, processor and
# tokenizer files) into the Hugging Face cache or a folder, and find it there again for `train-* --init ID`.
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .download import (CHECKPOINT, MANIFEST_NAME, Item, _dry_run, _fetch_all, _model_dir,
                       _raise_missing, _report, _resolve_all, default_download_dir, offline_requested,
                       present_in_manifest, read_or_empty, write_manifest)
from .download_report import print_table, row
from .errors import OutputError, UserError

EXAMPLE = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"


def looks_like_hub_id(ref: str) -> bool:
    from .parts import HUB_ID

    return not ref.startswith((".", "/", "~")) and HUB_ID.match(ref) is not None


def checkpoint_item(model_id: str, revision: str | None = None) -> Item:
    if not looks_like_hub_id(model_id):
        raise UserError(f"--model '{model_id}' is not a hub model id",
                        f"pass owner/name, e.g. {EXAMPLE}; a local checkpoint folder needs no download: pass it to "
                        "train-vision / train-video --init")
    return Item("model", CHECKPOINT, model_id, revision)


def cached_checkpoint(repo_id: str, revision: str | None = None, local_dir: Path | None = None) -> Path | None:
    """The folder of a downloaded checkpoint (`local_dir`, else the Hugging Face cache's snapshot of `revision`) if it
    holds a config and safetensors weights; None if not. Never reaches the network."""
    if local_dir is not None:
        folder = local_dir
    else:
        from huggingface_hub import errors, snapshot_download

        incomplete = getattr(errors, "IncompleteSnapshotError", ())  # download fetches only the files it needs
        try:
            folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
        except incomplete as e:
            folder = Path(e.snapshot_path)
        except (errors.LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            return None
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    return None


def download_checkpoint(model_id: str, revision: str | None = None, out: str | os.PathLike | None = None,
                        dry_run: bool = False, console=None) -> dict:
    """Fetch a released checkpoint. Returns the manifest (with --dry-run: the plan, nothing written).

    `out` None: the files go to the Hugging Face cache (where `--init ID` finds them), the manifest to
    $SMOLVLM_CACHE/downloads/OWNER--NAME. `out` DIR: DIR/models/OWNER--NAME and DIR/manifest.json, as for a recipe."""
    from rich.console import Console

    console = console or Console()
    item = checkpoint_item(model_id, revision)
    base = Path(out) if out is not None else default_download_dir(model_id.replace("/", "--"))
    if base.exists() and not base.is_dir():
        raise OutputError(f"--out '{base}' is a file", "pass a folder")
    manifest_path = base / MANIFEST_NAME
    old = read_or_empty(manifest_path)
    local = base if out is not None else None
    if offline_requested():
        return _offline(console, item, local, old)
    remotes = _resolve_all([item], local)
    if dry_run:
        return _dry_run(console, model_id, [item], remotes, None)
    models, _, statuses = _fetch_all([item], remotes, local, base, None, console)
    manifest = write_manifest(manifest_path, model_id, models, {})
    _report(console, f"{model_id}: downloads (manifest: {manifest_path})", [item], remotes, statuses, manifest)
    folder = Path(models[CHECKPOINT]["path"])
    _print_next(console, model_id if local is None else str(folder), folder)
    return manifest


def _offline(console, item: Item, local: Path | None, old: dict) -> dict:
    """HF_HUB_OFFLINE: succeed if the checkpoint is already here (recorded by a manifest, or found in the cache)."""
    entry = old["models"][CHECKPOINT] if present_in_manifest(old, item) else None
    folder = Path(entry["path"]) if entry else cached_checkpoint(item.ref, item.revision, _model_dir(local, item))
    if folder is None:
        _raise_missing([item], "HF_HUB_OFFLINE is set")
    status = row(item, None, "present (offline)")
    status["revision"] = entry["sha"][:12] if entry else (folder.name[:12] if local is None else item.revision or "")
    print_table(console, [status], f"{item.ref}: offline, nothing fetched")
    _print_next(console, item.ref if local is None else str(folder), folder)
    return old


def _print_next(console, init: str, folder: Path) -> None:
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        model_type = None
    if model_type == "idefics3":
        console.print("note: this is an Idefics3 (SmolVLM v1) checkpoint; --init takes SmolVLM2 checkpoints "
                      "(model_type smolvlm) only for now", soft_wrap=True, highlight=False)
    console.print(f"train from it with: smolvlm train-vision --recipe RECIPE --init {init} --out RUN",
                  soft_wrap=True, highlight=False)


def cli_download_any(recipe: str | os.PathLike | None, model: str | None, revision: str | None = None,
                     what: str | None = None, stage: str | None = None, max_samples: int | None = None,
                     out: str | os.PathLike | None = None, overrides: Sequence[str] = (), dry_run: bool = False,
                     console=None) -> dict:
    """`smolvlm download`: a recipe's parts and data (--recipe), or a released checkpoint (--model)."""
    if model is None:
        if recipe is None:
            raise UserError("smolvlm download needs --recipe or --model",
                            "pass --recipe recipes/NAME.yaml for a recipe's parts and data, or --model OWNER/NAME "
                            f"for a released checkpoint, e.g. --model {EXAMPLE}")
        if revision is not None:
            raise UserError("--revision goes with --model",
                            "a recipe states its parts' revisions itself: --set model.vision.revision=REV")
        from .download import cli_download

        return cli_download(recipe, what=what or "all", stage=stage, max_samples=max_samples, out=out,
                            overrides=overrides, dry_run=dry_run, console=console)
    given = [flag for flag, value in (("--recipe", recipe), ("--what", what), ("--stage", stage),
                                      ("--max-samples", max_samples), ("--set", list(overrides) or None))
             if value is not None]
    if given:
        raise UserError(f"{given[0]} does not go with --model",
                        "fetch a released checkpoint (--model) and a recipe's parts and data (--recipe) with two "
                        "smolvlm download commands")
    return download_checkpoint(model, revision, out=out, dry_run=dry_run, console=console)

