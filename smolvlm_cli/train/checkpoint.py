# Checkpoints of a run: DeepSpeed state + per-rank data cursor and RNG, written under a temp name and renamed,
# the `latest` pointer updated last; keep the last K. Ranks agree on stopping (errors, a scheduler's signals) at
# checkpoint boundaries, so that they stop together. Also consolidation of a ZeRO-3 engine into an HF folder.
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import threading
from pathlib import Path

from ..errors import OutputError, Stopped, UserError
from .launch import barrier

LATEST = "latest"
DS_TAG = "state"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # a scheduler's "time is up" (Slurm: --signal=USR1@SECONDS)
_received: list[int] = []  # stop signals this process received, in order (set by the handler of deferred_stops)


def comm_device():
    """NCCL reduces tensors on the GPU, gloo on the CPU."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def deferred_stops():
    """While training, SIGTERM / SIGUSR1 only take note: the ranks agree on it at the next step boundary (agree) and
    stop together after a checkpoint, instead of dying mid-step at different points."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: _received.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()


def agree(error: UserError | None = None, signals: bool = True) -> int | None:
    """Every rank calls this at the same point. If any rank brings an error, every rank raises the same one (the
    lowest such rank's); else the stop signal some rank received (checked only with `signals`), or None: go on.
    One small all-reduce when nobody stops; the messages travel only when someone does."""
    import torch

    dist = torch.distributed
    signum = _received[0] if signals and _received else None
    mine = (2, error) if error is not None else (1, signum) if signum else (0, None)
    world = dist.get_world_size() if dist.is_initialized() else 1
    everyone = [mine]
    if world > 1:
        flag = torch.tensor([mine[0]], dtype=torch.int64, device=comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()) == 0:
            return None
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    code = max(c for c, _ in everyone)
    if code == 2:
        rank = next(r for r, (c, _) in enumerate(everyone) if c == 2)
        chosen = error if world == 1 or rank == dist.get_rank() else everyone[rank][1]  # keep our own traceback
        chosen.agreed = True
        raise chosen
    return next(s for c, s in everyone if c == 1) if code == 1 else None


def disband(error: UserError) -> None:
    """After an agreed stop, the ranks leave the process group before they exit. Left to the interpreter's
    shutdown with the engine still alive (the error's frames hold it), a rank sometimes aborted (SIGABRT) there."""
    import gc
    import traceback

    import torch

    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        traceback.clear_frames(error.__traceback__)  # the frames' locals: the engine, its groups, the data
        gc.collect()
        torch.distributed.destroy_process_group()


def stopped(signum: int, where: str, saved: str) -> Stopped:
    """The error every rank raises after agreeing to stop on `signum`."""
    error = Stopped(f"{signal.Signals(signum).name} {where}; {saved}", "run the same command to resume", signum)
    error.agreed = True
    return error


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
    state = {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # dropout and NEFTune noise on a GPU draw from its own generator
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a rank draws on its own device only; with fewer devices visible now, those present get theirs back
        for device, device_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


def save(engine, run: Path, phase_index: int, step: int, trainer_state: dict, stream_states: dict[int, dict],
         rank: int, keep_last: int) -> Path:
    """All ranks call this. Writes into `<final>.tmp`, renames, then points `latest` at it. `stream_states`: the
    data cursor of each shard this rank reads (train.shards)."""
    import torch

    final = step_dir(run, phase_index, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    full: list[OSError] = []
    try:
        with _noting_full_disk(engine, full):
            engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
        torch.save({"rng": rng_state(), "streams": stream_states}, tmp / f"rank{rank}.pt")
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        full.append(e)
    error = OutputError(f"disk full while writing checkpoint {final.name}; the last complete one "
                        f"({latest(run).name if latest(run) else 'none'}) is intact",
                        "free space (or lower train.keep_last) and run the same command to resume") if full else None
    try:
        agree(error, signals=False)  # the barrier after writing: a full disk on one rank stops every rank here
    except OutputError:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
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


@contextlib.contextmanager
def _noting_full_disk(engine, full: list):
    """DeepSpeed's save_checkpoint runs collectives between its writes: a rank raising out of it would leave the
    others waiting in one. So its writes note a full disk instead, and the ranks agree on it after the save."""
    writer = getattr(engine, "checkpoint_engine", None)
    if writer is None:
        yield
        return
    real, own = writer.save, "save" in vars(writer)

    def save(state_dict, path, *args, **kwargs):
        try:
            return real(state_dict, path, *args, **kwargs)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            full.append(e)

    writer.save = save
    try:
        yield
    finally:
        if own:
            writer.save = real
        else:
            del writer.save  # the class's method again


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


def load(engine, ckpt: Path, rank: int, resharded: bool = False) -> dict[int, dict]:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG (rank 0's where the writing run had no
    such rank); return the data cursor of every shard. `resharded`: the checkpoint was written by another number of
    processes, so DeepSpeed loads its universal form (the engine was built with `load_universal`)."""
    import torch

    folder = universal(ckpt, rank) if resharded else ckpt
    engine.load_checkpoint(str(folder), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
    if resharded:
        _after_universal_load(engine.optimizer, folder)
    states = {}
    for path in sorted(ckpt.glob("rank*.pt")):
        extra = torch.load(path, weights_only=True)
        states.update(extra["streams"] if "streams" in extra else {int(path.stem[4:]): extra["stream"]})
    own = ckpt / f"rank{rank}.pt"
    set_rng_state(torch.load(own if own.is_file() else ckpt / "rank0.pt", weights_only=True)["rng"])
    return states


def _after_universal_load(zero_optimizer, folder: Path) -> None:
    """Two things DeepSpeed's ZeRO-3 universal load (0.19) leaves wrong, set right: it gives every parameter group
    the settings of the first (our per-part learning rates, weight-decay split and names come back from the
    checkpoint), and one shared `step` tensor to every group's state, which AdamW then increments once per group
    and step (the bias correction drifts)."""
    import torch

    saved = torch.load(folder / DS_TAG / "zero" / "optimizer_state.pt", weights_only=False)
    groups = saved["optimizer_state_dict"]["param_groups"]
    for group, settings in zip(zero_optimizer.optimizer.param_groups, groups, strict=True):
        group.update({k: v for k, v in settings.items() if k != "params"})
    for state in zero_optimizer.optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def universal(ckpt: Path, rank: int) -> Path:
    """DeepSpeed's universal checkpoint of `ckpt` (every parameter's weights and optimizer moments whole, loadable
    on any number of processes): made once, by rank 0, beside the original. All ranks call this."""
    import argparse
    import io

    out = ckpt / "universal"
    error = None
    if rank == 0 and not (out / DS_TAG).is_dir():
        from deepspeed.checkpoint.ds_to_universal import main as to_universal

        tmp = ckpt / "universal.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        args = argparse.Namespace(input_folder=str(ckpt / DS_TAG), output_folder=str(tmp / DS_TAG),
                                  num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                                  inject_missing_state=False)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                to_universal(args)  # prints its progress
            os.replace(tmp, out)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            error = OutputError(f"cannot convert checkpoint {ckpt.name} for another number of processes: {e}",
                                "free space, or resume on the number of processes that wrote it")
    agree(error, signals=False)  # also the barrier: the universal form exists for every rank
    return out


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
