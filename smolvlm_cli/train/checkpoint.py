# Checkpoints of a run: DeepSpeed state + per-rank data cursor and RNG, written under a temp name and renamed,
# the `latest` pointer updated last; keep the last K. Also consolidation of a ZeRO-3 engine into an HF folder.
from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

from .launch import barrier

LATEST = "latest"
DS_TAG = "state"


def ckpt_root(run: Path) -> Path:
    return Path(run) / "checkpoints"


def step_dir(run: Path, phase_index: int, step: int) -> Path:
    return ckpt_root(run) / f"phase{phase_index}-step{step:08d}"


def rng_state() -> dict:
    """RNG states as tensors and plain numbers, so they load with torch.load(weights_only=True)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save(engine, run: Path, phase_index: int, step: int, trainer_state: dict, stream_state: dict,
         rank: int, keep_last: int) -> Path:
    """All ranks call this. Writes into `<final>.tmp`, renames, then points `latest` at it."""
    import torch

    final = step_dir(run, phase_index, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    try:
        engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
        torch.save({"rng": rng_state(), "stream": stream_state}, tmp / f"rank{rank}.pt")
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        from ..errors import OutputError

        raise OutputError(f"disk full while writing checkpoint {final.name}; the last complete one "
                          f"({latest(run).name if latest(run) else 'none'}) is intact",
                          "free space (or lower train.keep_last) and run the same command to resume") from None
    barrier()
    if rank == 0:
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = ckpt_root(run) / (LATEST + ".tmp")
        pointer.write_text(final.name)
        os.replace(pointer, ckpt_root(run) / LATEST)
        _prune(run, keep_last)
    barrier()
    return final


def _prune(run: Path, keep_last: int) -> None:
    done = sorted(p for p in ckpt_root(run).glob("phase*-step*") if not p.name.endswith(".tmp"))
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def latest(run: Path) -> Path | None:
    """The last complete checkpoint: the pointer's target, else the newest complete folder (a crash between the
    rename and the pointer update), never a `.tmp` one."""
    root = ckpt_root(run)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if (target / "trainer_state.json").is_file():
            return target
    done = sorted(p for p in root.glob("phase*-step*") if (p / "trainer_state.json").is_file()
                  and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def read_trainer_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "trainer_state.json").read_text())


def load(engine, ckpt: Path, rank: int) -> dict:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG; return this rank's stream state."""
    import torch

    engine.load_checkpoint(str(ckpt), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
    extra = torch.load(ckpt / f"rank{rank}.pt", weights_only=True)
    set_rng_state(extra["rng"])
    return extra["stream"]


def gather_state_dict(engine, rank: int) -> dict | None:
    """The full (unpartitioned) module state dict on rank 0, as CPU tensors; None on other ranks."""
    import deepspeed

    module = engine.module
    params = list(module.parameters())
    zero3 = any(hasattr(p, "ds_id") for p in params)
    state = {}
    if zero3:
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank == 0:
                state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    elif rank == 0:
        state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    barrier()
    return state if rank == 0 else None
