"""Ranks stop together with one message: a stop on one rank (its data ends first, its disk fills up) or a
scheduler's signal is agreed by every rank at a step boundary; `--nproc 2` then exits with one line and no launcher
report, and a signal leaves a checkpoint from which the same command finishes with the same weights."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from smolvlm_cli.errors import ERROR_FILE_ENV, OutputError, Stopped, hand_off, recorded_error
from tests.conftest import TINY_RECIPE
from tests.integration.test_launch import _kill_all, _tree, clean_env, smolvlm

TIMEOUT = 300
DORA = ("parts: {vision: {mode: dora, lr: 1.0e-3}, connector: {mode: full, lr: 1.0e-3}, "
        "text: {mode: dora, lr: 1.0e-3}, embeddings: {mode: full, lr: 1.0e-3}}, "
        "adapter: {r: 4, alpha: 8, dropout: 0.1}, neftune_alpha: 5")  # dropout and noise: resume needs the RNGs


def phase(steps: int, data: str) -> str:
    """One small phase; global batch 4 = 2 processes x micro-batch 2, no accumulation."""
    return (f"stages.vision.phases=[{{name: p, steps: {steps}, global_batch_size: 4, micro_batch_size: 2, "
            f"max_seq_len: 256, group_by_length: false, schedule: {{type: constant, warmup_steps: 0}}, {DORA}, "
            f"data: [{data}]}}]")


def train_cmd(model: Path, run: Path, steps: int, data: str, *sets: str) -> list[str]:
    args = ["train-vision", "--recipe", str(TINY_RECIPE), "--init", str(model), "--out", str(run),
            "--set", phase(steps, data), "--nproc", "2"]
    for s in sets:
        args += ["--set", s]
    return smolvlm(*args)


class Launched:
    """`smolvlm` in a session of its own, every process below it remembered (torchrun's ranks sit in sessions of
    their own) and SIGKILLed at the end whatever happens."""

    def __init__(self, cmd: list[str], logs: Path, env: dict | None = None):
        self.out, self.err = logs.with_suffix(".out"), logs.with_suffix(".err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.root = subprocess.Popen(cmd, env=env or clean_env(), stdout=out, stderr=err, start_new_session=True)
        self.seen: dict = {}

    def poll(self) -> int | None:
        if self.root.poll() is None:  # not reaped: its pid cannot belong to another process yet
            self.seen.update(_tree(self.root.pid))
        return self.root.poll()

    def wait(self, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.root.poll()

    def stderr(self) -> str:
        return self.err.read_text()

    def leftovers(self, timeout: float) -> list:
        """Processes of the launch still alive `timeout` seconds after now."""
        return psutil.wait_procs([p for p in self.seen.values() if p.pid != self.root.pid], timeout=timeout)[1]

    def kill(self) -> None:
        _kill_all([*self.seen.values(), *([psutil.Process(self.root.pid)] if self.root.poll() is None else [])])


@pytest.fixture
def launched():
    started: list[Launched] = []

    def start(cmd, logs, env=None):
        started.append(Launched(cmd, logs, env))
        return started[-1]

    yield start
    for launch in started:
        launch.kill()


def assert_one_clean_line(stderr: str, line: str) -> None:
    assert stderr.count(line) == 1, stderr[-3000:]
    assert stderr.count("error:") + stderr.count("stopped:") == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "ChildFailedError" not in stderr, stderr[-3000:]


def assert_loadable(ckpt: Path) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from smolvlm_cli.train.checkpoint import DS_TAG

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=DS_TAG)
    assert state and all(torch.isfinite(t).all() for t in state.values())
    for rank in (0, 1):
        extra = torch.load(ckpt / f"rank{rank}.pt", weights_only=True)
        assert set(extra) == {"rng", "streams"} and set(extra["streams"]) == {rank}  # the cursor of its data shard


@pytest.mark.slow
def test_one_rank_out_of_data_stops_every_rank_with_one_line(tmp_path, tiny_model_dir, launched):
    # 11 draws in rounds of 2: rank 0 gets 6 samples (3 micro-batches of 2), rank 1 gets 5 (2 batches and a rest)
    run = tmp_path / "run"
    launch = launched(train_cmd(tiny_model_dir, run, 5, "{source: colour, weight: 1, max_samples: 11}",
                                "train.checkpoint_every=1"), tmp_path / "log")
    assert launch.wait() == 2, launch.stderr()[-3000:]
    ended = time.time()
    assert not launch.leftovers(timeout=5), "processes of the launch outlived it"
    assert_one_clean_line(launch.stderr(), "error: phase 'p' ran out of data at step 3 of 5 - raise the sources' "
                                           "caps or lower the phase's steps")
    last_step = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_step["step"] == 2 and ended - last_step["time"] < 30  # every rank gone within 30 s of the stop
    from smolvlm_cli.train.checkpoint import latest

    assert latest(run).name == "phase0-step00000002"
    assert_loadable(latest(run))


FULL_ON_RANK_1 = '''
import errno, os
if os.environ.get("RANK") == "1":  # rank 1's disk is full when it writes step 4 inside DeepSpeed's save
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    real = TorchCheckpointEngine.save
    def save(self, state_dict, path, *args, **kwargs):
        if "step00000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, state_dict, path, *args, **kwargs)
    TorchCheckpointEngine.save = save
'''


@pytest.mark.slow
def test_a_full_disk_on_one_rank_stops_every_rank_with_one_line(tmp_path, tiny_model_dir, launched):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FULL_ON_RANK_1)  # runs at start-up in every process of the launch
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    run = tmp_path / "run"
    launch = launched(train_cmd(tiny_model_dir, run, 6, "{source: colour, weight: 1}", "train.checkpoint_every=2"),
                      tmp_path / "log", env)
    assert launch.wait() == 2, launch.stderr()[-3000:]
    assert not launch.leftovers(timeout=5)
    assert_one_clean_line(launch.stderr(), "error: disk full while writing checkpoint phase0-step00000004; the last "
                                           "complete one (phase0-step00000002) is intact - free space")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "phase0-step00000002"]
    assert_loadable(run / "checkpoints" / "phase0-step00000002")


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_same_command_finishes_the_same(tmp_path, tiny_model_dir, launched):
    from safetensors.torch import load_file

    data = "{source: colour, weight: 1}"
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert launched(train_cmd(tiny_model_dir, straight, 8, data), tmp_path / "straight").wait() == 0

    launch = launched(train_cmd(tiny_model_dir, run, 8, data), tmp_path / "stopped")
    metrics = run / "metrics.jsonl"
    while launch.poll() is None and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)
    launch.root.send_signal(signal.SIGTERM)  # to `smolvlm` alone, as a scheduler does
    assert launch.wait() == 128 + signal.SIGTERM, launch.stderr()[-3000:]
    assert not launch.leftovers(timeout=5)
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert 1 <= step < 8
    name = f"phase0-step{step:08d}"
    assert_one_clean_line(launch.stderr(), f"stopped: SIGTERM at step {step} of 8 of phase 'p'; checkpoint {name} "
                                           f"written - run the same command to resume")
    assert (run / "checkpoints" / name / "trainer_state.json").is_file() and not (run / "phases").exists()

    again = launched(train_cmd(tiny_model_dir, run, 8, data), tmp_path / "resumed")
    assert again.wait() == 0, again.stderr()[-3000:]
    assert f"resumed from {name} at step {step}" in again.stderr()
    a, b = (load_file(r / "phases" / "00-p" / "model.safetensors") for r in (straight, run))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_ranks_hand_one_error_to_the_launching_parent(tmp_path):
    path = str(tmp_path / "error.json")
    launch = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", ERROR_FILE_ENV: path}
    full = OutputError("disk full while writing checkpoint X", "free space")
    assert hand_off(full) == (True, 2)  # no launch: print it here
    assert hand_off(full, launch) == (False, 2) and recorded_error(path).one_line() == full.one_line()
    assert hand_off(OutputError("another"), launch) == (False, 2)  # the first error stays: it is the cause
    assert recorded_error(path).message == full.message
    full.agreed = True
    assert hand_off(full, launch) == (False, 0)  # every rank stopped: the launcher has nothing to report
    stop = Stopped("SIGUSR1 at step 3", "run the same command to resume", signal.SIGUSR1)
    stop.agreed = True
    assert hand_off(stop, {**launch, "RANK": "0", "LOCAL_RANK": "0"}) == (False, 0)
    parent = recorded_error(path)
    assert (parent.label, parent.exit_code, parent.one_line()) == ("stopped", 138, stop.one_line())
    # without a launching parent (srun, torchrun by hand) rank 0 alone prints an agreed error
    srun = {"RANK": "1", "WORLD_SIZE": "2"}
    assert hand_off(stop, srun) == (False, 138) and hand_off(stop, {**srun, "RANK": "0"}) == (True, 138)
    # ranks exchange their errors pickled: class, hint and exit code survive
    copy = pickle.loads(pickle.dumps(stop))
    assert type(copy) is Stopped and copy.one_line() == stop.one_line() and copy.exit_code == 138


@pytest.mark.slow
def test_sigusr1_on_one_process_checkpoints_at_the_step_boundary(tmp_path, tiny_model_dir, monkeypatch):
    from smolvlm_cli.recipe import dump_recipe, load_recipe
    from smolvlm_cli.train import checkpoint as ckpt
    from smolvlm_cli.train import engine
    from smolvlm_cli.train.run import train_stage

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dump_recipe(load_recipe(TINY_RECIPE, [phase(5, "{source: colour, weight: 1}")])))
    calls = {"n": 0}
    real = engine.supervised_loss_sum

    def signal_during_step_2(model, batch, labels):
        calls["n"] += 1
        if calls["n"] == 3:  # 2 micro-batches a step on one process
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(model, batch, labels)

    monkeypatch.setattr(engine, "supervised_loss_sum", signal_during_step_2)
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Stopped, match="SIGUSR1 at step 2 of 5 of phase 'p'; checkpoint phase0-step00000002") as e:
        train_stage(recipe, "vision", tiny_model_dir, tmp_path / "run")
    assert e.value.exit_code == 128 + signal.SIGUSR1 and signal.getsignal(signal.SIGUSR1) is before
    assert ckpt.latest(tmp_path / "run").name == "phase0-step00000002"


def test_rng_states_round_trip_through_a_checkpoint_file(tmp_path):
    """Resume is exact only if every generator a step draws from comes back: Python, NumPy, torch and, on a GPU,
    every device's own (dropout and NEFTune noise there draw from it)."""
    import random

    import numpy as np

    from smolvlm_cli.train.checkpoint import rng_state, set_rng_state

    def draws():
        cuda = [torch.rand(3, device=f"cuda:{d}") for d in range(torch.cuda.device_count())]
        return [random.random(), float(np.random.rand()), torch.rand(3), *[c.cpu() for c in cuda]]

    torch.save(rng_state(), tmp_path / "rng.pt")
    first = draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = draws()
    assert len(first) == 3 + torch.cuda.device_count()
    assert first[:2] == again[:2] and all(torch.equal(a, b) for a, b in zip(first[2:], again[2:]))
