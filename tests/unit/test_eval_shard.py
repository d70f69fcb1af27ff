"""Eval on several ranks: rank r answers items r, r + world, ... of a task (building no other item), and the shares
merge back into the items' own order on rank 0."""
from __future__ import annotations

import pytest

from smolvlm_cli.errors import MediaError
from smolvlm_cli.eval.data import RowSource, iter_items, row_sources
from smolvlm_cli.eval.shard import gather_shares, merge_shares, share_size
from smolvlm_cli.eval.tasks import registry


class Rows(list):
    """Rows that note which of them were read."""

    def __init__(self, rows, read):
        super().__init__(rows)
        self.read = read

    def __getitem__(self, index):
        self.read.append(index)
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    from smolvlm_cli.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, n_train=1, n_test=7, seed=0, image_size=32)
    task = registry()["synthetic_colour"]
    (source,) = row_sources(task, root)
    return task, source


def two_sources(source, read):
    """The 7 rows as two (sub)sets of 4 and 3: positions count over both."""
    return [RowSource("a", Rows(source.rows[:4], read["a"]), source.data_dir),
            RowSource("b", Rows(source.rows[4:], read["b"]), source.data_dir)]


@pytest.mark.parametrize("world,sizes,rows_read", [
    (2, [4, 3], [{"a": [0, 2], "b": [0, 2]}, {"a": [1, 3], "b": [1]}]),
    (3, [3, 2, 2], [{"a": [0, 3], "b": [2]}, {"a": [1], "b": [0]}, {"a": [2], "b": [1]}]),
])
def test_shares_merge_back_into_every_item_once_in_order(colour, world, sizes, rows_read):
    task, source = colour
    full = [(it.id, it.answers) for it in iter_items(task, two_sources(source, {"a": [], "b": []}), "lmms", None)]
    assert [i for i, _ in full] == [f"synthetic-colour-test-{n:05d}" for n in range(7)]
    shares = []
    for rank in range(world):
        read = {"a": [], "b": []}
        shares.append([(it.id, it.answers) for it in
                       iter_items(task, two_sources(source, read), "lmms", None, shard=(rank, world))])
        assert read == rows_read[rank]  # the other ranks' rows are never read, their images never decoded
    assert [len(s) for s in shares] == sizes == [share_size(7, r, world) for r in range(world)]
    assert [i for i, _ in shares[1]] == [f"synthetic-colour-test-{n:05d}" for n in range(1, 7, world)]
    assert merge_shares(shares) == full
    assert gather_shares(full, None, 0, 1) == full  # one process: its own records, as they are


def test_shares_that_do_not_split_the_items_are_refused():
    with pytest.raises(RuntimeError, match=r"eval shares of \[2, 3\] records do not split 5 items over 2 ranks"):
        merge_shares([["a", "c"], ["b", "d", "e"]])
    assert merge_shares([[], []]) == []
    assert merge_shares([["a", "c"], ["b"]]) == ["a", "b", "c"]


def test_an_error_of_the_one_process_is_raised_as_it_is():
    error = MediaError("video for mvbench not found: x.mp4", "check --media-root")
    with pytest.raises(MediaError) as raised:
        gather_shares([], error, 0, 1)
    assert raised.value is error and raised.value.agreed is False
