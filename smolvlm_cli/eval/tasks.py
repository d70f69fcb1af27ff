# The benchmark registry: what each eval task reads, how it prompts, scores and aggregates, and what was published.
# Task families live in tasks_image.py, tasks_video.py and tasks_synthetic.py; this module holds the shared types.
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import UserError

PROMPT_STYLES = ("lmms", "vlmevalkit")
DEFAULT_COMPOSITE_WEIGHTS = {"mmmu": 1.0, "mathvista": 1.0, "docvqa": 1.0, "textvqa": 1.0, "mmstar": 1.0,
                             "ai2d": 1.0}


@dataclass
class Item:
    """One question ready for generation: a chat in the processor's format plus the media it names."""

    id: str
    content: list[dict]  # user turn: {"type": "text", "text"} | {"type": "image"} | {"type": "video"}
    images: list = field(default_factory=list)  # PIL images, in the order of the image parts
    video: str | None = None  # resolved path of the one video part
    system: str | None = None
    assistant_prefix: str = ""  # text the answer is forced to start with, e.g. " Answer:"
    answers: list[str] = field(default_factory=list)  # gold answers, for the predictions file
    meta: dict[str, Any] = field(default_factory=dict)  # what the scorer and the aggregation read
    history: list[dict] = field(default_factory=list)  # earlier turns (synthetic multi-turn chats)

    @property
    def kind(self) -> str:
        return "video" if self.video else "image" if self.images else "text"

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        return system + self.history + [{"role": "user", "content": self.content}]

    def user_text(self) -> str:
        return "".join(p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in self.content)


@dataclass
class BuildContext:
    """Where a row's media live and which subset it came from."""

    task: str
    prompt_style: str = "lmms"
    config: str | None = None  # subset of a multi-config dataset (MVBench, TempCompass)
    index: int = 0  # row number, for ids of rows without one
    media_root: Path | None = None  # video tasks: folder holding the videos
    data_dir: Path | None = None  # JSONL tasks: folder the media paths are relative to


@dataclass
class TaskResult:
    score: float  # in [0, 1]
    breakdown: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    family: str  # image | video | synthetic
    dataset: str  # hub id ("" for local-only data)
    split: str
    build: Callable[[dict, BuildContext], Item]
    score: Callable[[str, Item], float | None]  # None: the rules cannot decide (the reference would ask an LLM)
    aggregate: Callable[[list[Item], list[float], list[str]], TaskResult]  # items, scores, predictions
    metric: str
    aggregation: str
    max_new_tokens: int
    config: str | None = None
    configs: tuple[str, ...] = ()  # several subsets, each loaded and kept as meta["subset"]
    published: tuple[float, float] | None = None  # SmolVLM paper Table 1, 256M / 500M, in %
    rule_based_only: bool = False  # peers use an LLM judge / extractor for part of this score
    note: str = ""

    @property
    def needs_media_root(self) -> bool:
        return self.family == "video"


# ---------------------------------------------------------------------------------------------------------------
# Aggregations (pure)
# ---------------------------------------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def group_means(items: Sequence[Item], scores: Sequence[float], key: str) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for item, s in zip(items, scores):
        groups[str(item.meta.get(key))].append(s)
    return {k: mean(v) for k, v in sorted(groups.items())}


def micro(breakdown_key: str | None = None) -> Callable[..., TaskResult]:
    """Mean over all items, with per-group means of meta[breakdown_key] for information."""

    def aggregate(items, scores, predictions=None):
        extra = group_means(items, scores, breakdown_key) if breakdown_key else {}
        return TaskResult(mean(scores), extra)

    return aggregate


def macro(key: str) -> Callable[..., TaskResult]:
    """Mean of the per-group means of meta[key] (only the groups present, so --limit still gives a number)."""

    def aggregate(items, scores, predictions=None):
        groups = group_means(items, scores, key)
        return TaskResult(mean(list(groups.values())), groups)

    return aggregate


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Task] = {}
ALIASES = {"video-mme": "videomme", "video_mme": "videomme", "scienceqa_img": "scienceqa",
           "scienceqa-img": "scienceqa", "mathvista_testmini": "mathvista", "mmmu_val": "mmmu",
           "docvqa_val": "docvqa", "textvqa_val": "textvqa", "mlvu_dev": "mlvu"}


