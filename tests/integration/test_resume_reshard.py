# Resume on another number of processes (a requeued job with fewer or more nodes), ZeRO-3 with every weight
# partitioned: the model and optimizer state are re-sharded through DeepSpeed's universal checkpoint, the data
# cursor is per shard, so steps 5-8 train on the same global batches and give the losses of a straight run.
import json
import shutil

import pytest

from tests.integration.test_train import DORA, cli, losses, write_recipe

pytestmark = pytest.mark.slow


def _cut_at(run, step: int):
    """The run as a job stopped right after the checkpoint of `step` would have left it."""
    root = run / "checkpoints"
    for ckpt in root.glob("phase*-step*"):
        if int(ckpt.name.rsplit("step", 1)[1]) > step:
            shutil.rmtree(ckpt)
    (root / "latest").write_text(f"phase0-step{step:08d}")
    shutil.rmtree(run / "phases")
    records = [line for line in (run / "metrics.jsonl").read_text().splitlines()
               if json.loads(line).get("step", 0) <= step]
    (run / "metrics.jsonl").write_text("\n".join(records) + "\n")


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_resume_on_another_number_of_processes_matches_a_straight_run(tmp_path, tiny_model_dir, before, after):
    from safetensors.torch import load_file

    recipe = write_recipe(tmp_path, {"steps": 8, "parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
                                     "global_batch_size": 4, "micro_batch_size": 1, "weight_decay": 0.1},
                          checkpoint_every=4, keep_last=2, zero3_persistence_threshold=0)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    res = cli("train-vision", "--recipe", recipe, "--init", tiny_model_dir, "--out", straight, "--nproc", before)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.copytree(straight, resumed)
    _cut_at(resumed, 4)
    res = cli("train-vision", "--recipe", recipe, "--init", tiny_model_dir, "--out", resumed, "--nproc", after)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"written by {before} process(es), resumed on {after}" in " ".join((res.stdout + res.stderr).split())
    assert (resumed / "checkpoints" / "phase0-step00000004" / "universal" / "state" / "zero").is_dir()

    a, b = losses(straight), losses(resumed)
    assert len(a) == len(b) == 8 and a[:4] == b[:4]
    assert max(abs(x - y) for x, y in zip(a[4:], b[4:])) < 1e-5, (a, b)
    wa, wb = (load_file(r / "phases" / "00-p" / "model.safetensors") for r in (straight, resumed))
    assert wa.keys() == wb.keys() and max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
