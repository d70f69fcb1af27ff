# The built-in synthetic dataset: short-exact-answer tasks over real PNG / mp4 files and JSONL, seeded.
# Lets `train` and `eval` run end to end offline, and mirrors two tasks in The Cauldron's and LLaVA's schemas.
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from smolvlm_cli.data.synthetic_mirrors import write_cauldron_mirror, write_llava_mirror
from smolvlm_cli.errors import UserError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (200, 200, 200), (60, 60, 60))
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
WORDS: tuple[str, ...] = (
    "cat", "dog", "sun", "tree", "book", "fish", "bird", "moon",
    "star", "lamp", "door", "cake", "ship", "frog", "milk", "rain",
)
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
BAR_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
BAR_COLOUR = (50, 100, 200)
VIDEO_FPS = 4
VIDEO_FRAMES = 16  # 4 s at 4 fps
SPLITS: tuple[str, ...] = ("train", "test")
DATASET_VERSION = 3  # bump when a generator changes what it writes (2: the position task; 3: lossless video)
MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class TaskSpec:
    """One synthetic task as eval sees it: answers are scored by exact match against a short string."""

    name: str
    modality: str  # text | image | multi-image | video
    choices: tuple[str, ...] | None  # the closed answer set, None when open-ended
    description: str

    @property
    def chance(self) -> float | None:
        return 1.0 / len(self.choices) if self.choices else None


TASKS: list[TaskSpec] = [
    TaskSpec("colour", "image", tuple(COLOURS), "colour of one shape on a plain background"),
    TaskSpec("count", "image", tuple(str(n) for n in range(1, 6)), "count 1-5 identical shapes"),
    TaskSpec("ocr", "image", WORDS, "read one rendered word"),
    TaskSpec("chart", "image", tuple(str(v) for v in range(1, 10)), "read one bar's value from a bar chart"),
    TaskSpec("compare", "multi-image", ("yes", "no"), "are the shapes in two images the same colour"),
    TaskSpec("direction", "video", DIRECTIONS, "which way an object moves in a 4 s video"),
    TaskSpec("colour_sequence", "video", tuple(COLOURS), "which full-frame colour comes first or last"),
    TaskSpec("text", "text", None, "add or subtract two digits"),
    TaskSpec("position", "image", POSITIONS, "which edge of the image one shape sits at"),
]
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)


@dataclass(frozen=True)
class Example:
    media: list[tuple[str, Path]]  # (image | video, file written under out_dir/media)
    question: str
    answer: str


class _Media:
    """Where one example's files go: out_dir/media/<task>/<split>-<index>[-<n>].<ext>."""

    def __init__(self, root: Path, task: str, stem: str, size: int):
        self.dir = root / "media" / task
        self.stem = stem
        self.size = size

    def image(self, img: Image.Image, n: int | None = None) -> tuple[str, Path]:
        path = self.dir / f"{self.stem}{'' if n is None else f'-{n}'}.png"
        img.save(path, format="PNG")
        return "image", path

    def video(self, frames: np.ndarray) -> tuple[str, Path]:
        path = self.dir / f"{self.stem}.mp4"
        write_mp4(path, frames, VIDEO_FPS)
        return "video", path


def write_mp4(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 frames [T, H, W, 3] (H, W even) as lossless H.264 (qp 0) mp4. Lossless because x264 is not
    reproducible here even on one thread: about 1 video in 250 came out with other pixels on a second encode (up to 6
    levels apart), so two machines, or two runs, trained on different data. Losslessly, any encode decodes to the same
    frames (only yuv420p's chroma subsampling changes the pixels)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---------------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------------

def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _canvas(size: int, background: tuple[int, int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"  # no anti-aliasing: every pixel is either ink or background
    return img, draw


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, side: int, colour) -> None:
    box = (x, y, x + side - 1, y + side - 1)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x + (side - 1) / 2, y), (x + side - 1, y + side - 1), (x, y + side - 1)], fill=colour)


