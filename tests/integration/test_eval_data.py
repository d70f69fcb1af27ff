"""`--eval-data PATH`: a LoRA fine-tune on the tiny model (real DeepSpeed, CPU, 1 process) scores held-out rows every
checkpoint; metrics.jsonl holds the value the project's metric gives on the predictions file, whose prompts are the
ones training renders; a wrong path or a row without an answer stops with one line before anything runs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.integration.test_finetune_data import LORA, colour_rows, tiny_sets
from tests.integration.test_train import cli


def held_out(tmp_path: Path) -> dict[str, Path]:
    """12 training rows (JSONL, qa schema) and two held-out sets of 4 rows: an image folder, and a CSV whose answers
    end in a full stop (training's never do), so that ANLS scores a right colour below 1 there."""
    train = tmp_path / "train" / "train.jsonl"
    train.parent.mkdir(parents=True)
    train.write_text("".join(json.dumps(r) + "\n" for r in colour_rows(train.parent, 12, "image", "img/")))
    folder = tmp_path / "heldout"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                   for r in colour_rows(folder, 4, "file_name", "h")))
    table = tmp_path / "heldout_csv" / "eval.csv"
    rows = [{**r, "answer": r["answer"] + "."} for r in colour_rows(table.parent, 4, "image", "pics/")]
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    return {"train": train, "folder": folder, "csv": table}


def training_prompt(sample, processor) -> str:
    """What training feeds the model before the answer's first token (data.encode.segments)."""
    from smolvlm_cli.data.encode import segments, to_messages

    def template(messages, add_generation_prompt):
        return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    pieces = segments(to_messages(sample), template)
    return "".join(text for text, _ in pieces[: next(i for i, (_, sup) in enumerate(pieces) if sup)])


@pytest.mark.slow
def test_finetune_scores_held_out_data_every_checkpoint(tmp_path, tiny_model_dir):
    from transformers import AutoProcessor

    from smolvlm_cli.data.sources import SourceSpec, load_source
    from smolvlm_cli.eval.metrics import anls

    sets = held_out(tmp_path)
    run = tmp_path / "run"
    res = cli("train-vision", "--recipe", LORA, "--init", tiny_model_dir, "--out", run, *tiny_sets(4),
              "--set", "train.checkpoint_every=2", "--set", "eval.data_metric=anls", "--set", "eval.batch_size=3",
              "--set", "eval.data_max_new_tokens=1",  # one word: the colour, which ANLS scores 1 or below 1 (CSV)
              "--data", sets["train"], "--eval-data", sets["folder"], "--eval-data", sets["csv"])
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [e["step"] for e in evals] == [2, 4]  # every train.checkpoint_every steps: the section --eval-data made
    assert all(set(e["eval"]) == {"eval_data"} and e["composite"] == e["eval"]["eval_data"] for e in evals)

    best = json.loads((run / "best" / "best.json").read_text())
    assert sorted(e["name"] for e in best) == ["vision-phase0-step00000002", "vision-phase0-step00000004"]
    assert best[0]["composite"] == max(e["composite"] for e in evals)  # keep_best 2 (the default), best first
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    sources = [load_source(SourceSpec(path=str(p))) for p in (sets["folder"], sets["csv"])]
    for e in evals:
        folder = run / "best" / f"vision-phase0-step{e['step']:08d}"
        preds = [json.loads(line) for line in (folder / "eval_data.predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 8 and [p["answers"] for p in preds] == [[s.sample(i).turns[-1].parts[0].text]
                                                                      for s in sources for i in range(4)]
        assert [p["prompt"] for p in preds] == [training_prompt(s.sample(i), processor)
                                                for s in sources for i in range(4)]
        scores = [anls(p["prediction"], p["answers"]) for p in preds]
        assert [p["score"] for p in preds] == scores
        for p in preds[4:]:  # by hand: the right colour without the CSV's full stop is one edit off
            if p["prediction"] + "." == p["answers"][0]:
                assert p["score"] == 1 - 1 / len(p["answers"][0])
        assert e["eval"]["eval_data"] == sum(scores) / len(scores)
        results = json.loads((folder / "eval_results.json").read_text())["tasks"]["eval_data"]
        assert results["n"] == 8 and results["metric"] == "ANLS"
        assert results["breakdown"] == {str(p.absolute()): sum(scores[k * 4:(k + 1) * 4]) / 4
                                        for k, p in enumerate((sets["folder"], sets["csv"]))}
    print("eval_data ANLS by step:", {e["step"]: e["eval"]["eval_data"] for e in evals},
          "predictions at the last:", [p["prediction"] for p in preds])


@pytest.mark.slow
def test_bad_eval_data_stops_with_one_line(tmp_path, tiny_model_dir):
    sets = held_out(tmp_path)
    base = ("train-vision", "--recipe", LORA, "--init", tiny_model_dir, "--out", tmp_path / "r", *tiny_sets(2),
            "--data", sets["train"])
    res = cli(*base, "--eval-data", tmp_path / "missing.jsonl")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"--eval-data '{tmp_path / 'missing.jsonl'}' not found" in res.stderr, res.stderr
    table = sets["csv"]
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines[:2], lines[2].rsplit(",", 1)[0] + ",", *lines[3:]]) + "\n")  # row 2: no answer
    res = cli(*base, "--eval-data", sets["folder"], "--eval-data", table)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"eval data '{table.absolute()}' row 2: malformed row" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()  # stopped before the run folder was made
    res = cli(*base, "--eval-data", table, "--dry-run")  # the dry run checks the held-out rows too
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"eval data '{table}' row 2: malformed row" in res.stderr, res.stderr


def test_eval_section_with_held_out_data_only():
    from smolvlm_cli.errors import RecipeError
    from smolvlm_cli.eval.user_data import data_weights
    from smolvlm_cli.recipe import load_recipe
    from tests.conftest import TINY_RECIPE

    recipe = load_recipe(TINY_RECIPE, ["eval.data=[held.jsonl]", "eval.weights={eval_data: 2}"])
    assert recipe.eval.tasks == [] and recipe.eval.every_steps is None and recipe.eval.data_metric == "exact_match"
    with pytest.raises(RecipeError, match="eval gives neither tasks nor data to score"):
        load_recipe(TINY_RECIPE, ["eval.every_steps=5"])
    with pytest.raises(RecipeError, match=r"eval\.weights names 'eval_data', not among the tasks"):
        load_recipe(TINY_RECIPE, ["eval.tasks=[docvqa]", "eval.weights={eval_data: 1}"])
    with pytest.raises(RecipeError, match="eval.data_metric"):
        load_recipe(TINY_RECIPE, ["eval.data=[held.jsonl]", "eval.data_metric=bleu"])
    # the default composite: the paper's selection benchmarks among the tasks run, the held-out data as one of them
    assert data_weights({"docvqa": 0.5, "synthetic_colour": 0.1, "eval_data": 0.3}) == {"docvqa": 1.0,
                                                                                          "eval_data": 1.0}
    assert data_weights({"synthetic_colour": 0.1, "eval_data": 0.3}) == {"synthetic_colour": 1.0, "eval_data": 1.0}
