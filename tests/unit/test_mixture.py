# Tests for data/mixture.py: proportions, determinism, exact resume, rank sharding, epochs, caps, errors,
# and the streaming reader. All pure index math: no data is loaded.
from __future__ import annotations

import json
from collections import Counter
from itertools import islice

import pytest

from smolvlm_cli.data.mixture import (
    Draw,
    Mixture,
    MixtureSource,
    StreamReader,
    expected_counts,
    expected_shares,
    mixture_report,
    source_for_step,
    step_uniform,
)
from smolvlm_cli.errors import RecipeError

SRC = [MixtureSource("a", 60, 1000), MixtureSource("b", 40, 700)]


def take(mixture, n, **kw):
    return list(islice(mixture.draws(**kw), n))


def test_expected_shares_normalise_weights():
    assert expected_shares(SRC) == [0.6, 0.4]
    assert expected_shares([MixtureSource("x", 3), MixtureSource("y", 1), MixtureSource("z", 0)]) == [0.75, 0.25, 0.0]


def test_step_uniform_is_a_pure_function_of_seed_and_step():
    us = [step_uniform(7, i) for i in range(2000)]
    assert us == [step_uniform(7, i) for i in range(2000)]
    assert all(0.0 <= u < 1.0 for u in us)
    assert us != [step_uniform(8, i) for i in range(2000)]
    assert abs(sum(us) / len(us) - 0.5) < 0.02
    with pytest.raises(ValueError):
        step_uniform(0, -1)


def test_source_for_step_respects_zero_weights():
    assert {source_for_step(3, i, [0, 5, 0]) for i in range(500)} == {1}
    assert {source_for_step(3, i, [2, 0]) for i in range(500)} == {0}
    with pytest.raises(ValueError):
        source_for_step(3, 0, [0, 0])


def test_source_for_step_top_of_the_interval_goes_to_the_last_positive_source(monkeypatch):
    import smolvlm_cli.data.mixture as mixture

    monkeypatch.setattr(mixture, "step_uniform", lambda seed, step: 1.0)  # rounding guard: u * total == total
    assert mixture.source_for_step(0, 0, [1, 2, 0]) == 1


def test_proportions_60_40_over_10k_draws():
    counts = Counter(d.source for d in take(Mixture(SRC, seed=0), 10_000))
    assert abs(counts[0] / 10_000 - 0.6) < 0.015
    assert counts[0] + counts[1] == 10_000


def test_proportions_three_way_unnormalised_weights():
    src = [MixtureSource("v", 5, 100), MixtureSource("i", 3, None), MixtureSource("t", 2, 50)]
    counts = Counter(d.source for d in take(Mixture(src, seed=11), 10_000))
    for i, share in enumerate([0.5, 0.3, 0.2]):
        assert abs(counts[i] / 10_000 - share) < 0.015


def test_deterministic_for_a_seed_and_different_across_seeds():
    first = take(Mixture(SRC, seed=42), 1000)
    assert first == take(Mixture(SRC, seed=42), 1000)
    assert first != take(Mixture(SRC, seed=43), 1000)
    assert all(isinstance(d, Draw) for d in first)


def test_exact_resume_through_json():
    straight = take(Mixture(SRC, seed=5), 10_000)
    m = Mixture(SRC, seed=5)
    head = take(m, 4000)
    state = json.loads(json.dumps(m.state_dict()))
    assert state["step"] == 4000
    assert sum(s["consumed"] for s in state["sources"]) == 4000
    resumed = Mixture(SRC, seed=5)
    resumed.load_state_dict(state)
    assert head + take(resumed, 6000) == straight
    # A start step alone replays the cursor to the same place.
    assert take(Mixture(SRC, seed=5), 6000, start_step=4000) == straight[4000:]


def test_state_dict_reports_epochs():
    m = Mixture([MixtureSource("s", 1, 3), MixtureSource("t", 1, None)], seed=0)
    take(m, 100)
    a, b = m.state_dict()["sources"]
    assert a["epoch"] == a["consumed"] // 3 and a["consumed"] > 3
    assert b["epoch"] is None and a["consumed"] + b["consumed"] == 100


def test_seek_backwards_replays_from_zero():
    m = Mixture(SRC, seed=1)
    straight = take(m, 300)
    assert take(m, 100, start_step=50) == straight[50:150]


