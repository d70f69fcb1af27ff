"""ZeRO configurations beyond the default on the tiny model: zero2 and zero3_offload (DeepSpeed's CPU Adam) train
like zero3, and ZeRO-3 with a persistence threshold of 0 partitions every weight over 2 processes through a DoRA
phase, the merge at the phase boundary, a full phase, checkpoints and export.

Run as a module (`python -m torch.distributed.run ... -m tests.integration.test_zero RECORD RECIPE INIT OUT`) it is
one rank of a 2-process run that also records what each parameter holds on that rank."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.integration.test_train import DORA, LAUNCH_ENV, losses, write_recipe

pytestmark = pytest.mark.slow

ADAPTER = {"r": 4, "alpha": 8, "dropout": 0.0}
SMALL = {"steps": 3, "global_batch_size": 4, "micro_batch_size": 2, "weight_decay": 0.1}
FULL = {part: {"mode": "full", "lr": 1e-3} for part in DORA}


def _train(recipe: Path, init: Path, out: Path, deepspeed: str | None = None) -> None:
    from smolvlm_cli.train.run import train_stage

    assert train_stage(recipe, "vision", init, out, deepspeed=deepspeed) == 0


def _phase_weights(run: Path, index: int) -> dict:
    from safetensors.torch import load_file

    return load_file(next((run / "phases").glob(f"{index:02d}-*")) / "model.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


# --- zero2 and zero3_offload against zero3, 1 process ---------------------------------------------------------

@pytest.fixture(scope="module")
def config_runs(tmp_path_factory, tiny_model_dir):
    """The same DoRA phase (3 optimizer steps, weight decay on) under each shipped config on 1 process, with the basic
    optimizer DeepSpeed ended up with and the offload settings of its engine."""
    from smolvlm_cli.train import engine

    real_build, seen = engine.build_engine, {}

    def build(job, **kwargs):
        eng, gas, names = real_build(job, **kwargs)
        opt = eng.basic_optimizer
        seen[job.ds_config] = {
            "optimizer": type(opt).__name__, "offload": (eng.zero_use_cpu_optimizer(), eng.zero_offload_param()),
            "groups": [(g["name"], g["initial_lr"], g["weight_decay"], g["betas"], g["eps"]) for g in opt.param_groups]}
        return eng, gas, names

    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "build_engine", build)
        for config in ("zero3", "zero2", "zero3_offload"):
            tmp = tmp_path_factory.mktemp(config)
            recipe = write_recipe(tmp, {**SMALL, "parts": DORA, "adapter": ADAPTER})
            _train(recipe, tiny_model_dir, tmp / "run", deepspeed=config)
            runs[config] = {"losses": losses(tmp / "run"), "weights": _phase_weights(tmp / "run", 0), **seen[config]}
    return runs


def test_zero2_and_zero3_offload_train_like_zero3(config_runs):
    ref = config_runs["zero3"]
    assert len(ref["losses"]) == 3
    for config in ("zero2", "zero3_offload"):
        run = config_runs[config]
        assert len(run["losses"]) == 3
        assert max(abs(a - b) for a, b in zip(run["losses"], ref["losses"])) < 1e-4, config
        assert _max_diff(run["weights"], ref["weights"]) < 1e-5, config


def test_zero3_offload_steps_with_cpu_adam_on_the_same_groups(config_runs):
    assert config_runs["zero3"]["optimizer"] == config_runs["zero2"]["optimizer"] == "AdamW"
    offload = config_runs["zero3_offload"]
    assert offload["optimizer"] == "DeepSpeedCPUAdam"
    assert offload["offload"][0] is True and offload["offload"][1] is not None  # optimizer and parameters on CPU
    assert config_runs["zero3"]["offload"] == (False, None)
    assert offload["groups"] == config_runs["zero3"]["groups"]
    names = [g[0] for g in offload["groups"]]
    assert names == ["vision", "vision/no_decay", "connector", "embeddings", "text", "text/no_decay"]
    assert [g[2] for g in offload["groups"]] == [0.1, 0.0, 0.1, 0.1, 0.1, 0.0]


# --- ZeRO-3 that partitions every parameter, 1 vs 2 processes -------------------------------------------------

def recording_save(folder: Path):
    """ckpt.save that first writes what every parameter of the engine holds on this rank: its full size, the size
    of this rank's partition, whether ZeRO keeps it whole (persistent) and the size of its gathered data."""
    from smolvlm_cli.train import checkpoint as ckpt

    real_save = ckpt.save

    def save(engine, run, phase_index, step, *args, **kwargs):
        rows = {n: [p.ds_numel, p.ds_tensor.numel(), p.ds_persist, p.numel()]
                for n, p in engine.module.named_parameters()}
        name = f"phase{phase_index}-rank{torch.distributed.get_rank()}.json"
        (folder / name).write_text(json.dumps({"world": engine.world_size, "params": rows}))
        return real_save(engine, run, phase_index, step, *args, **kwargs)

    return save


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(record: Path, recipe: Path, init: Path, out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "--nproc_per_node=2", "-m", "tests.integration.test_zero", *map(str, (record, recipe, init, out))]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def partitioned_runs(tmp_path_factory, tiny_model_dir):
    """A DoRA phase then a full phase with train.zero3_persistence_threshold=0, on 1 and on 2 processes."""
    import yaml

    tmp = tmp_path_factory.mktemp("partitioned")
    recipe = write_recipe(tmp, {**SMALL, "name": "dora", "parts": DORA, "adapter": ADAPTER},
                          zero3_persistence_threshold=0)
    data = yaml.safe_load(recipe.read_text())
    phases = data["stages"]["vision"]["phases"]
    phases.append({**phases[0], "name": "full", "parts": FULL})
    del phases[1]["adapter"]
    recipe.write_text(yaml.safe_dump(data))
    runs = {}
    for n in (1, 2):
        runs[n] = {"run": tmp / f"run{n}", "record": tmp / f"record{n}"}
        runs[n]["record"].mkdir()
        if n == 1:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("smolvlm_cli.train.checkpoint.save", recording_save(runs[n]["record"]))
                _train(recipe, tiny_model_dir, runs[n]["run"])
        else:
            _run_two_ranks(runs[n]["record"], recipe, tiny_model_dir, runs[n]["run"])
    return runs


