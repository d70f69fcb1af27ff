"""Eval results other tools read: the lmms-eval results layout (keys as lmms-eval 0.7.3 writes them:
evaluator.simple_evaluate's results_dict and `config`, EvaluationTracker.save_results_aggregated), `eval --compare`,
and the dataset ids lmms-eval moved its benchmark copies to."""
from __future__ import annotations

import dataclasses
import json

import pytest

from smolvlm_cli.eval.data import dataset_ids
from smolvlm_cli.eval.report import compare_results, lmms_layout, task_scores
from smolvlm_cli.eval.tasks import registry

OURS = {"model": "runs/m", "prompt_style": "lmms", "limit": 50, "max_new_tokens_cap": None,
        "tasks": {
            "docvqa": {"dataset": "lmms-lab/DocVQA", "split": "validation", "config": "DocVQA", "n": 50,
                       "score": 0.5, "metric": "ANLS (threshold 0.5)", "aggregation": "mean", "max_new_tokens": 32},
            "synthetic_colour": {"dataset": None, "split": "test", "config": None, "n": 20, "score": 0.75,
                                 "metric": "normalised exact match", "aggregation": "mean", "max_new_tokens": 16}},
        "composite": {"score": 0.625, "weights": {}}}


def test_lmms_layout_field_by_field():
    out = lmms_layout(OURS, date="20250101_000000")
    # lmms-eval's top-level keys (results_dict, then config and date added by simple_evaluate)
    assert list(out) == ["results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                         "n-samples", "config", "date"]
    # results: "metric,filter" keys with filter "none", the stderr beside it ("N/A" without bootstrap), alias, samples
    assert out["results"] == {
        "docvqa": {"alias": "docvqa", "anls,none": 0.5, "anls_stderr,none": "N/A", "samples": 50},
        "synthetic_colour": {"alias": "synthetic_colour", "exact_match,none": 0.75,
                             "exact_match_stderr,none": "N/A", "samples": 20}}
    assert out["group_subtasks"] == {"docvqa": [], "synthetic_colour": []}  # solo tasks list no subtasks
    assert out["n-shot"] == {"docvqa": 0, "synthetic_colour": 0}
    assert out["higher_is_better"] == {"docvqa": {"anls": True}, "synthetic_colour": {"exact_match": True}}
    # the limit (50) cut DocVQA, so its full size is unknown; the synthetic set (20 < 50) was read whole
    assert out["n-samples"] == {"docvqa": {"original": None, "effective": 50},
                                "synthetic_colour": {"original": 20, "effective": 20}}
    doc = out["configs"]["docvqa"]
    assert (doc["task"], doc["dataset_path"], doc["dataset_name"], doc["test_split"], doc["output_type"]) == \
        ("docvqa", "lmms-lab/DocVQA", "DocVQA", "validation", "generate_until")
    assert doc["generation_kwargs"] == {"max_new_tokens": 32, "do_sample": False}
    assert doc["metric_list"] == [{"metric": "anls", "aggregation": "mean", "higher_is_better": True}]
    assert out["config"]["model"] == "runs/m" and out["config"]["model_args"] == "pretrained=runs/m"
    assert out["config"]["limit"] == 50 and out["date"] == "20250101_000000"
    json.dumps(out)  # plain JSON


def test_both_layouts_read_back_the_same_scores():
    ours = {t: v for t, (_, v) in task_scores(OURS).items()}
    theirs = task_scores(lmms_layout(OURS))
    assert ours == {t: v for t, (_, v) in theirs.items()} == {"docvqa": 0.5, "synthetic_colour": 0.75}
    assert theirs["docvqa"][0] == "anls"


def test_compare_prints_the_known_difference(tmp_path, cli):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(OURS))
    better = json.loads(json.dumps(OURS))
    better["tasks"]["docvqa"]["score"] = 0.625
    b.write_text(json.dumps(lmms_layout(better)))  # one file of each layout
    rows = compare_results(json.loads(a.read_text()), json.loads(b.read_text()))
    assert [(r["task"], r["diff"]) for r in rows] == [("docvqa", 0.125), ("synthetic_colour", 0.0)]
    res = cli("eval", "--compare", a, b)
    assert res.exit_code == 0, res.output
    doc = next(line for line in res.output.splitlines() if "docvqa" in line)
    assert "0.5000" in doc and "0.6250" in doc and "+0.1250" in doc
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    res = cli("eval", "--compare", a, bad)
    assert res.exit_code == 2 and "is not a JSON results file" in res.output


def test_dataset_ids_include_lmms_evals_new_homes():
    reg = registry()
    assert dataset_ids(reg["docvqa"]) == ["lmms-lab/DocVQA", "lmms-lab-encoder/DocVQA", "lmms-eval/DocVQA"]
    assert dataset_ids(reg["videomme"]) == ["lmms-lab/Video-MME", "lmms-eval/Video-MME", "lmms-lab-encoder/Video-MME"]
    assert dataset_ids(reg["mvbench"]) == ["OpenGVLab/MVBench"]  # not an lmms-lab copy: no alias


@pytest.mark.parametrize("moved", ["lmms-lab-encoder/DocVQA", "lmms-eval/DocVQA"])
def test_loader_falls_back_to_the_moved_id(tmp_path, monkeypatch, moved):
    """A dataset cached (or only published) under lmms-eval's new id loads for the task's lmms-lab id: the real
    `datasets` loader, with each hub id resolved to a local folder of that name (only the moved one exists)."""
    import datasets

    from smolvlm_cli.eval.data import _hub_rows

    tried = []
    real = datasets.load_dataset

    def load(path, *args, **kwargs):
        tried.append(path)
        return real(str(tmp_path / path), *args, **kwargs)  # resolve the hub id as a local folder

    rows = [{"question": "q?", "answers": ["a"], "questionId": 1}]
    folder = tmp_path / moved
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text(json.dumps(rows[0]) + "\n")
    monkeypatch.setattr(datasets, "load_dataset", load)
    task = dataclasses.replace(registry()["docvqa"], config=None)
    (source,) = _hub_rows(task, limit=1)
    assert source.rows[0]["question"] == "q?"
    assert tried[0] == "lmms-lab/DocVQA" and tried[-1] == moved


def test_eval_writes_the_lmms_file_beside_its_own(tmp_path, cli, tiny_model_dir):
    from smolvlm_cli.data.resolve import synthetic_root

    out = tmp_path / "r.json"
    res = cli("eval", "--model", tiny_model_dir, "--tasks", "synthetic_colour", "--limit", "2", "--out", out,
              "--dataset-path", f"synthetic={synthetic_root()}")
    assert res.exit_code == 0, res.output
    ours = json.loads(out.read_text())
    theirs = json.loads((tmp_path / "r.lmms_eval_results.json").read_text())
    assert ours["files"]["lmms_eval"] == str(tmp_path / "r.lmms_eval_results.json")
    score = ours["tasks"]["synthetic_colour"]["score"]
    assert theirs["results"]["synthetic_colour"]["exact_match,none"] == score
    assert theirs["n-samples"]["synthetic_colour"] == {"original": None, "effective": 2}