@pytest.mark.parametrize("world", [2, 3])
def test_rank_sharding_is_disjoint_and_complete(world):
    straight = take(Mixture(SRC, seed=9), 3000)
    per_rank = []
    for rank in range(world):
        m = Mixture(SRC, seed=9)
        per_rank.append(take(m, 3000 // world, rank=rank, world_size=world))
        assert m.state_dict()["step"] == 3000  # same cursor on every rank: any rank's checkpoint resumes all
    for rank, draws in enumerate(per_rank):
        assert draws == straight[rank::world]
    interleaved = [d for round_ in zip(*per_rank) for d in round_]
    assert interleaved == straight


def test_resume_with_another_world_size():
    straight = take(Mixture(SRC, seed=4), 1000)
    m = Mixture(SRC, seed=4)
    take(m, 200, rank=1, world_size=2)
    state = json.loads(json.dumps(m.state_dict()))
    got = []
    for rank in range(3):
        r = Mixture(SRC, seed=4)
        r.load_state_dict(state)
        got.append(take(r, 200, rank=rank, world_size=3))
    assert [d for round_ in zip(*got) for d in round_] == straight[400:1000]


def test_up_sampling_repeats_rows_in_a_new_permutation_per_epoch():
    src = [MixtureSource("small", 90, 5), MixtureSource("big", 10, 10_000)]
    small = [d for d in take(Mixture(src, seed=3), 500) if d.source == 0]
    assert len(small) > 400
    epochs = len(small) // 5
    for e in range(epochs):
        chunk = small[5 * e: 5 * e + 5]
        assert sorted(d.row for d in chunk) == [0, 1, 2, 3, 4]
        assert {d.epoch for d in chunk} == {e}
    orders = {tuple(d.row for d in small[5 * e: 5 * e + 5]) for e in range(epochs)}
    assert len(orders) > 20  # permutations change between epochs


def test_down_sampling_reads_distinct_rows():
    src = [MixtureSource("big", 10, 1000), MixtureSource("other", 90, 1000)]
    big = [d for d in take(Mixture(src, seed=0), 2000) if d.source == 0]
    assert 150 < len(big) < 250
    assert len({d.row for d in big}) == len(big) and {d.epoch for d in big} == {0}


def test_row_order_follows_the_source_name_not_its_position():
    a = [d.row for d in take(Mixture([MixtureSource("x", 1, 50)], seed=2), 50)]
    b = [d.row for d in take(Mixture([MixtureSource("y", 1, 7), MixtureSource("x", 1, 50)], seed=2), 200)
         if d.source == 1]
    assert b[:len(a)] == a[:len(b)] and len(b) > 30


def test_streaming_source_yields_consumption_index():
    src = [MixtureSource("stream", 50, None), MixtureSource("file", 50, 10)]
    stream = [d for d in take(Mixture(src, seed=0), 400) if d.source == 0]
    assert [d.row for d in stream] == list(range(len(stream)))
    assert {d.epoch for d in stream} == {None}


def test_max_samples_cap_drops_source_and_renormalises():
    src = [MixtureSource("a", 60, 10_000, max_samples=100), MixtureSource("b", 20, 1000), MixtureSource("c", 20, None)]
    draws = take(Mixture(src, seed=6), 3000)
    a_steps = [i for i, d in enumerate(draws) if d.source == 0]
    assert len(a_steps) == 100
    after = Counter(d.source for d in draws[a_steps[-1] + 1:])
    assert after[0] == 0 and abs(after[1] / (after[1] + after[2]) - 0.5) < 0.05
    assert Mixture(src, seed=6).total() is None


def test_max_epochs_cap_and_end_of_a_fully_capped_mixture():
    src = [MixtureSource("s", 90, 5, max_epochs=2), MixtureSource("t", 10, 100, max_samples=30)]
    m = Mixture(src, seed=1)
    assert m.total() == 40
    draws = list(m.draws())
    assert len(draws) == 40
    assert Counter(d.row for d in draws if d.source == 0) == {r: 2 for r in range(5)}
    assert list(m.draws()) == []  # ended stays ended
    with pytest.raises(RecipeError, match="past the end"):
        Mixture(src, seed=1).seek(41)


def test_fractional_max_epochs_floors():
    assert MixtureSource("s", 1, 10, max_epochs=1.55).cap == 15
    assert MixtureSource("s", 1, 10, max_samples=12, max_epochs=2).cap == 12
    assert MixtureSource("s", 1, None).cap is None


def test_resume_across_a_cap_boundary():
    src = [MixtureSource("a", 70, 50, max_samples=60), MixtureSource("b", 30, 40)]
    straight = take(Mixture(src, seed=2), 500)
    m = Mixture(src, seed=2)
    head = take(m, 50)
    r = Mixture(src, seed=2)
    r.load_state_dict(json.loads(json.dumps(m.state_dict())))
    assert head + take(r, 450) == straight


def test_capped_mixture_ending_mid_round_across_ranks():
    src = [MixtureSource("a", 1, 10, max_samples=7)]
    per_rank = [list(Mixture(src, seed=0).draws(rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in per_rank] == [3, 2, 2]
    assert sorted(d.row for p in per_rank for d in p) == sorted(d.row for d in Mixture(src, seed=0).draws())


@pytest.mark.parametrize(
    "sources, match",
    [
        ([MixtureSource("a", -1, 5), MixtureSource("b", 2, 5)], "'a' has weight -1"),
        ([MixtureSource("a", 0, 5), MixtureSource("b", 0)], "every data source has weight 0"),
        ([MixtureSource("a", float("nan"), 5)], "'a' has weight nan"),
        ([], "no sources"),
        ([MixtureSource("a", 1, 5), MixtureSource("a", 1, 5)], "'a' is listed twice"),
        ([MixtureSource("a", 1, 0)], "'a' is empty"),
        ([MixtureSource("a", 1, 5, max_samples=0)], "max_samples 0"),
        ([MixtureSource("a", 1, None, max_epochs=2)], "streaming"),
        ([MixtureSource("a", 1, 5, max_epochs=0)], "must be > 0"),
    ],
)
def test_bad_mixtures_raise_recipe_errors(sources, match):
    with pytest.raises(RecipeError, match=match) as err:
        Mixture(sources, seed=0)
    assert "\n" not in err.value.one_line() and err.value.hint


def test_load_state_refuses_another_mixture():
    m = Mixture(SRC, seed=0)
    take(m, 10)
    state = m.state_dict()
    with pytest.raises(RecipeError, match="seed is 0"):
        Mixture(SRC, seed=1).load_state_dict(state)
    with pytest.raises(RecipeError, match="changed since the checkpoint"):
        Mixture([MixtureSource("a", 50, 1000), MixtureSource("b", 40, 700)], seed=0).load_state_dict(state)
    state["step"] = 11
    with pytest.raises(RecipeError, match="inconsistent"):
        Mixture(SRC, seed=0).load_state_dict(state)
    with pytest.raises(RecipeError, match="format"):
        Mixture(SRC, seed=0).load_state_dict({"version": 99})


def test_bad_rank_is_a_programming_error():
    with pytest.raises(ValueError):
        Mixture(SRC, seed=0).draws(rank=2, world_size=2)


def test_expected_counts_water_fill_caps():
    src = [MixtureSource("a", 50, None), MixtureSource("b", 30, 1000, max_samples=100), MixtureSource("c", 20, 9)]
    assert expected_counts(src, 1000) == [900 * 50 / 70, 100.0, 900 * 20 / 70]
    assert expected_counts(src[1:2], 1000) == [100.0]  # the mixture ends after its cap
    assert expected_counts(src, 200) == [100.0, 60.0, 40.0]


def test_mixture_report_counts_the_first_n_draws():
    src = [MixtureSource("a", 60, 200), MixtureSource("b", 40, None, max_samples=50)]
    rows = mixture_report(src, seed=0, n=1000)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[1]["draws"] == 50 and rows[0]["draws"] == 950
    assert rows[0]["passes"] == 950 / 200 and rows[1]["passes"] is None
    assert [r["expected"] for r in rows] == [950.0, 50.0]
    assert [r["weight_share"] for r in rows] == [0.6, 0.4]
    counts = Counter(d.source for d in take(Mixture(src, seed=0), 1000))
    assert [r["draws"] for r in rows] == [counts[0], counts[1]]


class Stream:
    """A stream of `n` rows that counts how often it is opened and where."""

    def __init__(self, n):
        self.n, self.opened, self.read = n, [], 0

    def __call__(self, start):
        self.opened.append(start)
        for row in range(start, self.n):
            self.read += 1
            yield row


def test_stream_reader_wraps_and_skips():
    s = Stream(4)
    r = StreamReader("s", s)
    assert [r.get(k) for k in [0, 1, 3, 4, 6, 9, 13]] == [0, 1, 3, 0, 2, 1, 1]
    assert r.length == 4
    assert s.opened == [0, 0, 1, 1]
    assert s.read == 4 + 3 + 1 + 1  # k=9 and k=13 are in later passes: opened there, not read through


def test_stream_reader_resumes_past_the_first_pass():
    s = Stream(5)
    r = StreamReader("s", s)
    assert r.get(12) == 2 and r.length == 5
    assert r.get(13) == 3


def test_stream_reader_rank_sharded_draws_match_the_single_reader():
    src = [MixtureSource("stream", 50, None), MixtureSource("file", 50, 10)]
    single = StreamReader("s", Stream(7))
    want = [single.get(d.row) for d in take(Mixture(src, seed=0), 300) if d.source == 0]
    got = []
    for rank in range(2):
        reader = StreamReader("s", Stream(7))
        got += [(i * 2 + rank, reader.get(d.row))
                for i, d in enumerate(take(Mixture(src, seed=0), 150, rank=rank, world_size=2)) if d.source == 0]
    assert [row for _, row in sorted(got)] == want


def test_stream_reader_errors():
    r = StreamReader("s", Stream(3))
    r.get(2)
    with pytest.raises(ValueError, match="in order"):
        r.get(1)
    with pytest.raises(RecipeError, match="'e' has no rows"):
        StreamReader("e", Stream(0)).get(0)
    with pytest.raises(RecipeError, match="has no rows"):
        StreamReader("e", Stream(0)).get(5)
    shrinking = StreamReader("x", lambda i, rows=[4, 2]: iter(range(i, rows.pop(0) if len(rows) > 1 else 2)))
    assert [shrinking.get(k) for k in range(4)] == [0, 1, 2, 3]
    assert shrinking.get(5) == 1
    with pytest.raises(RecipeError, match="ended at row 2, not 4"):
        shrinking.get(7)
