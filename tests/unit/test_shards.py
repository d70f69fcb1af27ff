# A step's global batch does not depend on the number of processes that read it: which micro-batches each process
# trains on, from which shards, for fewer, as many and more processes than the phase's data shards.
import pytest

from smolvlm_cli.errors import RecipeError
from smolvlm_cli.train.shards import RankStream


class FakeShard:
    """Micro-batches named (shard, index), from `state["next"]` on; its state is the next index."""

    def __init__(self, shard: int, shards: int, state: dict | None, length: int = 100):
        self.shard, self.shards, self.next, self.length = shard, shards, (state or {"next": 0})["next"], length

    def __iter__(self):
        while self.next < self.length:
            self.next += 1
            yield (self.shard, self.next - 1)

    @property
    def state(self):
        return self

    def to_json(self):
        return {"next": self.next}

    seen, skipped, fitted = 0, {}, {}


def steps(shards: int, world: int, per_step: int, n: int, states=None) -> list[list[list]]:
    """[step][rank] -> the micro-batches that rank trains on."""
    streams = [RankStream(FakeShard, shards, r, world, per_step, states) for r in range(world)]
    return [[s.step() for s in streams] for _ in range(n)]


def test_each_process_reads_whole_shards_when_they_divide_evenly():
    # 2 shards, a step of 4 micro-batches: 2 from each shard
    assert steps(2, 2, 4, 2) == [[[(0, 0), (0, 1)], [(1, 0), (1, 1)]], [[(0, 2), (0, 3)], [(1, 2), (1, 3)]]]
    assert steps(2, 1, 4, 1) == [[[(0, 0), (0, 1), (1, 0), (1, 1)]]]  # one process reads both shards
    assert steps(4, 2, 8, 1) == [[[(0, 0), (0, 1), (1, 0), (1, 1)], [(2, 0), (2, 1), (3, 0), (3, 1)]]]


def test_more_processes_than_shards_split_a_shard_s_micro_batches():
    assert steps(1, 2, 4, 2) == [[[(0, 0), (0, 1)], [(0, 2), (0, 3)]], [[(0, 4), (0, 5)], [(0, 6), (0, 7)]]]
    assert steps(2, 4, 4, 1) == [[[(0, 0)], [(0, 1)], [(1, 0)], [(1, 1)]]]


@pytest.mark.parametrize("shards,world", [(1, 2), (2, 1), (2, 4), (4, 2), (1, 4)])
def test_the_global_batch_of_every_step_is_the_same_for_any_number_of_processes(shards, world):
    reference = steps(shards, shards, 8, 3)
    other = steps(shards, world, 8, 3)
    assert [sorted(sum(step, [])) for step in other] == [sorted(sum(step, [])) for step in reference]


def test_the_cursor_is_per_shard_and_resumes_on_another_number_of_processes():
    two = [RankStream(FakeShard, 2, r, 2, 4) for r in range(2)]
    for s in two:
        s.step()
    cursor = {**two[0].states(), **two[1].states()}
    assert cursor == {0: {"next": 2}, 1: {"next": 2}}
    assert steps(2, 1, 4, 1, cursor) == [[[(0, 2), (0, 3), (1, 2), (1, 3)]]]
    assert RankStream(FakeShard, 2, 0, 1, 4, cursor).micro_batches == 4


def test_a_step_that_does_not_split_is_a_recipe_error():
    with pytest.raises(RecipeError, match="a step's 4 micro-batches split neither into the phase's 2 data shards "
                                          "nor over 3 processes evenly"):
        RankStream(FakeShard, 2, 0, 3, 4)
    with pytest.raises(RecipeError, match="no data cursor for shard 1"):
        RankStream(FakeShard, 2, 0, 1, 4, {0: {"next": 2}})
