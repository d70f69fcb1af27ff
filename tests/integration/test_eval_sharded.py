"""Eval split over ranks (gloo, CPU): every rank answers its share of the items and rank 0 scores them all with
`smolvlm eval`'s code. The scores, predictions and kept checkpoints equal those of one process, in training too."""
from __future__ import annotations

import json

import pytest
import yaml

from smolvlm_cli.errors import MediaError
from tests.eval_fixtures import write_benchmarks, write_eval_data
from tests.integration.test_train import DORA, cli, write_recipe

TASKS = "docvqa,mmmu,videomme,synthetic_colour"
# items answered with their gold answer, on every rank, so that the scores are not all 0 (a random tiny model's are)
GOLDEN = {"q2", "synthetic-colour-test-00001", "synthetic-colour-test-00002", "synthetic-colour-test-00006"}


def with_oracle(generate):
    def answer(model, processor, items, *args, **kwargs):
        answers = generate(model, processor, items, *args, **kwargs)
        return [it.answers[0] if it.id in GOLDEN else a for it, a in zip(items, answers)]

    return answer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_eval_data(tmp_path_factory.mktemp("evaldata"), n_test=7)


def run_eval(model, processor, data, out, **kwargs):
    from smolvlm_cli.eval.runner import evaluate

    paths, media = data
    return evaluate(model, processor, TASKS, batch_size=2, dataset_paths=paths, media_roots=media, progress=False,
                    max_new_tokens=4, out=out, **kwargs)


def _rank(rank, world, model_dir, data, out, init):
    """One rank: its share of the tasks (noting the items it answered), then a share where rank 1 fails."""
    import torch
    import torch.distributed as dist

    from smolvlm_cli.eval import runner

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model, processor = runner.load_model(model_dir)
        real, answered = with_oracle(runner.generate), []

        def noting(model, processor, items, *args, **kwargs):
            answered.extend(it.id for it in items)
            return real(model, processor, items, *args, **kwargs)

        runner.generate = noting
        results = run_eval(model, processor, data, out / "sharded.json", shard=(rank, world))

        def failing(model, processor, items, *args, **kwargs):
            if rank == 1:
                raise MediaError("video for videomme is unreadable: vidB.mp4", "re-download it")
            return real(model, processor, items, *args, **kwargs)

        runner.generate = failing
        try:
            run_eval(model, processor, data, out / "failed.json", shard=(rank, world))
            failure = None
        except MediaError as e:
            failure = [e.message, e.agreed]
        (out / f"rank{rank}.json").write_text(json.dumps({"answered": answered, "returned": results is not None,
                                                          "failure": failure}))
    finally:
        # both ranks past their last collective before either closes its connections: a rank that tears the group
        # down while the other still receives makes that one abort (SIGABRT in gloo)
        dist.barrier()
        dist.destroy_process_group()


def test_two_ranks_score_exactly_as_one(tiny_model_dir, data, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    from smolvlm_cli.eval import runner

    model, processor = runner.load_model(tiny_model_dir)
    monkeypatch.setattr(runner, "generate", with_oracle(runner.generate))
    one = run_eval(model, processor, data, tmp_path / "one.json")
    mp.spawn(_rank, args=(2, tiny_model_dir, data, tmp_path, f"file://{tmp_path / 'pg'}"), nprocs=2)
    two = json.loads((tmp_path / "sharded.json").read_text())

    def scored(results):
        return {n: {k: v for k, v in t.items() if k != "seconds"} for n, t in results["tasks"].items()}

    assert {n: t["n"] for n, t in one["tasks"].items()} == {"docvqa": 2, "mmmu": 2, "videomme": 2,
                                                            "synthetic_colour": 7}
    assert {n: t["score"] for n, t in one["tasks"].items()} == {"docvqa": 0.5, "mmmu": 0.5, "videomme": 0.0,
                                                                "synthetic_colour": 3 / 7}
    assert scored(two) == scored(one) and two["composite"] == one["composite"]
    lines = (tmp_path / "sharded.predictions.jsonl").read_text()
    assert lines == (tmp_path / "one.predictions.jsonl").read_text()  # same prompts, answers, order
    ids = {}
    for record in map(json.loads, lines.splitlines()):
        ids.setdefault(record["task"], []).append(record["id"])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, rank in enumerate(ranks):  # each rank answered every other item of each task, and only those
        assert sorted(rank["answered"]) == sorted(i for task_ids in ids.values() for i in task_ids[r::2])
    assert [len(rank["answered"]) for rank in ranks] == [1 + 1 + 1 + 4, 1 + 1 + 1 + 3]
    assert [rank["returned"] for rank in ranks] == [True, False]  # rank 0 alone holds the results
    # rank 1's error stops both ranks with the same message, and no half-written results appear
    assert [rank["failure"] for rank in ranks] == [["video for videomme is unreadable: vidB.mp4", True]] * 2
    assert not list(tmp_path.glob("failed*"))


@pytest.mark.slow  # two training runs: 50-90 s on 2 CPU cores
def test_periodic_eval_on_two_processes_equals_one(tmp_path, tiny_model_dir):
    """The same recipe trained with --nproc 1 and --nproc 2: the same eval scores at every eval step, the same
    best.json, and the same predictions of the kept model, read from a local benchmark copy the recipe names. (The
    tiny model scores 0 here; the predictions, item by item, are what shows the two evals agree.)"""
    recipe = write_recipe(tmp_path, {"steps": 4, "parts": DORA, "adapter": {"r": 4, "alpha": 8, "dropout": 0.0}})
    paths, _ = write_benchmarks(tmp_path / "bench")
    spec = yaml.safe_load(recipe.read_text())
    spec["eval"] = {"every_steps": 2, "tasks": ["synthetic_colour", "docvqa"], "limit": 7, "keep_best": 1,
                    "batch_size": 4, "dataset_paths": {"docvqa": "./bench/docvqa"},
                    "weights": {"synthetic_colour": 1, "docvqa": 1}}
    recipe.write_text(yaml.safe_dump(spec))
    evals, best, predictions = {}, {}, {}
    for n in (1, 2):
        run = tmp_path / f"run{n}"
        res = cli("train-vision", "--recipe", recipe, "--init", tiny_model_dir, "--out", run, "--nproc", n)
        assert res.returncode == 0, res.stderr[-3000:]
        assert ("eval at step 2 on 2 ranks: " in res.stderr) == (n == 2)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals[n] = [{k: r[k] for k in ("step", "eval", "composite")} for r in records if "eval" in r]
        best[n] = json.loads((run / "best" / "best.json").read_text())
        kept = run / "best" / best[n][0]["name"]
        predictions[n] = (kept / "eval_results.predictions.jsonl").read_text()
        results = json.loads((kept / "eval_results.json").read_text())
        assert {t: r["n"] for t, r in results["tasks"].items()} == {"synthetic_colour": 7, "docvqa": 2}
    assert [e["step"] for e in evals[1]] == [2, 4]
    assert evals[2] == evals[1]
    assert best[2] == best[1] and len(best[1]) == 1
    assert predictions[2] == predictions[1]
