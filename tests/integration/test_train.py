"""Training with real DeepSpeed ZeRO-3 on the tiny model: 1 vs 2 processes, exact resume, phase semantics and the
DoRA merge, non-finite losses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_RECIPE

pytestmark = pytest.mark.slow

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def write_recipe(tmp_path: Path, phase: dict, **train) -> Path:
    data = yaml.safe_load(TINY_RECIPE.read_text())
    base = {"name": "p", "steps": 5, "global_batch_size": 8, "micro_batch_size": 2, "max_seq_len": 512,
            "group_by_length": False, "schedule": {"type": "linear", "warmup_steps": 1},
            "data": [{"source": "colour", "weight": 60}, {"source": "text", "weight": 40}]}
    data["stages"] = {"vision": {"phases": [{**base, **phase}]}}
    data["train"].update({"checkpoint_every": 100, **train})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    return subprocess.run([sys.executable, "-m", "smolvlm_cli.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


DORA = {"vision": {"mode": "dora", "lr": 1e-3}, "connector": {"mode": "full", "lr": 1e-3},
        "text": {"mode": "dora", "lr": 1e-3}, "embeddings": {"mode": "full", "lr": 1e-3}}


def test_two_processes_match_one_and_shard_the_state(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, {"parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0}})
    runs = {}
    for n in (1, 2):
        runs[n] = tmp_path / f"run{n}"
        res = cli("train-vision", "--recipe", recipe, "--init", tiny_model_dir, "--out", runs[n], "--nproc", n)
        assert res.returncode == 0, res.stderr[-3000:]
    one, two = losses(runs[1]), losses(runs[2])
    assert len(one) == len(two) == 5
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4
    # ZeRO-3 shards the optimizer state: one process writes it all, each of two writes its own half (fp32 weights
    # and AdamW's two moments, 12 bytes a trainable parameter), not a copy of the whole
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from smolvlm_cli.train.checkpoint import DS_TAG

    trainable, shards = {}, {}
    for n, run in runs.items():
        ckpt = next((run / "checkpoints").glob("phase0-step*"))
        trainable[n] = sum(t.numel() for t in get_fp32_state_dict_from_zero_checkpoint(
            str(ckpt), tag=DS_TAG, exclude_frozen_parameters=True).values())
        shards[n] = [p.stat().st_size for p in (ckpt / DS_TAG).glob("*optim_states.pt")]
    assert trainable[1] == trainable[2] > 0
    assert len(shards[1]) == 1 and shards[1][0] >= 12 * trainable[1]
    assert len(shards[2]) == 2 and all(12 * trainable[2] / 2 <= s < 0.55 * shards[1][0] for s in shards[2]), shards
    # the exports of both runs hold the same weights (up to the order of float additions in the all-reduce)
    from safetensors.torch import load_file

    for n in (1, 2):
        res = cli("export", runs[n], "--out", tmp_path / f"export{n}", "--dtype", "float32")
        assert res.returncode == 0, res.stderr[-2000:]
    a, b = (load_file(tmp_path / f"export{n}" / "model.safetensors") for n in (1, 2))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


class Interrupt(Exception):
    pass


def _train(recipe, init, out):
    from smolvlm_cli.train.run import train_stage

    return train_stage(recipe, "vision", init, out)


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((run / "phases").glob("00-*")) / "model.safetensors")


def test_exact_resume_after_stop_and_after_a_crash_while_checkpointing(tmp_path, tiny_model_dir, monkeypatch):
    from smolvlm_cli.train import checkpoint as ckpt

    recipe = write_recipe(tmp_path, {"steps": 8, "micro_batch_size": 4, "group_by_length": True, "parts": DORA,
                                     "adapter": {"r": 4, "alpha": 8, "dropout": 0.1}, "neftune_alpha": 5},
                          checkpoint_every=4, keep_last=3, group_window=2)
    straight = tmp_path / "straight"
    _train(recipe, tiny_model_dir, straight)

    run = tmp_path / "resumed"
    real_save = ckpt.save

    def stop_after_step_4(engine, run_dir, phase_index, step, *args, **kwargs):
        out = real_save(engine, run_dir, phase_index, step, *args, **kwargs)
        if step == 4:
            raise Interrupt
        return out

    monkeypatch.setattr(ckpt, "save", stop_after_step_4)
    with pytest.raises(Interrupt):
        _train(recipe, tiny_model_dir, run)
    assert ckpt.latest(run).name == "phase0-step00000004"

    def crash_while_writing(self, save_dir, *args, **kwargs):
        (Path(save_dir) / "partial").write_text("half a checkpoint")
        raise Interrupt

    monkeypatch.setattr(ckpt, "save", real_save)
    import deepspeed

    real_ds_save = deepspeed.DeepSpeedEngine.save_checkpoint
    monkeypatch.setattr(deepspeed.DeepSpeedEngine, "save_checkpoint", crash_while_writing)
    with pytest.raises(Interrupt):
        _train(recipe, tiny_model_dir, run)  # resumes at 4, crashes writing step 8
    assert ckpt.latest(run).name == "phase0-step00000004"
    monkeypatch.setattr(deepspeed.DeepSpeedEngine, "save_checkpoint", real_ds_save)
    _train(recipe, tiny_model_dir, run)

    assert losses(run)[-4:] == losses(straight)[4:]
    a, b = _weights(straight), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phase_semantics_frozen_dora_and_merge(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file

    from smolvlm_cli.recipe import load_recipe
    from smolvlm_cli.train.checkpoint import gather_state_dict
    from smolvlm_cli.train.consolidate import build_model, merged_model
    from smolvlm_cli.train.phases import part_of

    parts = {"vision": {"mode": "frozen"}, "connector": {"mode": "full", "lr": 1e-3},
             "text": {"mode": "dora", "lr": 1e-3}, "embeddings": {"mode": "frozen"}}
    recipe = write_recipe(tmp_path, {"steps": 3, "parts": parts, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0}})
    captured = {}
    real_gather = gather_state_dict

    def capture(eng, rank):
        captured["state"] = real_gather(eng, rank)
        return captured["state"]

    monkeypatch.setattr("smolvlm_cli.train.checkpoint.gather_state_dict", capture)
    run = tmp_path / "run"
    _train(recipe, tiny_model_dir, run)
    state, init = captured["state"], load_file(tiny_model_dir / "model.safetensors")
    phase = load_recipe(recipe).stages["vision"].phases[0]
    unwrapped = build_model(tiny_model_dir, phase)
    unwrapped.load_state_dict(state)  # strict: every weight of the phase model comes from the trained state
    base = unwrapped.unload().state_dict()  # peft: the base model with its adapters removed, not merged
    assert base.keys() == init.keys()
    changed = {k: not torch.equal(base[k], v) for k, v in init.items()}
    assert not any(v for k, v in changed.items() if part_of(k) == "vision")  # frozen
    assert not changed["model.text_model.embed_tokens.weight"] and not changed["lm_head.weight"]
    wrapped = [k for k in init if k.startswith("model.text_model.layers.") and k.endswith("proj.weight")]
    assert wrapped and not any(changed[k] for k in wrapped)  # DoRA keeps the wrapped base weights
    assert changed["model.connector.modality_projection.proj.weight"]  # full
    assert changed["model.text_model.norm.weight"]  # unwrapped params of a DoRA part train

    adapted = build_model(tiny_model_dir, phase)
    adapted.load_state_dict(state)
    merged = merged_model(state, tiny_model_dir, phase)
    # the adapters moved from their zero init: merged in, they turn the rows of every wrapped weight (DoRA's
    # magnitude alone would only rescale them)
    merged_state = merged.state_dict()
    rows = torch.nn.functional.normalize
    assert all((rows(merged_state[k], dim=1) - rows(init[k], dim=1)).abs().max() > 1e-5 for k in wrapped)
    from transformers import AutoModelForImageTextToText

    saved = AutoModelForImageTextToText.from_pretrained(run / "phases" / "00-p").eval()
    ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = adapted.eval()(input_ids=ids).logits
        assert (merged(input_ids=ids).logits - ref).abs().max().item() < 1e-4
        assert (saved(input_ids=ids).logits - ref).abs().max().item() < 1e-4

    # export from the DeepSpeed checkpoint (consolidated on one process), merged and as base + peft adapter
    from peft import PeftModel
    from transformers import AutoProcessor

    from smolvlm_cli.export import export

    merged_dir = export(run, tmp_path / "merged", checkpoint="3", dtype="float32")
    kept_dir = export(run, tmp_path / "kept", checkpoint="3", merge=False, dtype="float32")
    assert (kept_dir / "adapter" / "adapter_config.json").is_file() and (merged_dir / "README.md").is_file()
    exported = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(kept_dir),
                                             kept_dir / "adapter").eval()
    proc = AutoProcessor.from_pretrained(merged_dir)
    assert exported.generation_config.eos_token_id == proc.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    with torch.no_grad():
        out = exported(input_ids=ids).logits
        assert (out - ref).abs().max().item() < 1e-4  # the training model's logits at that checkpoint
        assert (with_adapter(input_ids=ids).logits - out).abs().max().item() < 1e-4


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path, tiny_model_dir, monkeypatch):
    from smolvlm_cli.train import checkpoint as ckpt
    from smolvlm_cli.train import engine

    recipe = write_recipe(tmp_path, {"steps": 8, "parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0}},
                          checkpoint_every=1, keep_last=2, max_bad_steps=3)
    calls = {"n": 0}
    real = engine.supervised_loss_sum

    def poisoned(model, batch, labels):
        calls["n"] += 1
        loss = real(model, batch, labels)
        return loss * float("nan") if calls["n"] > 4 * 2 else loss  # steps 3+ (4 micro-batches a step)

    monkeypatch.setattr(engine, "supervised_loss_sum", poisoned)
    run = tmp_path / "run"
    with pytest.raises(engine.TrainingStopped, match="3 steps in a row had a non-finite loss"):
        _train(recipe, tiny_model_dir, run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] is None for r in records] == [False, False, True, True, True]
    assert records[-1]["bad_steps"] == 3
    assert ckpt.latest(run).name == "phase0-step00000002"  # the last good checkpoint, intact


def test_periodic_eval_keeps_the_best_checkpoints(tmp_path, tiny_model_dir):
    from smolvlm_cli.export import export

    recipe = write_recipe(tmp_path, {"steps": 4, "parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
                                     "packing": True})  # packed rows through the engine, too
    data = yaml.safe_load(recipe.read_text())
    data["eval"] = {"every_steps": 2, "tasks": ["synthetic_colour"], "limit": 8, "keep_best": 1, "batch_size": 8}
    recipe.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    _train(recipe, tiny_model_dir, run)
    best = json.loads((run / "best" / "best.json").read_text())
    assert len(best) == 1 and set(best[0]["scores"]) == {"synthetic_colour"}
    assert sorted(p.name for p in (run / "best").iterdir()) == sorted(["best.json", best[0]["name"]])
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "eval" in line]
    assert [e["step"] for e in evals] == [2, 4]
    assert best[0]["composite"] == max(e["composite"] for e in evals)
    out = export(run, tmp_path / "best-export", checkpoint="best", dtype="float32")
    assert (out / "model.safetensors").is_file() and "## Evaluation" in (out / "README.md").read_text()


def test_disk_full_while_checkpointing_is_one_clear_error(tmp_path, tiny_model_dir, monkeypatch):
    import errno

    import deepspeed

    from smolvlm_cli.errors import OutputError

    recipe = write_recipe(tmp_path, {"steps": 4, "parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0}},
                          checkpoint_every=2)
    real = deepspeed.DeepSpeedEngine.save_checkpoint

    def full_at_step_4(self, save_dir, *args, **kwargs):
        if "step00000004" in str(save_dir):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, save_dir, *args, **kwargs)

    monkeypatch.setattr(deepspeed.DeepSpeedEngine, "save_checkpoint", full_at_step_4)
    run = tmp_path / "run"
    with pytest.raises(OutputError, match=r"disk full while writing checkpoint phase0-step00000004; the last "
                                          r"complete one \(phase0-step00000002\) is intact"):
        _train(recipe, tiny_model_dir, run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "phase0-step00000002"]


def test_the_share_of_step_time_spent_waiting_for_data_is_logged_and_warned_once(tmp_path, tiny_model_dir,
                                                                                  monkeypatch, capsys):
    import time

    from smolvlm_cli.train.shards import RankStream

    real = RankStream.step

    def slow(self):  # a loader that cannot keep up: every step's batches take a second to arrive
        time.sleep(1.0)
        return real(self)

    monkeypatch.setattr(RankStream, "step", slow)
    recipe = write_recipe(tmp_path, {"steps": 4, "parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0}},
                          log_every=1)
    run = tmp_path / "run"
    _train(recipe, tiny_model_dir, run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    waits = [r["data_wait"] for r in records]
    assert waits[0] is None  # the first step starts the loader and is not measured
    assert all(0.05 < w < 1 for w in waits[1:]), waits
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("training waited for data") == 1 and "raise train.num_workers (now 0)" in err
