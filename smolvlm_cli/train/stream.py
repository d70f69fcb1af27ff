# One rank's micro-batches for a training phase: mixture draws -> samples -> encoded -> grouped or packed batches.
# Resumable exactly: the cursor is the mixture state at the start of the current window plus batches consumed in it.
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..data.batching import collate, collate_packed, group_by_length, pack
from ..data.mixture import Mixture, MixtureSource, StreamReader
from ..data.sample import SampleError
from ..errors import UserError

MIN_SEEN_FOR_SKIP_CHECK = 50


class DataQualityError(UserError):
    """Too many samples of a phase's data are unusable."""


@dataclass
class StreamState:
    """Where the current window started (mixture cursor and sample counters then) and how far into it we are."""

    mixture: dict | None = None  # None: the phase's start
    window_batches_done: int = 0
    seen: int = 0
    skipped: Counter = field(default_factory=Counter)
    fitted: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"mixture": self.mixture, "window_batches_done": self.window_batches_done, "seen": self.seen,
                "skipped": dict(self.skipped), "fitted": dict(self.fitted)}

    @classmethod
    def from_json(cls, d: dict) -> "StreamState":
        return cls(d["mixture"], d["window_batches_done"], d["seen"], Counter(d["skipped"]), Counter(d["fitted"]))


def _identity(item):
    return item


class _Draws:
    """Map a mixture draw to an encoded sample (or the reason it is unusable). Picklable for DataLoader workers."""

    def __init__(self, sources: list, encoder):
        self.sources = sources
        self.encoder = encoder

    def __getitem__(self, key):
        source_index, row_index, row, cursor = key
        source = self.sources[source_index]
        try:
            row = source.data[row_index] if row is None else row
            return self.encoder(source.to_sample(row_index, row)), cursor
        except SampleError as e:
            return e.reason, cursor


class PhaseStream:
    def __init__(self, sources: dict, entries: list, encoder, *, seed: int, rank: int, world_size: int,
                 micro_batch_size: int, window: int, packing: bool, group: bool, max_seq_len: int,
                 max_skip_fraction: float, num_workers: int = 0, state: StreamState | None = None):
        self.names = [e.source for e in entries]
        self.sources = [sources[n] for n in self.names]
        self.mixture = Mixture([
            MixtureSource(n, e.weight, None if s.streaming else len(s), e.max_samples, e.max_epochs)
            for n, e, s in zip(self.names, entries, self.sources)], seed=seed)
        self.readers = {i: StreamReader(s.name, s.data.skip) for i, s in enumerate(self.sources) if s.streaming}
        self.encoder, self.seed = encoder, seed
        self.rank, self.world_size = rank, world_size
        self.bs, self.window, self.packing, self.group = micro_batch_size, window, packing, group
        self.max_seq_len, self.max_skip, self.num_workers = max_seq_len, max_skip_fraction, num_workers
        self.state = state or StreamState()
        self.pad_id = encoder.pad_id
        # live counters; the state keeps their values at the current window's start
        self.seen, self.skipped, self.fitted = self.state.seen, Counter(self.state.skipped), Counter(self.state.fitted)

    def _keys(self) -> Iterator[tuple]:
        for draw in self.mixture.draws(rank=self.rank, world_size=self.world_size):
            row = self.readers[draw.source].get(draw.row) if draw.source in self.readers else None
            yield draw.source, draw.row, row, self.mixture.state_dict()

    def encoded(self) -> Iterator[tuple[Any, dict]]:
        """(Encoded sample or the reason it is unusable, mixture cursor after its draw), in draw order."""
        import torch

        loader = torch.utils.data.DataLoader(
            _Draws(self.sources, self.encoder), sampler=self._keys(), batch_size=None, collate_fn=_identity,
            num_workers=self.num_workers, persistent_workers=False,
            generator=torch.Generator().manual_seed(self.seed),  # never draw from the global RNG: exact resume
        )
        yield from loader

    def _collate(self, samples: list) -> dict:
        if self.packing:
            return collate_packed(list(pack(samples, self.max_seq_len)), self.pad_id)
        return collate(samples, self.pad_id)

    def __iter__(self) -> Iterator[dict]:
        """Infinite (or until the mixture's caps end it) micro-batches of `micro_batch_size` samples."""
        if self.state.mixture is not None:
            self.mixture.load_state_dict(self.state.mixture)
        encoded = self.encoded()
        skip = self.state.window_batches_done
        while True:
            st = self.state
            st.mixture, st.seen = self.mixture.state_dict() if st.mixture is None else st.mixture, self.seen
            st.skipped, st.fitted = Counter(self.skipped), Counter(self.fitted)
            window, last_cursor = [], st.mixture
            for item, cursor in encoded:
                last_cursor = cursor
                self.seen += 1
                if isinstance(item, str):
                    self.skipped[item] += 1
                    self._check_quality()
                    continue
                if item.fitted:
                    self.fitted[item.fitted] += 1
                window.append(item)
                if len(window) == self.window * self.bs:
                    break
            if len(window) < self.bs:
                return
            window = window[: len(window) // self.bs * self.bs]
            if self.group:
                batches = list(group_by_length(window, self.bs, window=self.window,
                                               seed=self._window_seed(st.mixture)))
            else:
                batches = [window[i: i + self.bs] for i in range(0, len(window), self.bs)]
            for k in range(skip, len(batches)):
                st.window_batches_done = k + 1
                yield self._collate(batches[k])
            skip = 0
            self.state = StreamState(last_cursor, 0)

    def _window_seed(self, cursor: dict) -> int:
        return self.seed * 1_000_003 + int(cursor["step"])

    def _check_quality(self) -> None:
        seen, skipped = self.seen, sum(self.skipped.values())
        if seen >= MIN_SEEN_FOR_SKIP_CHECK and skipped / seen > self.max_skip:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.skipped.most_common())
            raise DataQualityError(
                f"{skipped} of {seen} samples ({100 * skipped / seen:.1f}%) are unusable ({reasons})",
                f"fix the data or raise train.max_skip_fraction (now {self.max_skip})")


def phase_stream(recipe, phase, index: int, processor, rank: int = 0, world_size: int = 1,
                 state: dict | None = None, max_skip_fraction: float | None = None) -> PhaseStream:
    """The stream a recipe phase trains on (or that --dry-run inspects), for one rank."""
    from ..data.encode import EncodeConfig, Encoder
    from ..data.resolve import open_sources

    encoder = Encoder(processor, EncodeConfig(max_seq_len=phase.max_seq_len, video_fps=phase.video_fps,
                                              video_max_frames=phase.video_max_frames,
                                              video_backend=recipe.train.video_backend))
    sources = open_sources(recipe.sources, [e.source for e in phase.data], recipe.synthetic)
    skip = recipe.train.max_skip_fraction if max_skip_fraction is None else max_skip_fraction
    return PhaseStream(sources, phase.data, encoder, seed=recipe.seed + 7919 * index, rank=rank,
                       world_size=world_size, micro_batch_size=phase.micro_batch_size,
                       window=recipe.train.group_window, packing=phase.packing, group=phase.group_by_length,
                       max_seq_len=phase.max_seq_len, max_skip_fraction=skip, num_workers=recipe.train.num_workers,
                       state=StreamState.from_json(state) if state else None)
