# Open a data source (hub id, parquet/JSON/JSONL file or folder, save_to_disk folder) as indexed rows,
# shard it across ranks, and turn rows into Samples through adapters.py. `datasets` does the reading.
from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as strict_dataclass

from ..errors import UserError
from ..parts import HUB_ID
from .adapters import SCHEMAS, detect_schema, schema_problems, to_sample
from .sample import Sample, SampleError

FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow", ".csv": "csv"}
# A Hugging Face image folder: its metadata file holds the rows (`file_name` relative to the folder, schema qa).
IMAGE_FOLDER_METADATA = ("metadata.jsonl", "metadata.csv")
LOCAL_COPY_HINT = "point path at a local copy: a .parquet/.jsonl/.json file, a folder of them, or a save_to_disk folder"


class SourceError(UserError):
    """A data source cannot be found or opened."""


@strict_dataclass(config=ConfigDict(extra="forbid"))
class SourceSpec:
    """Where rows come from and how to read them; recipes embed it under their data sources."""

    path: str  # hub id or local path
    config: str | None = None  # hub subset, e.g. "ai2d" for HuggingFaceM4/the_cauldron
    split: str = "train"  # ignored for a single local file (its one split)
    schema: Literal[
        "auto", "cauldron", "llava", "chat", "jsonl",
        "m4instruct", "videostar", "finevideo", "vript", "moviechat", "sharegpt4video", "qa",
    ] = "auto"
    media_root: str | None = None  # relative media paths resolve here; default: the local file's folder
    streaming: bool = False
    revision: str | None = None
    name: str | None = None  # the Sample.source label; default derived from path and config

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.config:
            return f"{self.path}:{self.config}"
        return self.path


@dataclass
class Source:
    """An opened source: `datasets` rows plus what the adapters need (label, schema, media root)."""

    spec: SourceSpec
    data: Any  # datasets.Dataset, or datasets.IterableDataset when streaming
    media_root: Path | None

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def streaming(self) -> bool:
        import datasets

        return isinstance(self.data, datasets.IterableDataset)

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError(f"streaming source '{self.name}' has no length")
        return len(self.data)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        return self.rows()

    def rows(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[int, dict]]:
        """(index, row) for this rank's share. Indices are unique across ranks and stable between runs;
        map-style indices are row positions, streaming ones are rank-local position * world_size + rank."""
        part = shard(self.data, rank, world_size)
        if self.streaming:
            for i, row in enumerate(part):
                yield i * world_size + rank, row
        else:
            start = shard_range(len(self.data), rank, world_size).start
            for i, row in enumerate(part):
                yield start + i, row

    def to_sample(self, index: int, row: dict) -> Sample:
        return to_sample(row, index=index, source=self.name, schema=self.spec.schema, media_root=self.media_root)

    def sample(self, index: int) -> Sample:
        """Random access for map-style sources (mixtures draw indices)."""
        if self.streaming:
            raise TypeError(f"streaming source '{self.name}' has no random access")
        return self.to_sample(index, self.data[index])

    def samples(self, rank: int = 0, world_size: int = 1, skipped: Counter | None = None) -> Iterator[Sample]:
        """Samples of this rank's share. Bad rows raise, unless `skipped` is given: then they are counted
        there by reason, so the caller can report them (never dropped without a trace)."""
        for index, row in self.rows(rank, world_size):
            try:
                yield self.to_sample(index, row)
            except SampleError as e:
                if skipped is None:
                    raise
                skipped[e.reason] += 1


