# Eval on several ranks at once: rank r of `world` answers the items at positions r, r + world, ... of a task, and
# the ranks' records come back together on rank 0 in the items' own order, for the one scorer.
from __future__ import annotations

from ..errors import UserError


def share_size(n: int, rank: int, world: int) -> int:
    """How many of a task's n items rank `rank` of `world` answers."""
    return len(range(rank, n, world))


def merge_shares(shares: list[list]) -> list:
    """The ranks' records (rank r's k-th is item r + k * world) interleaved back into item order."""
    world, n = len(shares), sum(len(s) for s in shares)
    sizes = [len(s) for s in shares]
    if sizes != [share_size(n, r, world) for r in range(world)]:
        raise RuntimeError(f"eval shares of {sizes} records do not split {n} items over {world} ranks")
    return [shares[i % world][i // world] for i in range(n)]


def gather_shares(mine: list, error: UserError | None, rank: int, world: int) -> list | None:
    """Every rank's records, merged in item order, on rank 0 (None on the others). A UserError on any rank (a
    missing video, say) is raised on every rank, the lowest rank's, so that none waits for a rank that gave up."""
    if world == 1:
        if error is not None:
            raise error
        return mine
    import torch.distributed as dist

    everyone: list = [None] * world
    dist.all_gather_object(everyone, (error, None if error is not None else mine))
    failed = next((r for r, (e, _) in enumerate(everyone) if e is not None), None)
    if failed is not None:
        chosen = error if failed == rank else everyone[failed][0]  # keep our own traceback
        chosen.agreed = True
        raise chosen
    return merge_shares([records for _, records in everyone]) if rank == 0 else None