def test_every_parameter_is_partitioned_over_the_ranks(partitioned_runs):
    for n, run in partitioned_runs.items():
        files = sorted(run["record"].glob("*.json"))
        assert [f.name for f in files] == [f"phase{i}-rank{r}.json" for i in (0, 1) for r in range(n)]
        for f in files:
            record = json.loads(f.read_text())
            assert record["world"] == n
            params = record["params"]
            assert any(".lora_A." in k for k in params) == f.name.startswith("phase0")  # DoRA phase, then plain
            for name, (full, local, persistent, gathered) in params.items():
                # this rank keeps its 1/n share (padded up) and, between steps, no gathered copy of the whole
                assert (local, persistent, gathered) == (math.ceil(full / n), False, 0), (f.name, name)
            largest = max(full for full, *_ in params.values())
            assert largest >= 40_000  # the embedding matrix: partitioned too


def test_two_partitioned_processes_match_one(partitioned_runs):
    one, two = (losses(partitioned_runs[n]["run"]) for n in (1, 2))
    assert len(one) == len(two) == 6
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4
    for index in (0, 1):  # the DoRA phase merged at the boundary, then the full phase
        assert _max_diff(*(_phase_weights(partitioned_runs[n]["run"], index) for n in (1, 2))) < 1e-4


def test_partitioned_checkpoints_export_the_trained_weights(partitioned_runs, tmp_path):
    from safetensors.torch import load_file

    from smolvlm_cli.export import export

    exported = {}
    for n, runs in partitioned_runs.items():
        ckpts = sorted((runs["run"] / "checkpoints").glob("phase*-step*"))
        assert [c.name for c in ckpts] == ["phase0-step00000003", "phase1-step00000003"]
        for index, ckpt in enumerate(ckpts):  # consolidated from the rank partitions (DoRA merged for phase 0)
            out = export(ckpt, tmp_path / f"export{n}-{index}", dtype="float32")
            exported[n, index] = load_file(out / "model.safetensors")
            assert json.loads((out / "config.json").read_text())["text_config"]["architectures"] == [
                "VLlama3ForCausalLM"]  # as the released configs: llama.cpp's converter reads it
            # the same weights as the phase's model folder, which was gathered from the live engine
            assert _max_diff(exported[n, index], _phase_weights(runs["run"], index)) == 0.0, (n, index)
    for index in (0, 1):
        assert _max_diff(exported[1, index], exported[2, index]) < 1e-4


if __name__ == "__main__":
    from smolvlm_cli.train import checkpoint

    record_dir, recipe_path, init_dir, out_dir = map(Path, sys.argv[1:5])
    checkpoint.save = recording_save(record_dir)
    _train(recipe_path, init_dir, out_dir)