def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def _one_shape_image(rng, size: int, shape: str, colour: str) -> Image.Image:
    img, draw = _canvas(size, _pick(rng, BACKGROUNDS))
    side = int(rng.integers(size * 3 // 10, size * 6 // 10 + 1))
    x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    _draw_shape(draw, shape, x, y, side, COLOURS[colour])
    return img


def chart_layout(size: int) -> tuple[int, int, float]:
    """(y of the bars' baseline, label font px, pixels per unit of value) of a chart image of this size."""
    font_px = max(8, size // 6)
    baseline = size - font_px - 3
    top = font_px + 3
    return baseline, font_px, (baseline - top) / 9


# ---------------------------------------------------------------------------------------------------------------
# Tasks: each draws one example from rng
# ---------------------------------------------------------------------------------------------------------------

def _colour(rng, media: _Media) -> Example:
    shape, colour = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS))
    part = media.image(_one_shape_image(rng, media.size, shape, colour))
    return Example([part], f"What colour is the {shape}? Answer with one word.", colour)


def _count(rng, media: _Media) -> Example:
    size = media.size
    shape, colour, n = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS)), int(rng.integers(1, 6))
    img, draw = _canvas(size, _pick(rng, BACKGROUNDS))
    cell = size // 3
    side = cell * 6 // 10
    # One shape per cell of a 3x3 grid, kept a pixel off the cell edges, so shapes never touch.
    for c in rng.choice(9, size=n, replace=False):
        row, col = divmod(int(c), 3)
        dx, dy = (int(v) for v in rng.integers(1, cell - side, size=2))
        _draw_shape(draw, shape, col * cell + dx, row * cell + dy, side, COLOURS[colour])
    return Example([media.image(img)], f"How many {shape}s are there? Answer with a number.", str(n))


