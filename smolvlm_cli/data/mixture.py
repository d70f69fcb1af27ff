# Weighted data mixtures: which source and which row each global training step reads, as pure index math.
# Counter-based draws make the sequence a function of (seed, step), so resume and rank sharding are exact.
"""Deterministic, resumable, shardable weighted mixtures of data sources.

The mixture never loads data. It yields `Draw(source, row, epoch)` triples; the reader maps them to samples.

Semantics (all deterministic given the sources and the seed):
- Step i picks a source from a uniform number that depends only on (seed, i) (a splitmix64 counter hash),
  weighted by the weights of the sources still active. Weights are relative (percent or not): they are normalised.
- A source of known length n is read in a seeded permutation per epoch; the k-th draw from it is row
  perm_{k // n}[k % n] of epoch k // n. Weight above its natural share repeats rows (a new permutation per pass),
  below it reads a subset.
- A source of unknown length (streaming) yields row = k, its k-th consumption, and epoch None; the reader wraps k
  around the stream's real length (`StreamReader` does this).
- Caps count draws over one run of the mixture (one training phase): `max_samples` draws at most, `max_epochs`
  passes at most (known length only, cap = floor(max_epochs * n)); the smaller one applies. A source that reaches
  its cap is dropped from that step on and later steps pick among the remaining sources in proportion to their
  weights. When no source with positive weight is left the mixture ends.
- Ranks: from start step s, rank r of W takes global steps s + r, s + r + W, ...: disjoint, and together complete.
  Every rank computes the whole global sequence, so its cursor (`state_dict`) is the same on every rank after each
  round of W steps, and a checkpoint taken on any rank resumes all of them, also with another world size.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

import numpy as np

from smolvlm_cli.errors import RecipeError

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
STATE_VERSION = 1


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def step_uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, step): element `step` of a splitmix64 stream."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    key = _mix64(seed & _MASK)
    return (_mix64((key + (step + 1) * _GOLDEN) & _MASK) >> 11) / float(1 << 53)


def source_for_step(seed: int, step: int, weights: Sequence[float]) -> int:
    """Index of the source that global step `step` reads; weights are relative, zero means never."""
    target = step_uniform(seed, step) * sum(weights)
    cumulative, last = 0.0, -1
    for i, w in enumerate(weights):
        if w > 0:
            cumulative += w
            last = i
            if target < cumulative:
                return i
    if last < 0:
        raise ValueError("no source has a positive weight")
    return last  # u * total rounded up to total: the last positive source owns the top of the interval


@dataclass(frozen=True)
class MixtureSource:
    name: str
    weight: float
    length: int | None = None  # None: streaming, length unknown
    max_samples: int | None = None
    max_epochs: float | None = None

    @property
    def cap(self) -> int | None:
        """Most draws this source may give in one run of the mixture; None for no cap."""
        caps = [] if self.max_samples is None else [self.max_samples]
        if self.max_epochs is not None and self.length is not None:
            caps.append(math.floor(self.max_epochs * self.length))
        return min(caps) if caps else None


class Draw(NamedTuple):
    source: int
    row: int
    epoch: int | None  # None for streaming sources: the reader knows the real length


def _check(sources: Sequence[MixtureSource]) -> None:
    if not sources:
        raise RecipeError("the data mixture has no sources", "list at least one source with a weight")
    names = [s.name for s in sources]
    for s in sources:
        where = f"data source '{s.name}'"
        if names.count(s.name) > 1:
            raise RecipeError(f"{where} is listed twice", "give each source a unique name")
        if not math.isfinite(s.weight) or s.weight < 0:
            raise RecipeError(f"{where} has weight {s.weight}", "use a weight >= 0 (relative, e.g. percent)")
        if s.length is not None and s.length <= 0:
            raise RecipeError(f"{where} is empty (length {s.length})", "remove it or point it at data")
        if s.max_samples is not None and s.max_samples <= 0:
            raise RecipeError(f"{where} has max_samples {s.max_samples}", "use a cap >= 1 or remove it")
        if s.max_epochs is not None and (s.length is None or not s.max_epochs > 0):
            raise RecipeError(f"{where} has max_epochs {s.max_epochs} but "
                              f"{'its length is unknown (streaming)' if s.length is None else 'it must be > 0'}",
                              "use max_samples for streaming sources, or a max_epochs > 0")
    if sum(s.weight for s in sources) <= 0:
        raise RecipeError("every data source has weight 0", "give at least one source a positive weight")


def expected_shares(sources: Sequence[MixtureSource]) -> list[float]:
    """Share of draws each source gets before any cap bites: its weight over the sum of weights."""
    _check(sources)
    total = sum(s.weight for s in sources)
    return [s.weight / total for s in sources]


def expected_counts(sources: Sequence[MixtureSource], n: int) -> list[float]:
    """Draws per source to expect over `n` draws with caps (water-filling: a source whose share would pass its cap
    takes its cap, the others share the remainder by weight). The realised counts differ by sampling noise only."""
    _check(sources)
    counts: list[float | None] = [None] * len(sources)
    left = float(n)
    while True:
        free = [i for i, c in enumerate(counts) if c is None]
        total = sum(sources[i].weight for i in free)
        share = {i: (left * sources[i].weight / total if total > 0 else 0.0) for i in free}
        over = [i for i in free if sources[i].cap is not None and share[i] > sources[i].cap]
        if not over:
            for i in free:
                counts[i] = share[i]
            return [float(c) for c in counts]  # type: ignore[arg-type]
        for i in over:
            counts[i] = float(sources[i].cap)  # type: ignore[arg-type]
            left -= sources[i].cap  # type: ignore[operator]


class Mixture:
    """The draw sequence of `sources` under `seed`, with a cursor (step and per-source counts) that can be saved."""

    def __init__(self, sources: Sequence[MixtureSource], seed: int):
        _check(sources)
        self.sources = list(sources)
        self.seed = int(seed)
        self._perms: dict[int, tuple[int, np.ndarray]] = {}
        self._reset()

    def _reset(self, counts: Sequence[int] | None = None) -> None:
        self._counts = list(counts) if counts is not None else [0] * len(self.sources)
        self._step = sum(self._counts)
        self._active = [s.weight if s.cap is None or c < s.cap else 0.0 for s, c in zip(self.sources, self._counts)]

    @property
    def step(self) -> int:
        return self._step

    def total(self) -> int | None:
        """Draws until the mixture ends (every source with a positive weight capped), or None if it never ends."""
        caps = [s.cap for s in self.sources if s.weight > 0]
        return None if any(c is None for c in caps) else sum(caps)  # type: ignore[arg-type]

    def _row(self, s: int, k: int) -> Draw:
        n = self.sources[s].length
        if n is None:
            return Draw(s, k, None)
        epoch, pos = divmod(k, n)
        cached = self._perms.get(s)
        if cached is None or cached[0] != epoch:
            # Keyed by name, not position: a source keeps its row order when the recipe lists sources differently.
            rng = np.random.default_rng([self.seed & _MASK, zlib.crc32(self.sources[s].name.encode()), epoch])
            cached = (epoch, rng.permutation(n))
            self._perms[s] = cached
        return Draw(s, int(cached[1][pos]), epoch)

    def _advance(self) -> Draw | None:
        if not any(w > 0 for w in self._active):
            return None
        s = source_for_step(self.seed, self._step, self._active)
        k = self._counts[s]
        self._counts[s] += 1
        self._step += 1
        cap = self.sources[s].cap
        if cap is not None and self._counts[s] >= cap:
            self._active[s] = 0.0
        return self._row(s, k)

    def seek(self, step: int) -> None:
        """Move the cursor to global step `step` by replaying the (cheap) draw sequence."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self._step:
            self._reset()
        while self._step < step:
            if self._advance() is None:
                raise RecipeError(f"start step {step} is past the end of the data mixture ({self._step} draws)",
                                  "raise the sources' caps or start the phase over")

    def draws(self, start_step: int | None = None, rank: int = 0, world_size: int = 1) -> Iterator[Draw]:
        """This rank's draws from `start_step` (default: the cursor) on. One live iterator per Mixture: they share
        the cursor. If the mixture ends mid-round, ranks past its end get one draw fewer."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if start_step is not None:
            self.seek(start_step)

        def rounds() -> Iterator[Draw]:
            while True:
                # The whole round is drawn before yielding, so the cursor is the same on every rank between items.
                mine = [self._advance() for _ in range(world_size)][rank]
                if mine is None:
                    return
                yield mine

        return rounds()

    def state_dict(self) -> dict[str, Any]:
        """The cursor as plain JSON data, with the mixture's definition to refuse a resume under another one."""
        return {
            "version": STATE_VERSION, "seed": self.seed, "step": self._step,
            "sources": [{"name": s.name, "weight": s.weight, "length": s.length, "cap": s.cap, "consumed": c,
                         "epoch": None if s.length is None else c // s.length}
                        for s, c in zip(self.sources, self._counts)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        hint = "resume with the recipe's data section as it was, or start the phase over"
        if state.get("version") != STATE_VERSION or "sources" not in state:
            raise RecipeError("the checkpoint's data-mixture state is not in a format this version reads", hint)
        if state["seed"] != self.seed:
            raise RecipeError(f"the checkpoint's data seed is {state['seed']}, the recipe's is {self.seed}", hint)
        saved = [(d["name"], d["weight"], d["length"], d["cap"]) for d in state["sources"]]
        now = [(s.name, s.weight, s.length, s.cap) for s in self.sources]
        if saved != now:
            diff = next(((a, b) for a, b in zip(saved, now) if a != b), (saved, now))
            raise RecipeError(f"the data mixture changed since the checkpoint: {diff[0]} -> {diff[1]} "
                              "(name, weight, length, cap)", hint)
        counts = [int(d["consumed"]) for d in state["sources"]]
        if sum(counts) != state["step"] or any(c < 0 for c in counts):
            raise RecipeError("the checkpoint's data-mixture state is inconsistent (counts do not add up to step)",
                              hint)
        self._reset(counts)


def mixture_report(sources: Sequence[MixtureSource], seed: int, n: int) -> list[dict[str, Any]]:
    """Per source, for the first `n` draws: expected and realised counts, and passes over its rows (dry-run)."""
    counts = [0] * len(sources)
    for d in islice(Mixture(sources, seed).draws(0), n):
        counts[d.source] += 1
    return [{"name": s.name, "weight_share": ws, "expected": e, "draws": c, "share": c / max(sum(counts), 1),
             "passes": None if s.length is None else c / s.length}
            for s, ws, e, c in zip(sources, expected_shares(sources), expected_counts(sources, n), counts)]


class StreamReader:
    """Reads the rows a streaming source's draws name, wrapping around at the end of the stream.

    `open_at(i)` returns an iterable starting at row i of the stream (e.g. `IterableDataset.skip(i)`). Rows are
    asked for with non-decreasing k (a rank's draws are); rows of other ranks in between are read and skipped."""

    def __init__(self, name: str, open_at: Callable[[int], Iterable[Any]]):
        self.name, self._open_at = name, open_at
        self.length: int | None = None  # learnt at the first end of the stream
        self._it: Iterator[Any] | None = None
        self._pos = self._start = 0  # consumption index of the row the iterator yields next / yielded first
        self._base = 0  # consumption index of local row 0 of the current pass

    def get(self, k: int) -> Any:
        if k < self._pos:
            raise ValueError(f"row {k} asked after row {self._pos - 1}: rows of a stream come in order")
        if self.length is not None and k - self._base >= self.length:
            self._it = None  # k lies in a later pass: open there instead of reading out this one
        while True:
            if self._it is None:
                local = k if self.length is None else k % self.length
                self._it, self._pos, self._start, self._base = iter(self._open_at(local)), k, k, k - local
            try:
                row = next(self._it)
            except StopIteration:
                self._on_end()
                continue
            self._pos += 1
            if self._pos - 1 == k:
                return row

    def _on_end(self) -> None:
        read_to = self._pos - self._base  # local index just past the last row read in this pass
        self._it = None
        if self.length is not None:
            if read_to != self.length:
                raise RecipeError(f"streaming data source '{self.name}' ended at row {read_to}, not {self.length}",
                                  "the stream changed while reading; keep the data fixed during a run")
            return
        if self._pos > self._start:
            self.length = read_to
            return
        # Opened past the end before the length was known (a resume beyond the first pass): count it once.
        self.length = sum(1 for _ in self._open_at(0))
        if self.length == 0:
            raise RecipeError(f"streaming data source '{self.name}' has no rows", "remove it or point it at data")
        if self.length > read_to:
            raise ValueError(f"open_at({read_to}) of '{self.name}' yields nothing, yet the stream has more rows")
