# Where an eval task's rows come from: the hub through `datasets`, a local folder of parquet files with the hub
# dataset's columns, or the synthetic generator's test JSONL. Rows are yielded lazily; images decode per row.
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import UserError
from .tasks import BuildContext, Item, Task


@dataclass
class RowSource:
    """Rows of one (sub)set of a task, and the folder JSONL media paths are relative to."""

    config: str | None
    rows: Sequence  # a datasets.Dataset or a list of dicts
    data_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)


def offline_hint(task: Task) -> str:
    return (f"download it while online, or pass a local copy: --dataset-path {task.name}=FOLDER "
            f"(parquet files with the hub dataset's columns{', one subfolder per subset' if task.configs else ''})")


def check_sources(task: Task, dataset_path: Path | None, media_root: Path | None) -> None:
    """The cheap checks, run for every task before any generation so a long run does not fail half-way."""
    if task.family == "synthetic" and dataset_path is None:
        raise UserError(f"task '{task.name}' reads the synthetic test set but no folder was given",
                        "pass --dataset-path synthetic=DIR (the folder the synthetic data generator wrote)")
    if dataset_path is not None and not Path(dataset_path).exists():
        raise UserError(f"dataset folder for {task.name} not found: {dataset_path}", "check --dataset-path")
    if task.needs_media_root:
        if media_root is None:
            raise UserError(f"task '{task.name}' reads videos but no media folder was given",
                            f"pass --media-root {task.name}=FOLDER (the folder holding the benchmark's videos)")
        if not Path(media_root).is_dir():
            raise UserError(f"media folder for {task.name} not found: {media_root}", "check --media-root")


def row_sources(task: Task, dataset_path: Path | None = None, limit: int | None = None) -> list[RowSource]:
    """The task's rows, at most `limit` per (sub)set."""
    if task.family == "synthetic":
        return [_synthetic_rows(task, Path(dataset_path) if dataset_path else None, limit)]
    if dataset_path is not None:
        return _local_rows(task, Path(dataset_path), limit)
    return _hub_rows(task, limit)


def iter_items(task: Task, sources: list[RowSource], prompt_style: str, media_root: Path | None,
               shard: tuple[int, int] = (0, 1)) -> Iterator[Item]:
    """The task's items in order. With shard=(rank, world), only the items at positions rank, rank + world, ...
    (counted over all the sources): the others are never built, so their images are never decoded."""
    rank, world = shard
    position = -1
    for source in sources:
        for index in range(len(source.rows)):
            position += 1
            if position % world == rank:
                ctx = BuildContext(task.name, prompt_style, source.config, index,
                                   Path(media_root) if media_root else None, source.data_dir)
                yield task.build(source.rows[index], ctx)


def _synthetic_rows(task: Task, folder: Path | None, limit: int | None) -> RowSource:
    short = task.name.removeprefix("synthetic_")
    candidates = [folder / "test" / f"{short}.jsonl", folder / f"{short}.jsonl"] if folder else []
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise UserError(f"no test file for {task.name} under {folder}",
                        f"expected {candidates[0] if candidates else 'DIR/test/' + short + '.jsonl'}; "
                        "pass --dataset-path synthetic=DIR (the folder the synthetic generator wrote)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {n} is not valid JSON ({e.msg})", "re-create the file") from None
            if limit is not None and len(rows) >= limit:
                break
    return RowSource(None, rows, path.parent)


def _parquet_files(folder: Path, split: str) -> list[Path]:
    files = sorted(folder.rglob("*.parquet"))
    chosen = [f for f in files if f.name.startswith(split) or f.parent.name == split]
    return chosen or files


def _read_parquet(files: list[Path], limit: int | None):
    import datasets

    if limit is None:
        # Memory-mapped through the datasets cache: full benchmarks hold thousands of large images.
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches, n = [], 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=max(1, min(limit, 256))):
            batches.append(batch.slice(0, limit - n))
            n += batches[-1].num_rows
            if n >= limit:
                break
        if n >= limit:
            break
    schema = pq.read_schema(files[0])
    table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    # The schema's "huggingface" metadata restores the features, so image columns decode to PIL images.
    return datasets.Dataset(table)


def _local_rows(task: Task, folder: Path, limit: int | None) -> list[RowSource]:
    if task.configs:
        subsets = [(c, folder / c) for c in task.configs if (folder / c).is_dir()]
        if not subsets:
            raise UserError(f"{folder} holds no subset folder of {task.title}",
                            f"expected one folder per subset, e.g. {folder / task.configs[0]}, holding parquet files")
    else:
        sub = folder / task.config if task.config and (folder / task.config).is_dir() else folder
        subsets = [(task.config, sub)]
    sources = []
    for config, sub in subsets:
        files = _parquet_files(sub, task.split)
        if not files:
            raise UserError(f"no parquet files under {sub} for {task.title}",
                            "pass a folder of parquet files with the hub dataset's columns")
        sources.append(RowSource(config, _read_parquet(files, limit)))
    return sources


# lmms-eval moved the lmms-lab benchmark copies: image sets to lmms-lab-encoder/, video sets to lmms-eval/
MOVED_ORGS = {"image": ("lmms-lab-encoder", "lmms-eval"), "video": ("lmms-eval", "lmms-lab-encoder")}


def dataset_ids(task: Task) -> list[str]:
    """The hub ids a task's dataset goes by, in the order tried: its lmms-lab/* id, then the ids lmms-eval moved it
    to. Ids outside lmms-lab are not aliased."""
    org, _, name = task.dataset.partition("/")
    if org != "lmms-lab":
        return [task.dataset]
    return [task.dataset, *(f"{o}/{name}" for o in MOVED_ORGS.get(task.family, ()))]


def _hub_rows(task: Task, limit: int | None) -> list[RowSource]:
    split = task.split if limit is None else f"{task.split}[:{limit}]"
    return [RowSource(config, _load_any(task, config, split)) for config in task.configs or (task.config,)]


def _load_any(task: Task, config: str | None, split: str):
    """The first of the task's dataset ids that loads (from the hub, or the local cache when offline)."""
    import datasets

    reasons = []
    for dataset_id in dataset_ids(task):
        try:
            return datasets.load_dataset(dataset_id, config, split=split)
        except Exception as e:  # offline, missing, gated: all end the same way for the user
            reasons.append(f"{dataset_id}: {(str(e).strip().splitlines() or [type(e).__name__])[0][:120]}")
    subset = f" ({config})" if config else ""
    raise UserError(f"dataset {task.dataset}{subset} for {task.name} is not available ({'; '.join(reasons)})",
                    offline_hint(task))
