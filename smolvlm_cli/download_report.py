# What `smolvlm download` shows: the Rich progress bars huggingface_hub's downloads draw into, the table of items
# (planned, fetched, skipped) with sizes and statuses, and the --set flags that point a recipe at local copies.
from __future__ import annotations


def rich_tqdm(progress, prefix: str = ""):
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


def progress_bars(console):
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn)

    class Amount(ProgressColumn):
        def render(self, task):
            return (DownloadColumn() if task.fields.get("bytes") else MofNCompleteColumn()).render(task)

    return Progress(TextColumn("{task.description}"), BarColumn(), Amount(), TimeElapsedColumn(), console=console,
                    transient=True)


def size_text(n: int) -> str:
    from rich.filesize import decimal

    return decimal(n)


def sizes_text(sizes) -> str:
    """Total of sizes some of which the hub may not state ("+": at least this much)."""
    sizes = list(sizes)
    return size_text(sum(s or 0 for s in sizes)) + ("+" if None in sizes else "")


def fetched_status(remote) -> str:
    new = [f for f in remote.files if f not in remote.present]
    if not new:
        return "already present"
    return f"fetched {len(new)} of {len(remote.files)} files ({size_text(sum(remote.files[f] or 0 for f in new))})"


def dry_status(item, remote, max_samples: int | None) -> str:
    if item.skip is not None:
        return f"skipped: {item.skip}"
    if item.kind == "dataset":
        if max_samples is not None:
            return f"would stream the first {max_samples} rows"
        return "would leave for streaming" if item.streaming else "would download the split"
    new = [f for f in remote.files if f not in remote.present]
    if not new:
        return "already present"
    return f"would fetch {len(new)} of {len(remote.files)} files ({sizes_text(remote.files[f] for f in new)})"


def row(item, remote, status: str, entry: dict | None = None) -> dict:
    if remote is None:
        files, size = "", ""
    elif item.kind == "model":
        files = ", ".join(remote.files)
        size = size_text(sum(s or 0 for s in remote.files.values()))
    else:
        files = f"{entry['rows']} rows" if entry and entry.get("rows") is not None else (
            f"{remote.rows} rows" if remote.rows is not None else "rows unknown")
        size = size_text(entry["size"]) if entry and entry.get("size") else (
            size_text(remote.size) if remote.size is not None else "unknown")
    return {"kind": item.kind, "name": item.name, "ref": item.display_ref,
            "revision": remote.sha[:12] if remote else (item.revision or ""), "files": files, "size": size,
            "status": status}


def media_row(item, remote, status: str) -> dict:
    """The media archives of a dataset source, as one more table row after the source's own."""
    archives = remote.archives or []
    return {"kind": "media", "name": item.name, "ref": item.ref, "revision": remote.sha[:12],
            "files": f"{len(archives)} archives", "size": sizes_text(a.size for a in archives) if archives else "",
            "status": status}


MAX_SAMPLES_MEDIA = "skipped with --max-samples (run without it to fetch the media archives)"


def media_dry_status(target, remote, max_samples: int | None) -> str:
    from .media_archives import pending

    if not remote.archives:
        return "no media archives in the repo"
    if max_samples is not None:
        return MAX_SAMPLES_MEDIA
    todo = pending(target, remote.archives)
    if not todo:
        return f"already unpacked in {target.root}"
    return (f"would fetch and unpack {len(todo)} of {len(remote.archives)} archives "
            f"({sizes_text(a.size for a in todo)}) into {target.root}")


def archive_rows(target, remote, max_samples: int | None) -> list[dict]:
    """One row per media archive of a source, for --dry-run."""
    from .media_archives import pending

    todo = set(pending(target, remote.archives or []))
    rows = [{"source": target.source, "archive": a.path, "size": size_text(a.size) if a.size is not None else "?",
             "status": "skipped with --max-samples" if max_samples is not None else (
                 "would unpack" if a in todo else "unpacked")} for a in remote.archives or []]
    rows += [{"source": target.source, "archive": a.path, "size": size_text(a.size) if a.size is not None else "?",
              "status": "left out: a split zip (merge with zip -s 0, then unpack)"} for a in remote.split_zips]
    return rows


COLUMNS = ("kind", "name", "ref", "revision", "files", "size", "status")


def print_table(console, rows: list[dict], title: str, columns: tuple[str, ...] = COLUMNS) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold", justify="right" if column == "size" else "left")
    for values in rows:
        table.add_row(*(str(values[c]) for c in columns))
    console.print(table)


def print_overrides(console, todo: list, manifest: dict, always: bool) -> None:
    """Local copies only help if the recipe points at them: print the --set flags that do."""
    flags = []
    for item in todo:
        entry = (manifest["models"] if item.kind == "model" else manifest["datasets"])[item.name]
        local = always or (item.kind == "dataset" and entry.get("mode", "").startswith("first"))
        if local and entry.get("path"):
            flags.append(f"--set {item.set_key}={entry['path']}")
    if flags:
        console.print("use the local copies with: " + " ".join(flags), soft_wrap=True, highlight=False)
