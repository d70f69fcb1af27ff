# Users' own data: CSV and image-folder (metadata.jsonl / metadata.csv) rows through the qa adapter into exact
# Samples; `--data` as recipe overrides (sources data0.., weights by row count); bad input stops or is counted.
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image as PILImage

from smolvlm_cli.data.adapters import detect_schema, to_sample
from smolvlm_cli.data.sample import Image, Sample, SampleError, Text, Turn, Video
from smolvlm_cli.data.sources import SourceError, load_source
from smolvlm_cli.errors import RecipeError, UserError
from smolvlm_cli.train.run import data_overrides, prepare

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "recipes" / "finetune-lora.yaml"


def png(path: Path, colour=(255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (8, 8), colour).save(path)
    return path


def test_qa_row_image_question_answer(tmp_path):
    png(tmp_path / "a.png")
    row = {"file_name": "a.png", "question": "Colour?", "answer": "red"}
    assert detect_schema(row) == "qa"
    assert to_sample(row, index=3, source="data0", media_root=tmp_path) == Sample(
        "3", "data0",
        [Turn("user", [Image(path=str(tmp_path / "a.png")), Text("Colour?")]), Turn("assistant", [Text("red")])],
        {"index": 3})


def test_qa_row_prompt_response_video_and_numeric_answer(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    row = {"id": "r1", "video_path": "clip.mp4", "prompt": "How many?", "response": 7}
    assert detect_schema(row) == "qa"
    assert to_sample(row, index=0, source="s", media_root=tmp_path) == Sample(
        "r1", "s", [Turn("user", [Video(path=str(tmp_path / "clip.mp4")), Text("How many?")]),
                    Turn("assistant", [Text("7")])], {"index": 0})


def test_qa_row_image_column_with_a_video_extension_is_a_video(tmp_path):
    (tmp_path / "v.mov").write_bytes(b"x")
    sample = to_sample({"image": "v.mov", "question": "q", "answer": "a"}, index=0, source="s", media_root=tmp_path)
    assert sample.turns[0].parts[0] == Video(path=str(tmp_path / "v.mov"))


def test_qa_row_messages_json_text_puts_the_image_in_the_first_user_turn(tmp_path):
    png(tmp_path / "a.png")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour?"},
                {"role": "assistant", "content": "red"}, {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": "yes"}]
    row = {"file_name": "a.png", "messages": json.dumps(messages)}
    assert detect_schema(row) == "qa"  # file_name wins over messages: an image folder's chat rows
    assert to_sample(row, index=1, source="s", media_root=tmp_path).turns == [
        Turn("system", [Text("Be brief.")]), Turn("user", [Image(path=str(tmp_path / "a.png")), Text("Colour?")]),
        Turn("assistant", [Text("red")]), Turn("user", [Text("Sure?")]), Turn("assistant", [Text("yes")])]


def test_qa_text_only_row_and_bad_rows(tmp_path):
    with pytest.raises(SampleError, match="unknown schema"):  # text-only: `schema: qa`, never detected
        detect_schema({"question": "2+2?", "answer": "4"})
    assert to_sample({"question": "2+2?", "answer": "4"}, index=0, source="s", schema="qa").turns == [
        Turn("user", [Text("2+2?")]), Turn("assistant", [Text("4")])]
    with pytest.raises(SampleError, match="missing media"):
        to_sample({"image": "gone.png", "question": "q", "answer": "a"}, index=0, source="s", media_root=tmp_path)
    with pytest.raises(SampleError, match="'answer'"):
        to_sample({"question": "q"}, index=0, source="s", schema="qa")
    with pytest.raises(SampleError, match="empty turn"):
        to_sample({"image": None, "question": "q", "answer": "  "}, index=0, source="s", schema="qa")


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_file_with_relative_image_paths(tmp_path):
    png(tmp_path / "img" / "0.png")
    png(tmp_path / "img" / "1.png", (0, 0, 255))
    path = write_csv(tmp_path / "train.csv", [{"image": "img/0.png", "question": "Colour?", "answer": "red"},
                                               {"image": "img/1.png", "question": "Colour?", "answer": "blue"}])
    source = load_source(str(path))
    assert len(source) == 2
    assert list(source.samples()) == [
        Sample("1" if i else "0", str(path), [Turn("user", [Image(path=str(tmp_path / "img" / f"{i}.png")),
                                                            Text("Colour?")]), Turn("assistant", [Text(c)])],
               {"index": i}) for i, c in enumerate(["red", "blue"])]


def test_csv_missing_its_answer_column_stops_naming_it(tmp_path):
    png(tmp_path / "0.png")
    path = write_csv(tmp_path / "bad.csv", [{"image": "0.png", "question": "Colour?"}])
    with pytest.raises(SourceError, match=r"not in the qa schema: its first row lacks answer\|response\|messages"):
        load_source(str(path))


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_image_folder_with_metadata(tmp_path, kind):
    folder = tmp_path / "pics"
    png(folder / "a.png")
    png(folder / "sub" / "b.png", (0, 255, 0))
    rows = [{"file_name": "a.png", "question": "Colour?", "answer": "red"},
            {"file_name": "sub/b.png", "question": "Colour?", "answer": "green"}]
    if kind == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        write_csv(folder / "metadata.csv", rows)
    samples = list(load_source(str(folder)).samples())
    assert [s.turns for s in samples] == [
        [Turn("user", [Image(path=str(folder / "a.png")), Text("Colour?")]), Turn("assistant", [Text("red")])],
        [Turn("user", [Image(path=str(folder / "sub" / "b.png")), Text("Colour?")]),
         Turn("assistant", [Text("green")])]]


def test_image_folder_naming_a_missing_image_is_a_counted_skip(tmp_path):
    png(tmp_path / "a.png")
    rows = [{"file_name": "a.png", "question": "q", "answer": "a"}, {"file_name": "gone.png", "question": "q",
                                                                      "answer": "a"}]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    skipped = Counter()
    assert len(list(load_source(str(tmp_path)).samples(skipped=skipped))) == 1
    assert skipped == Counter({"missing media": 1})


def test_data_overrides_replace_every_phase_and_weigh_by_rows(tmp_path):
    png(tmp_path / "0.png")
    a = write_csv(tmp_path / "a.csv", [{"image": "0.png", "question": "q", "answer": "a"}] * 3)
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}]}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(LORA.read_text().replace("      - name: lora", "      - name: other\n        steps: 3\n"
                                               "        global_batch_size: 1\n        parts: {text: {mode: full, "
                                               "lr: 1.0}}\n        data: []\n      - name: lora"))
    sets = data_overrides(recipe, "vision", [a, b])
    assert sets[:2] == [f'sources.data0={{"path": "{a}", "name": "data0"}}',
                        f'sources.data1={{"path": "{b}", "name": "data1"}}']
    loaded = prepare(recipe, "vision", [], None, [a, b])
    for phase in loaded.stages["vision"].phases:
        assert [(e.source, e.weight) for e in phase.data] == [("data0", 3.0), ("data1", 1.0)]
    assert loaded.sources["data0"].path == str(a)
    assert loaded.stages["vision"].phases[1].steps == 1  # one epoch of 4 rows at a global batch of 16


