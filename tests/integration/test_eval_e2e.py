# `smolvlm eval` end to end: a tiny random SmolVLM over every benchmark fixture (parquet in the hub columns, mp4
# videos) and the synthetic test set, producing the predictions JSONL, the results JSON and the Rich table.
from __future__ import annotations

import json

import pytest
from rich.console import Console

from smolvlm_cli.errors import MediaError, UserError
from smolvlm_cli.eval import cli_eval, composite, evaluate, run_eval
from smolvlm_cli.eval.runner import load_model
from smolvlm_cli.eval.tasks import resolve_tasks
from tests.eval_fixtures import GOLD, write_eval_data

MICRO = ["docvqa", "textvqa", "chartqa", "ai2d", "scienceqa", "mmmu", "mathvista", "videomme", "worldsense"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_eval_data(tmp_path_factory.mktemp("evaldata"), n_test=2)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


def flags(data):
    paths, media = data
    return [f"{k}={v}" for k, v in paths.items()], [f"{k}={v}" for k, v in media.items()]


def test_eval_every_task_end_to_end(tiny_model_dir, data, tmp_path):
    console = Console(record=True, width=160)
    dataset_path, media_root = flags(data)
    out = tmp_path / "eval" / "results.json"
    results = cli_eval(tiny_model_dir, "all,synthetic", batch_size=3, out=out, dataset_path=dataset_path,
                       media_root=media_root, max_new_tokens=3, console=console)
    names = resolve_tasks("all,synthetic")
    assert list(results["tasks"]) == names and len(names) == 23

    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(results))
    lines = [json.loads(line) for line in (tmp_path / "eval" / "results.predictions.jsonl").read_text().splitlines()]
    expected_n = {**{n: len(g) for n, g in GOLD.items()}, **{n: 2 for n in resolve_tasks("synthetic")}}
    assert {n: t["n"] for n, t in results["tasks"].items()} == expected_n
    assert len(lines) == sum(expected_n.values())
    assert all(set(line) == {"task", "id", "prompt", "prediction", "answers", "score"} for line in lines)
    assert all(0.0 <= t["score"] <= 1.0 for t in results["tasks"].values())
    for name in MICRO + resolve_tasks("synthetic"):
        scores = [line["score"] for line in lines if line["task"] == name]
        assert results["tasks"][name]["score"] == pytest.approx(sum(scores) / len(scores))

    # Prompts are rendered by the model's own chat template; video frames get the processor's timestamps.
    by_id = {(line["task"], line["id"]): line for line in lines}
    assert by_id[("docvqa", "q1")]["prompt"] == ("<|im_start|>User:<image>What is the date?\nAnswer the question "
                                                 "using a single word or phrase.<end_of_utterance>\nAssistant:")
    assert by_id[("docvqa", "q1")]["answers"] == ["June 1", "1 June"]
    assert by_id[("videomme", "001-1")]["prompt"].startswith("<|im_start|>User: <video>Select the best answer")

    scores = {n: t["score"] for n, t in results["tasks"].items()}
    assert results["composite"]["weights"] == {k: 1.0 for k in
                                               ["mmmu", "mathvista", "docvqa", "textvqa", "mmstar", "ai2d"]}
    assert results["composite"]["score"] == pytest.approx(composite(scores))
    assert results["tasks"]["docvqa"]["published"] == {"256M": 58.3, "500M": 70.5}
    tempcompass = results["tasks"]["tempcompass"]
    assert tempcompass["rule_based_only"] and tempcompass["undecided_by_rules"] >= 0
    assert results["tasks"]["ocrbench"]["details"]["max_points"] == 2

    table = console.export_text()
    assert "Video-MME" in table and "58.3" in table and "composite" in table and "rule-based only*" in table


def test_batched_answers_equal_one_at_a_time(model, data, tmp_path):
    m, processor = model
    paths, media = data
    tasks = "docvqa,mmmu,mvbench,synthetic_compare,synthetic_direction,synthetic_text"
    predictions = []
    for bs in (1, 4):
        evaluate(m, processor, tasks, batch_size=bs, dataset_paths=paths, media_roots=media, progress=False,
                 max_new_tokens=5, out=tmp_path / f"bs{bs}.json")
        lines = (tmp_path / f"bs{bs}.predictions.jsonl").read_text().splitlines()
        predictions.append({(x["task"], x["id"]): x["prediction"] for x in map(json.loads, lines)})
    # Left padding keeps greedy answers identical whatever else the batch holds.
    assert len(predictions[0]) == 13
    assert predictions[0] == predictions[1]


def test_vlmevalkit_prompts_render(model, data, tmp_path):
    m, processor = model
    paths, media = data
    m.train()  # as the trainer hands it over
    evaluate(m, processor, "ai2d,mmmu,videomme", dataset_paths=paths, media_roots=media, prompt_style="vlmevalkit",
             progress=False, max_new_tokens=2, out=tmp_path / "r.json")
    assert m.training  # evaluated in eval mode, then given back as it came
    m.eval()
    lines = [json.loads(x) for x in (tmp_path / "r.predictions.jsonl").read_text().splitlines()]
    prompts = {line["task"]: line["prompt"] for line in lines}
    assert prompts["ai2d"].endswith("Answer with the letter.<end_of_utterance>\nAssistant: Answer:")
    assert prompts["mmmu"].startswith("<|im_start|>User: Question: <image 1>:<image>\n")
    assert prompts["videomme"].startswith("<|im_start|>System: Carefully watch the video")


def test_missing_video_fails_cleanly(model, data, tmp_path):
    m, processor = model
    paths, _ = data
    empty = tmp_path / "videos"
    empty.mkdir()
    with pytest.raises(MediaError, match="video for worldsense not found"):
        evaluate(m, processor, "docvqa,worldsense", dataset_paths=paths, media_roots={"worldsense": empty},
                 progress=False, max_new_tokens=2, out=tmp_path / "r.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]  # no half-written results


def test_run_eval_refuses_a_non_smolvlm_folder(tmp_path, data):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match="is not a SmolVLM model folder"):
        run_eval(tmp_path, "docvqa", dataset_paths=data[0])


def test_list(tiny_model_dir):
    console = Console(record=True, width=200)
    assert cli_eval(list_tasks=True, console=console) is None
    text = console.export_text()
    assert all(name in text for name in resolve_tasks("all")) and "lmms-lab/DocVQA (DocVQA) validation" in text