def _ocr(rng, media: _Media) -> Example:
    size, word = media.size, _pick(rng, WORDS)
    img, draw = _canvas(size, _pick(rng, BACKGROUNDS[:2]))
    font = _font(size // 4)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    jitter = size // 16
    dx, dy = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
    x = (size - (right - left)) // 2 - left + dx
    y = (size - (bottom - top)) // 2 - top + dy
    draw.text((x, y), word, fill=(0, 0, 0), font=font)
    return Example([media.image(img)], "What word is written in the image? Answer with one word.", word)


def _chart(rng, media: _Media) -> Example:
    size = media.size
    n_bars = int(rng.integers(3, 5))
    values = [int(v) for v in rng.integers(1, 10, size=n_bars)]
    asked = int(rng.integers(n_bars))
    img, draw = _canvas(size, (255, 255, 255))
    baseline, font_px, unit = chart_layout(size)
    font = _font(font_px)
    slot = (size - 4) // n_bars
    width = max(3, slot * 7 // 10)
    for i, value in enumerate(values):
        x0 = 2 + i * slot + (slot - width) // 2
        height = round(value * unit)
        draw.rectangle((x0, baseline - height, x0 + width - 1, baseline - 1), fill=BAR_COLOUR)
        centre = x0 + width / 2
        draw.text((centre, baseline - height - 1), str(value), fill=(0, 0, 0), font=font, anchor="mb")
        draw.text((centre, baseline + 1), BAR_LABELS[i], fill=(0, 0, 0), font=font, anchor="mt")
    question = f"What is the value of bar {BAR_LABELS[asked]}? Answer with a number."
    return Example([media.image(img)], question, str(values[asked]))


def _compare(rng, media: _Media) -> Example:
    first = _pick(rng, tuple(COLOURS))
    same = bool(rng.integers(2))
    second = first if same else _pick(rng, tuple(c for c in COLOURS if c != first))
    parts = [
        media.image(_one_shape_image(rng, media.size, _pick(rng, SHAPES), colour), n)
        for n, colour in enumerate((first, second))
    ]
    return Example(parts, "Are the two shapes the same colour? Answer yes or no.", "yes" if same else "no")


def _edge_track(rng, size: int) -> tuple[int, tuple[int, int], int]:
    """Where a shape runs edge to edge (direction) or sits at an edge (position): its side, its two end offsets
    along the track (a tenth of the image from either edge) and a random offset across it, kept off the other edges.
    The first frame of a direction video is a position image."""
    side = size // 5
    across = int(rng.integers(size // 5, size - size // 5 - side + 1))
    return side, (size // 10, size - size // 10 - side), across


def _direction(rng, media: _Media) -> Example:
    size = media.size
    shape, colour, direction = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS)), _pick(rng, DIRECTIONS)
    background = _pick(rng, BACKGROUNDS)
    side, (start, end), across = _edge_track(rng, size)
    if direction in ("left", "up"):
        start, end = end, start
    frames = []
    for t in range(VIDEO_FRAMES):
        along = round(start + (end - start) * t / (VIDEO_FRAMES - 1))
        img, draw = _canvas(size, background)
        x, y = (along, across) if direction in ("left", "right") else (across, along)
        _draw_shape(draw, shape, x, y, side, COLOURS[colour])
        frames.append(np.asarray(img))
    question = f"Which direction does the {colour} {shape} move? Answer with one word."
    return Example([media.video(np.stack(frames))], question, direction)


def _position(rng, media: _Media) -> Example:
    size = media.size
    shape, colour, position = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS)), _pick(rng, POSITIONS)
    img, draw = _canvas(size, _pick(rng, BACKGROUNDS))
    side, (near, far), across = _edge_track(rng, size)
    along = near if position in ("left", "top") else far
    x, y = (along, across) if position in ("left", "right") else (across, along)
    _draw_shape(draw, shape, x, y, side, COLOURS[colour])
    question = f"Where is the {colour} {shape}? Answer with one word."
    return Example([media.image(img)], question, position)


def _colour_sequence(rng, media: _Media) -> Example:
    n_colours = int(rng.integers(3, 5))
    order = [list(COLOURS)[int(i)] for i in rng.permutation(len(COLOURS))[:n_colours]]
    # Equal segments; the last takes the remainder.
    per = VIDEO_FRAMES // n_colours
    names = [order[min(t // per, n_colours - 1)] for t in range(VIDEO_FRAMES)]
    frames = np.stack([np.full((media.size, media.size, 3), COLOURS[c], np.uint8) for c in names])
    which = _pick(rng, ("first", "last"))
    answer = order[0] if which == "first" else order[-1]
    return Example([media.video(frames)], f"Which colour appears {which}? Answer with one word.", answer)


def _text(rng, media: _Media) -> Example:
    a, b = (int(v) for v in rng.integers(0, 10, size=2))
    if rng.integers(2):
        return Example([], f"What is {a} plus {b}? Answer with a number.", str(a + b))
    a, b = max(a, b), min(a, b)
    return Example([], f"What is {a} minus {b}? Answer with a number.", str(a - b))


GENERATORS: dict[str, Callable[[np.random.Generator, _Media], Example]] = {
    "colour": _colour,
    "count": _count,
    "ocr": _ocr,
    "chart": _chart,
    "compare": _compare,
    "direction": _direction,
    "colour_sequence": _colour_sequence,
    "text": _text,
    "position": _position,
}


# ---------------------------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------------------------

def write_synthetic(
    out_dir: str | Path,
    n_train: int,
    n_test: int,
    seed: int = 0,
    image_size: int = 64,
    tasks: Sequence[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Write the synthetic dataset under out_dir and return {split: {task: examples}}.

    Layout: train/<task>.jsonl and test/<task>.jsonl (user JSONL format, media paths relative to the JSONL folder),
    media/<task>/..., plus mirrors of the colour train split in The Cauldron's schema (cauldron/colour/train.parquet)
    and of the direction train split in LLaVA's schema (llava/direction_train.json, videos relative to media/).
    Each (split, task) draws from its own seeded stream, so train and test are different draws, and the test set
    does not change with n_train. Same seed, same JSONL and images, and videos that decode to the same frames.
    """
    names = list(TASK_NAMES if tasks is None else tasks)
    unknown = [t for t in names if t not in GENERATORS]
    if unknown:
        raise UserError(f"unknown synthetic task(s): {', '.join(unknown)}", hint=f"choose from {', '.join(TASK_NAMES)}")
    if n_train < 0 or n_test < 0:
        raise UserError(f"example counts must be >= 0 (got train {n_train}, test {n_test})", hint="pass 0 or more")
    if image_size < MIN_IMAGE_SIZE or image_size % 2:
        raise UserError(
            f"synthetic image size must be even and >= {MIN_IMAGE_SIZE}, got {image_size}",
            hint="use e.g. --image-size 64",
        )
    out = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    rows: dict[tuple[str, str], list[dict]] = {}
    for split_no, (split, n) in enumerate(zip(SPLITS, (n_train, n_test))):
        (out / split).mkdir(parents=True, exist_ok=True)
        counts[split] = {}
        for name in names:
            rng = np.random.default_rng([seed, split_no, TASK_NAMES.index(name)])
            (out / "media" / name).mkdir(parents=True, exist_ok=True)
            split_rows = []
            for i in range(n):
                media = _Media(out, name, f"{split}-{i:05d}", image_size)
                example = GENERATORS[name](rng, media)
                split_rows.append(_jsonl_row(f"synthetic-{name}-{split}-{i:05d}", example, out / split))
            _write_jsonl(out / split / f"{name}.jsonl", split_rows)
            rows[(split, name)] = split_rows
            counts[split][name] = n
    if "colour" in names:
        write_cauldron_mirror(out, rows[("train", "colour")])
    if "direction" in names:
        write_llava_mirror(out, rows[("train", "direction")])
    return counts


def _jsonl_row(row_id: str, example: Example, jsonl_dir: Path) -> dict:
    parts = [{"type": kind, "path": _relative(path, jsonl_dir)} for kind, path in example.media]
    user = [*parts, {"type": "text", "text": example.question}] if parts else example.question
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": example.answer}],
    }


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
