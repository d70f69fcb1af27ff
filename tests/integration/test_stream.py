"""The training data stream: exact resume mid-window, disjoint rank shards, worker processes, skipped samples."""
from __future__ import annotations

import json

import pytest
import torch

from smolvlm_cli.data.encode import EncodeConfig, Encoder
from smolvlm_cli.data.resolve import open_sources
from smolvlm_cli.recipe import MixtureEntry
from smolvlm_cli.train.stream import DataQualityError, PhaseStream, StreamState


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    from transformers import AutoProcessor

    return Encoder(AutoProcessor.from_pretrained(tiny_model_dir), EncodeConfig(max_seq_len=512))


@pytest.fixture(scope="module")
def sources():
    from smolvlm_cli.data.sources import SourceSpec

    specs = {n: SourceSpec(path=f"synthetic:{n}") for n in ("colour", "text", "compare")}
    return open_sources(specs, list(specs))


ENTRIES = [MixtureEntry(source="colour", weight=50), MixtureEntry(source="text", weight=30),
           MixtureEntry(source="compare", weight=20)]


def make(sources, encoder, rank=0, world=1, state=None, workers=0, packing=False, group=True, entries=ENTRIES):
    return PhaseStream(sources, entries, encoder, seed=3, rank=rank, world_size=world, micro_batch_size=4, window=3,
                       packing=packing, group=group, max_seq_len=512, max_skip_fraction=0.01, num_workers=workers,
                       state=state)


def take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("packing", [False, True])
def test_resume_mid_window_continues_exactly(sources, encoder, packing):
    straight = take(make(sources, encoder, packing=packing), 10)
    first = make(sources, encoder, packing=packing)
    head = take(first, 4)  # 4 micro-batches: one full window of 3, then 1 into the next
    state = json.loads(json.dumps(first.state.to_json()))
    assert state["window_batches_done"] == 1
    tail = take(make(sources, encoder, state=StreamState.from_json(state), packing=packing), 6)
    assert all(same(a, b) for a, b in zip(head + tail, straight))


def test_ranks_read_disjoint_samples(sources, encoder):
    def ids(stream, n):
        return [tuple(row[mask.bool()].tolist()) for b in take(stream, n)
                for row, mask in zip(b["input_ids"], b["attention_mask"])]

    single = make(sources, encoder, group=False)
    r0, r1 = make(sources, encoder, 0, 2, group=False), make(sources, encoder, 1, 2, group=False)
    a, b, both = ids(r0, 3), ids(r1, 3), ids(single, 6)
    # without grouping, rank r's i-th sample is the single stream's (2i + r)-th
    assert [both[2 * i] for i in range(12)] == a and [both[2 * i + 1] for i in range(12)] == b


def test_worker_processes_give_the_same_batches(sources, encoder):
    assert all(same(x, y) for x, y in zip(take(make(sources, encoder), 4),
                                          take(make(sources, encoder, workers=2), 4)))


def test_unusable_samples_are_counted_and_stop_the_phase_past_the_threshold(tmp_path, encoder):
    from smolvlm_cli.data.sources import SourceSpec

    rows = []
    for i in range(100):
        msgs = [{"role": "user", "content": [{"type": "image", "path": f"missing-{i}.png"},
                                             {"type": "text", "text": "Q?"}]}] if i % 10 == 0 else \
            [{"role": "user", "content": "Q?"}]
        rows.append({"id": str(i), "messages": msgs + [{"role": "assistant", "content": "a"}]})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    src = open_sources({"d": SourceSpec(path=str(tmp_path / "d.jsonl"), schema="jsonl")}, ["d"])
    stream = make(src, encoder, entries=[MixtureEntry(source="d", weight=1)])
    with pytest.raises(DataQualityError, match=r"samples \(\d+\.\d%\) are unusable \(missing media: \d+\)"):
        take(stream, 40)
    assert set(stream.skipped) == {"missing media"} and stream.skipped["missing media"] >= 5