def test_finetune_recipes_need_data(tmp_path):
    for name, stage in (("lora", "vision"), ("dora", "vision"), ("full", "vision"), ("video", "video")):
        with pytest.raises(RecipeError, match=f"leaves the data of its {stage} stage to --data"):
            prepare(ROOT / "recipes" / f"finetune-{name}.yaml", stage, [], None)
    with pytest.raises(UserError, match="--data 'nope.csv' not found"):
        prepare(LORA, "vision", [], None, ["nope.csv"])


def test_finetune_recipes_fit_any_checkpoint_and_use_the_notebooks_settings(tmp_path):
    png(tmp_path / "0.png")
    data = write_csv(tmp_path / "a.csv", [{"image": "0.png", "question": "q", "answer": "a"}])
    for name, stage in (("lora", "vision"), ("dora", "vision"), ("full", "vision"), ("video", "video")):
        recipe = prepare(ROOT / "recipes" / f"finetune-{name}.yaml", stage, [], None, [data])
        assert recipe.model is None  # nothing to check against --init: 256M, 500M and 2.2B alike
        phase = recipe.stages[stage].phases[0]
        assert phase.parts["vision"].mode == "frozen" and phase.parts["connector"].mode == "full"
        assert (phase.parts["text"].mode, phase.parts["text"].lr) == (
            "full" if name in ("full", "video") else name, 1e-4)
        assert (phase.schedule.warmup_steps, phase.weight_decay) == (50, 0.01)
        if name in ("lora", "dora"):
            a = phase.adapter
            assert (a.r, a.alpha, a.dropout, a.target_modules) == (8, 8, 0.1, [
                "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        if name == "video":
            assert (phase.video_fps, phase.video_max_frames) == (1.0, 64)