def load_source(spec: SourceSpec | str) -> Source:
    """Open a source: a local file or folder if `path` exists, else a hub id through `datasets.load_dataset`."""
    if isinstance(spec, str):
        spec = SourceSpec(path=spec)
    path = Path(spec.path).expanduser()
    if path.is_file():
        data, root = _open_file(spec, path), path.parent
    elif path.is_dir():
        data, root = _open_folder(spec, path), path
    elif HUB_ID.match(spec.path) and path.suffix.lower() not in FILE_BUILDERS:
        data, root = _open_hub(spec), None
    else:
        raise SourceError(f"data source '{spec.path}' not found", "check the path, or give a hub id (owner/name)")
    if spec.media_root:
        root = Path(spec.media_root).expanduser()
    source = Source(spec, data, root.absolute() if root is not None else None)
    _check_schema(source)
    return source


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank's contiguous block of n items; the first n % world_size ranks get one extra.
    Same layout as `datasets.Dataset.shard(world_size, rank, contiguous=True)`."""
    _check_rank(rank, world_size)
    div, mod = divmod(n, world_size)
    start = rank * div + min(rank, mod)
    return range(start, start + div + (1 if rank < mod else 0))


def shard(data: Iterable, rank: int, world_size: int) -> Iterable:
    """Rank's share of `data`; the shares of all ranks are disjoint and together hold every item.
    `datasets` objects go through `split_dataset_by_node`; lists/tuples/ranges get their contiguous block;
    any other iterable (length unknown) gives every world_size-th item starting at rank."""
    _check_rank(rank, world_size)
    ds = sys.modules.get("datasets")  # a datasets object implies the module is loaded; don't import it for lists
    if ds is not None and isinstance(data, (ds.Dataset, ds.IterableDataset)):
        from datasets.distributed import split_dataset_by_node

        return split_dataset_by_node(data, rank=rank, world_size=world_size)
    if isinstance(data, (list, tuple, range)):
        block = shard_range(len(data), rank, world_size)
        return data[block.start : block.stop]
    return islice(iter(data), rank, None, world_size)


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")


def _open_file(spec: SourceSpec, path: Path) -> Any:
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise SourceError(f"data file '{path}' has an unsupported type '{path.suffix}'", LOCAL_COPY_HINT)
    return _read_local(path, lambda ld: ld(builder, data_files=str(path), split="train", streaming=spec.streaming))


def _open_folder(spec: SourceSpec, path: Path) -> Any:
    import datasets

    if (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        path / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file():
        data = _read_local(path, lambda _: datasets.load_from_disk(str(path)))
        if isinstance(data, datasets.DatasetDict):
            if spec.split not in data:
                raise SourceError(
                    f"split '{spec.split}' not in '{path}'", f"set split to one of: {', '.join(sorted(data))}"
                )
            data = data[spec.split]
        return data.to_iterable_dataset() if spec.streaming else data
    metadata = [path / name for name in IMAGE_FOLDER_METADATA if (path / name).is_file()]
    if metadata:
        return _open_file(spec, metadata[0])
    # A folder of parquet/JSON files, or a local clone of a hub dataset (its README picks configs and splits).
    return _read_local(path, lambda ld: ld(str(path), spec.config, split=spec.split, streaming=spec.streaming))


def _read_local(path: Path, read) -> Any:
    import datasets
    from datasets.exceptions import DatasetsError

    try:
        return read(datasets.load_dataset)
    except (DatasetsError, ValueError, OSError) as e:
        raise SourceError(f"cannot read data source '{path}': {_first_line(e)}", LOCAL_COPY_HINT) from None


def _open_hub(spec: SourceSpec) -> Any:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    dataset_id = spec.path
    with _offline_env_honoured() as offline:
        try:
            return datasets.load_dataset(
                dataset_id, spec.config, split=spec.split, streaming=spec.streaming, revision=spec.revision
            )
        except ConnectionError:
            why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
            raise SourceError(
                f"dataset '{dataset_id}' is not in the local cache and {why}",
                f"download it while online (hf download {dataset_id} --repo-type dataset --local-dir DIR) "
                f"and set path to DIR, or {LOCAL_COPY_HINT}",
            ) from None
        except DatasetNotFoundError:
            raise SourceError(
                f"dataset '{dataset_id}' not found on the hub",
                f"check the id (log in with hf auth login for gated datasets), or {LOCAL_COPY_HINT}",
            ) from None
        except ValueError as e:
            raise SourceError(
                f"cannot load dataset '{dataset_id}': {_first_line(e)}", "check the config and split names"
            ) from None


@contextmanager
def _offline_env_honoured():
    """`datasets` and `huggingface_hub` read HF_HUB_OFFLINE once, at import; a value set since then
    (a launcher, a test) must still mean: no network."""
    import datasets.config
    from huggingface_hub import constants

    offline = any(
        os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield offline or saved[0]
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _check_schema(source: Source) -> None:
    """A source whose rows its adapter cannot read is a setup error, not a million skipped rows: the first row
    must have a known schema and the keys that schema's adapter reads (streaming sources: the first streamed row).
    An explicit cauldron / llava / chat / jsonl is taken as given: its rows fail one by one, with their reasons."""
    schema = source.spec.schema
    if schema in ("cauldron", "llava", "chat", "jsonl"):
        return
    row = _first_row(source)
    if row is None:
        return
    keys = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
    if schema == "auto":
        try:
            schema = detect_schema(row)
        except SampleError:
            raise SourceError(
                f"data source '{source.name}' has rows of an unknown schema (columns: {keys})",
                f"set schema to one of {', '.join(SCHEMAS)}, or convert the rows to the JSONL format",
            ) from None
    missing = schema_problems(row, schema)
    if missing:
        raise SourceError(
            f"data source '{source.name}' is not in the {schema} schema: its first row lacks {', '.join(missing)} "
            f"(columns: {keys})",
            "check path / config / split (a hub repo may serve media archives, not annotations), or set schema",
        )


def _first_row(source: Source) -> Any:
    from datasets.exceptions import DatasetsError

    if not source.streaming:
        return source.data[0] if len(source.data) else None
    try:
        return next(iter(source.data), None)
    except (DatasetsError, OSError, ValueError) as e:  # the stream's first read (network, files, parsing)
        raise SourceError(
            f"cannot read the first row of data source '{source.name}': {_first_line(e)}", LOCAL_COPY_HINT
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
