# The data of a phase is split into shards fixed when the phase starts (one per process then): shard s is the
# stream of draws s, s + S, s + 2S, ... of the mixture, batched on its own. An optimizer step takes the same number
# of micro-batches from every shard, so the global batch of a step does not depend on the number of processes that
# read it. A run resumed on another number of processes therefore trains on the same global batches: each process
# reads the shards its share of the step's micro-batches come from (several shards when there are fewer processes;
# a shard read by several processes, each keeping its own micro-batches, when there are more).
from __future__ import annotations

from collections import Counter

from ..errors import RecipeError


class RankStream:
    """This process's micro-batches of each optimizer step. `make_shard(shard, shards, state)` opens one shard's
    stream (train.stream.PhaseStream) at `state` (None: the phase's start)."""

    def __init__(self, make_shard, shards: int, rank: int, world_size: int, per_step: int,
                 states: dict[int, dict] | None = None):
        if per_step % shards or per_step % world_size:
            raise RecipeError(f"a step's {per_step} micro-batches split neither into the phase's {shards} data "
                              f"shards nor over {world_size} processes evenly",
                              f"resume on a number of processes that divides {per_step}")
        self.n_shards, self.per_shard = shards, per_step // shards
        self.mine = range(rank * per_step // world_size, (rank + 1) * per_step // world_size)
        owned = sorted({q // self.per_shard for q in self.mine})
        states = states or {}
        missing = [s for s in owned if states and s not in states]
        if missing:
            raise RecipeError(f"the checkpoint has no data cursor for shard {missing[0]}",
                              "resume from a checkpoint written by this version, or start the phase over")
        self.shards = {s: make_shard(s, shards, states.get(s)) for s in owned}
        self.batches = {s: iter(stream) for s, stream in self.shards.items()}

    @property
    def micro_batches(self) -> int:
        """How many micro-batches this process trains on per step (its gradient accumulation)."""
        return len(self.mine)

    def step(self) -> list[dict]:
        """The next step's micro-batches of this process; StopIteration when a shard it reads ends."""
        out = []
        for s, batches in self.batches.items():
            for i in range(self.per_shard):
                batch = next(batches)
                if s * self.per_shard + i in self.mine:
                    out.append(batch)
        return out

    def states(self) -> dict[int, dict]:
        """The cursor of every shard this process reads, at the current step boundary."""
        return {s: stream.state.to_json() for s, stream in self.shards.items()}

    @property
    def seen(self) -> int:
        return sum(stream.seen for stream in self.shards.values())

    @property
    def skipped(self) -> Counter:
        return sum((stream.skipped for stream in self.shards.values()), Counter())

    @property
    def fitted(self) -> Counter:
        return sum((stream.fitted for stream in self.shards.values()), Counter())