def registry() -> dict[str, Task]:
    """All tasks by name, benchmarks in the paper's order, then the synthetic ones."""
    if not _REGISTRY:
        from . import tasks_image, tasks_synthetic, tasks_video

        for task in (*tasks_image.TASKS, *tasks_video.TASKS, *tasks_synthetic.TASKS):
            _REGISTRY[task.name] = task
    return _REGISTRY


def groups() -> dict[str, list[str]]:
    reg = registry()
    by_family = {f: [n for n, t in reg.items() if t.family == f] for f in ("image", "video", "synthetic")}
    return {"all": by_family["image"] + by_family["video"], **by_family}


def resolve_tasks(names: str | Sequence[str]) -> list[str]:
    """Task names from a comma list or a sequence; groups (all, image, video, synthetic) expand. Unknown names
    raise a UserError listing the valid ones."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    reg, grp = registry(), groups()
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name.startswith("synthetic:"):
            name = "synthetic_" + name.split(":", 1)[1]
        found = grp.get(name) or ([name] if name in reg else None)
        if found is None:
            valid = ", ".join([*reg, *grp])
            raise UserError(f"unknown eval task '{raw.strip()}'", f"choose from: {valid}")
        out.extend(n for n in found if n not in out)
    if not out:
        raise UserError("no eval task given", "pass --tasks, e.g. --tasks docvqa,textvqa (see smolvlm eval --list)")
    return out


def tasks_named(key: str, run: Sequence[str]) -> list[str]:
    """The tasks among `run` a TASK=PATH key applies to (--dataset-path, --media-root, a recipe's eval paths): a
    task, alias or group; "synthetic" is every synthetic task. An unknown name raises a UserError."""
    key = key.strip().lower()
    found = [n for n, t in registry().items() if t.family == "synthetic"] if key == "synthetic" else \
        resolve_tasks([key])
    return [n for n in found if n in run]


def composite_weights(scores: dict[str, float], weights: dict[str, float] | None = None) -> dict[str, float]:
    """The weights `composite` applies: the given (or default) weights of the tasks that were run. With the
    defaults and none of their tasks run (e.g. a training run scoring the synthetic tasks only), equal weights."""
    if weights is None:
        weights = {k: w for k, w in DEFAULT_COMPOSITE_WEIGHTS.items() if k in scores} or {k: 1.0 for k in scores}
    return {k: float(w) for k, w in weights.items() if k in scores and w > 0}


def composite(scores: dict[str, float], weights: dict[str, float] | None = None) -> float | None:
    """Weighted mean of task scores (in [0, 1]) for best-checkpoint selection, over the weighted tasks that were
    run. Default weights: MMMU, MathVista, DocVQA, TextVQA, MMStar and AI2D equally (see `composite_weights`).
    None when no weighted task has a score."""
    used = composite_weights(scores, weights)
    if not used:
        return None
    return sum(scores[k] * w for k, w in used.items()) / sum(used.values())


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the task families
# ---------------------------------------------------------------------------------------------------------------


def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def to_pil(value):
    """A dataset image cell as an RGB PIL image: PIL, {"bytes", "path"} (parquet without features), bytes or path."""
    import io

    from PIL import Image as PILImage

    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        value = PILImage.open(io.BytesIO(value))
    elif isinstance(value, (str, Path)):
        value = PILImage.open(value)
    return value.convert("RGB")


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_then_text(n_images: int, text: str) -> list[dict]:
    return [{"type": "image"} for _ in range(n_images)] + [text_part(text)]


def row_id(row: dict, ctx: BuildContext, *fields: str) -> str:
    for f in fields:
        if row.get(f) not in (None, ""):
            return str(row[f])
    return f"{ctx.task}-{ctx.config + '-' if ctx.config else ''}{ctx.index}"
