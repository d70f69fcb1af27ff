# The eval task registry without a model: fixture rows in each benchmark's real schema -> prompts -> scores with
# hand-made predictions, the aggregations, the composite, and the user errors.
from __future__ import annotations

from pathlib import Path

import pytest

from smolvlm_cli.errors import MediaError, UserError
from smolvlm_cli.eval import composite
from smolvlm_cli.eval.data import check_sources, iter_items, row_sources
from smolvlm_cli.eval.runner import check_model_dir, parse_task_paths, score_task
from smolvlm_cli.eval.tasks import registry, resolve_tasks
from tests.eval_fixtures import GOLD, write_benchmarks

BENCHMARKS = ["docvqa", "textvqa", "chartqa", "ocrbench", "ai2d", "scienceqa", "mmmu", "mathvista", "mmstar",
              "videomme", "mlvu", "mvbench", "tempcompass", "worldsense"]
PAPER = {"ocrbench": (52.6, 61.0), "ai2d": (46.4, 59.2), "chartqa": (55.6, 62.8), "textvqa": (50.2, 60.2),
         "docvqa": (58.3, 70.5), "scienceqa": (73.8, 80.0), "mmmu": (29.0, 33.7), "mathvista": (35.9, 40.1),
         "mmstar": (34.6, 38.3), "videomme": (33.7, 42.2), "mlvu": (40.6, 47.3), "mvbench": (32.7, 39.7),
         "worldsense": (29.7, 30.6), "tempcompass": (43.1, 49.0)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def items_of(bench, name, style="lmms", limit=None, media=None):
    paths, media_roots = bench
    task = registry()[name]
    return list(iter_items(task, row_sources(task, paths[name], limit if limit else 50), style,
                           media if media is not None else media_roots.get(name)))


# --------------------------------------------------------------------------------------------- registry


def test_registry_has_the_papers_14_benchmarks_with_published_numbers():
    reg = registry()
    assert resolve_tasks("all") == BENCHMARKS
    assert {n: reg[n].published for n in BENCHMARKS} == PAPER
    assert (reg["docvqa"].dataset, reg["docvqa"].config, reg["docvqa"].split) == ("lmms-lab/DocVQA", "DocVQA",
                                                                                   "validation")
    assert (reg["mmstar"].dataset, reg["mmstar"].split) == ("Lin-Chen/MMStar", "val")
    assert len(reg["mvbench"].configs) == 20
    assert [n for n in BENCHMARKS if reg[n].rule_based_only] == ["mathvista", "tempcompass"]


def test_groups_aliases_and_dedup():
    assert resolve_tasks("video") == ["videomme", "mlvu", "mvbench", "tempcompass", "worldsense"]
    assert len(resolve_tasks("synthetic")) == 9
    assert resolve_tasks("Video-MME, synthetic:colour,docvqa,docvqa") == ["videomme", "synthetic_colour", "docvqa"]


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        resolve_tasks("docvqa,foo")
    assert "unknown eval task 'foo'" in e.value.one_line() and "mmstar" in e.value.one_line()


def test_synthetic_task_names_match_the_generator():
    from smolvlm_cli.data.synthetic import TASK_NAMES
    from smolvlm_cli.eval.tasks_synthetic import SYNTHETIC_TASKS

    assert SYNTHETIC_TASKS == TASK_NAMES


def test_composite():
    assert composite({"mmmu": 0.3, "docvqa": 0.6, "synthetic_colour": 0.9}) == pytest.approx(0.45)
    assert composite({"synthetic_colour": 0.2, "synthetic_count": 0.4}) == pytest.approx(0.3)  # none weighted: mean
    assert composite({"docvqa": 0.6, "mmmu": 0.3}, {"docvqa": 3, "mmmu": 1}) == pytest.approx(0.525)
    assert composite({"docvqa": 0.6}, {"mmmu": 1}) is None
    assert composite({}) is None


# --------------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("style", ["lmms", "vlmevalkit"])
@pytest.mark.parametrize("name", BENCHMARKS)
def test_gold_answers_score_one(bench, name, style):
    items = items_of(bench, name, style)
    assert len(items) == len(GOLD[name])
    result = score_task(registry()[name], items, GOLD[name])
    assert result["scores"] == [1.0] * len(items)
    assert result["score"] == 1.0


@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n != "mmmu"])  # MMMU draws a letter for non-answers
def test_non_answers_score_zero(bench, name):
    items = items_of(bench, name)
    result = score_task(registry()[name], items, ["zzz"] * len(items))
    assert result["score"] == 0.0
    assert result["undecided"] == (3 if name == "tempcompass" else 0)


def test_mmstar_is_a_macro_mean_over_l2_categories(bench):
    result = score_task(registry()["mmstar"], items_of(bench, "mmstar"), ["A", "x", "C"])
    assert result["score"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2; the micro mean would be 2/3
    assert result["breakdown"] == {"coarse perception": 0.5, "math": 1.0}


def test_mlvu_is_a_mean_over_task_types(bench):
    result = score_task(registry()["mlvu"], items_of(bench, "mlvu"), ["B)", "x", "x"])
    assert result["score"] == pytest.approx(0.25)  # plotQA 1/2, count 0/1
    assert result["breakdown"] == {"count": 0.0, "plotQA": 0.5}


def test_mvbench_is_a_mean_over_subtasks_of_answered_questions(bench):
    result = score_task(registry()["mvbench"], items_of(bench, "mvbench"), ["(B)", "", "(A)"])
    assert result["breakdown"] == {"action_sequence": 1.0, "moving_count": 0.0}  # the empty answer is not counted
    assert result["score"] == pytest.approx(0.5)


def test_ocrbench_points(bench):
    result = score_task(registry()["ocrbench"], items_of(bench, "ocrbench"), ["hello", "X^{2}"])
    assert result["extra"] == {"points": 1, "max_points": 2}  # HME100k keeps case
    assert result["score"] == 0.5


def test_tempcompass_counts_what_the_rules_cannot_decide(bench):
    result = score_task(registry()["tempcompass"], items_of(bench, "tempcompass"), ["B", "maybe", "Caption B"])
    assert result["scores"] == [1.0, 0.0, 0.0]
    assert result["undecided"] == 1
    assert result["breakdown"] == {"caption_matching": 0.0, "multi-choice": 1.0, "yes_no": 0.0}


# --------------------------------------------------------------------------------------------- prompts


def test_lmms_prompts(bench):
    def text(name, i=0):
        return items_of(bench, name)[i].user_text()

    short = "\nAnswer the question using a single word or phrase."
    letter = "\nAnswer with the option's letter from the given choices directly."
    assert text("docvqa") == "<image>What is the date?" + short
    assert text("textvqa") == "<image>What brand is the bottle?" + short  # capitalised, as lmms-eval does
    assert text("chartqa") == "<image>What is the highest value?\nAnswer the question with a single word."
    assert text("ocrbench") == "<image>what is written in the image?"
    assert text("ai2d") == "<image>Which part is the leaf?\nA. root\nB. stem\nC. leaf\nD. flower" + letter
    assert text("scienceqa", 0) == ("<image>Context: Look at the picture.\nIs the animal a mammal?\nA. yes\nB. no"
                                    + letter)
    assert text("scienceqa", 1) == "<image>Which is a plant?\nA. rock\nB. tree\nC. cup" + letter
    assert text("mmmu", 0) == ("<image>Which painting is shown in <image 1>?\nA. Mona Lisa\nB. Starry Night\n"
                               "C. Scream\nD. Guernica\n\n" + letter[1:])
    assert text("mmmu", 1) == "<image><image>What is <image 1> plus <image 2>?\n\n" + short[1:]
    assert text("mathvista", 0) == ("<image>What fraction of the shape is blue?\nA. 3/11\nB. 8/11\nC. 6/11\nD. 3/5"
                                    + letter)
    assert text("mathvista", 2) == ("<image>What is the length of the bar? (Unit: cm)\nAnswer the question using a "
                                    "single floating-point number with one decimal place.")
    assert text("mmstar").endswith("D: white\nAnswer with the option's letter from the given choices directly")
    assert text("videomme") == ("<video>Select the best answer to the following multiple-choice question based on the "
                                "video and the subtitles. Respond with only the letter (A, B, C, or D) of the correct "
                                "option.\nHow many stars are there?\nA. 1\nB. 2\nC. 3\nD. 4\nThe best answer is:")
    assert text("mlvu", 0) == ("<video>\nWhat colour is the screen?\n(A) red\n(B) blue\n(C) green\n(D) white\n"
                               "Only give the best option.\n\nBest option: (")
    assert text("mlvu", 1).count("(A) circle") == 1  # options already in the question are not repeated
    assert text("mvbench") == ("<video>Question:What did the person do first?\nOption:\n(A) Opened the door.\n"
                               "(B) Sat on the bed.\n(C) Took the cup.\n" + letter[1:])
    assert text("tempcompass", 1) == "<video>Is the dog moving to the left?\nPlease answer yes or no:"
    assert "the corresponding audio" in text("worldsense")


def test_lmms_items_carry_their_media(bench):
    mmmu = items_of(bench, "mmmu")
    assert [len(i.images) for i in mmmu] == [1, 2]
    assert items_of(bench, "videomme")[0].video.endswith("data/vidA.mp4")  # found under the data/ subfolder
    assert items_of(bench, "mvbench")[2].video.endswith("clevrer/video_validation/c1.mp4")
    assert {i.kind for i in items_of(bench, "docvqa")} == {"image"}
    assert all(i.system is None and i.assistant_prefix == "" for i in items_of(bench, "ai2d"))


def test_vlmevalkit_prompts(bench):
    ai2d = items_of(bench, "ai2d", "vlmevalkit")[0]
    assert ai2d.user_text() == ("<image>Question: Which part is the leaf?\nChoices:\nA. root\nB. stem\nC. leaf\n"
                                "D. flower\nAnswer with the letter.")
    assert ai2d.assistant_prefix == " Answer:"
    mmmu = items_of(bench, "mmmu", "vlmevalkit")
    assert [p["type"] for p in mmmu[1].content] == ["text", "text", "image", "text", "text", "image", "text", "text"]
    assert mmmu[1].user_text().startswith("Question: <image 1>:<image>\n<image 2>:<image>\nWhat is")
    assert mmmu[1].assistant_prefix == ""  # open question
    assert items_of(bench, "docvqa", "vlmevalkit")[0].user_text().startswith("<image>Give a short and terse answer")
    mathvista = items_of(bench, "mathvista", "vlmevalkit")
    assert "(A) " not in mathvista[0].user_text() and "A. 3/11" in mathvista[0].user_text()
    assert [m.assistant_prefix for m in mathvista] == [" Answer:", "", ""]
    assert items_of(bench, "mvbench", "vlmevalkit")[0].system.startswith("Carefully watch the video")


def test_limit_is_per_subset(bench):
    assert len(items_of(bench, "mvbench", limit=1)) == 2
    assert len(items_of(bench, "docvqa", limit=1)) == 1


def test_local_parquet_without_limit_goes_through_datasets(bench, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    paths, _ = bench
    (source,) = row_sources(registry()["chartqa"], paths["chartqa"], None)
    assert len(source) == 2 and source.rows[1]["answer"] == "Yes"


def test_video_stored_as_a_folder_of_frames(tmp_path):
    from smolvlm_cli.eval.runner import _frames_folder
    from tests.eval_fixtures import image

    for i in range(5):
        image(i, (20, 10)).save(tmp_path / f"{i:05d}.jpg")
    frames, metadata = _frames_folder(tmp_path, max_frames=3)
    assert frames.shape == (3, 10, 20, 3)
    # segment centres of 5 frames in 3 parts, 1 fps assumed: the prompt's frame times are 0 s, 2 s, 4 s
    assert (metadata.frames_indices, metadata.fps) == ([0, 2, 4], 1.0)
    assert (metadata.total_num_frames, metadata.duration) == (5, 5.0)


# --------------------------------------------------------------------------------------------- synthetic


def test_synthetic_tasks_read_the_generators_jsonl(tmp_path):
    from smolvlm_cli.data.synthetic import write_synthetic

    write_synthetic(tmp_path, n_train=1, n_test=2, seed=0, image_size=32)
    reg = registry()
    kinds = {}
    for name in resolve_tasks("synthetic"):
        items = list(iter_items(reg[name], row_sources(reg[name], tmp_path), "lmms", None))
        assert len(items) == 2
        assert score_task(reg[name], items, [i.answers[0] for i in items])["score"] == 1.0
        kinds[name] = items[0].kind
    assert kinds["synthetic_text"] == "text" and kinds["synthetic_direction"] == "video"
    assert len(list(iter_items(reg["synthetic_compare"], row_sources(reg["synthetic_compare"], tmp_path), "lmms",
                               None))[0].images) == 2


def test_hand_written_jsonl_with_system_history_and_numeric_answer(tmp_path):
    import json

    from tests.eval_fixtures import image

    (tmp_path / "test").mkdir()
    image(0).save(tmp_path / "test" / "a.png")
    row = {"id": "r1", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "image", "path": "a.png"}, {"type": "text", "text": "How many?"}]},
        {"role": "assistant", "content": 7}]}
    (tmp_path / "test" / "count.jsonl").write_text(json.dumps(row) + "\n\n")
    task = registry()["synthetic_count"]
    (item,) = iter_items(task, row_sources(task, tmp_path), "lmms", None)
    assert (item.id, item.system, item.answers, item.user_text()) == ("r1", "Be brief.", ["7"], "<image>How many?")
    assert item.history == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]
    assert [m["role"] for m in item.messages()] == ["system", "user", "assistant", "user"]
    assert score_task(task, [item], ["seven"])["score"] == 1.0


# --------------------------------------------------------------------------------------------- errors


def test_video_task_without_media_root(bench):
    with pytest.raises(UserError) as e:
        check_sources(registry()["videomme"], bench[0]["videomme"], None)
    assert "--media-root videomme=FOLDER" in e.value.one_line()


def test_missing_video_file(bench, tmp_path):
    with pytest.raises(MediaError) as e:
        items_of(bench, "worldsense", media=tmp_path)
    assert "videos/w1.mp4" in e.value.one_line() and "--media-root worldsense=" in e.value.one_line()


def test_synthetic_needs_a_folder():
    with pytest.raises(UserError) as e:
        check_sources(registry()["synthetic_colour"], None, None)
    assert "--dataset-path synthetic=DIR" in e.value.one_line()


def test_multi_subset_folder_needs_subset_folders(bench):
    with pytest.raises(UserError, match="no subset folder of MVBench"):
        row_sources(registry()["mvbench"], bench[0]["docvqa"], 1)


def test_dataset_not_available_offline(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'lmms-lab/DocVQA' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as e:
        row_sources(registry()["docvqa"], None, 2)
    line = e.value.one_line()
    assert "lmms-lab/DocVQA (DocVQA)" in line and "--dataset-path docvqa=FOLDER" in line


def test_dataset_not_available_really_offline():
    import datasets

    if not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (set by conftest) so that nothing reaches the network")
    with pytest.raises(UserError, match="echo840/OCRBench"):
        row_sources(registry()["ocrbench"], None, 1)


def test_parse_task_paths():
    assert parse_task_paths(["docvqa=/d", "synthetic=~/s", "Video-MME=/v"], "--dataset-path") == {
        "docvqa": Path("/d"), "synthetic": Path("~/s").expanduser(), "video-mme": Path("/v")}
    with pytest.raises(UserError, match="is not TASK=PATH"):
        parse_task_paths(["docvqa"], "--dataset-path")
    with pytest.raises(UserError, match="unknown eval task 'nope'"):
        parse_task_paths(["nope=/x"], "--media-root")


def test_model_folder_checks(tmp_path):
    with pytest.raises(UserError, match="model folder not found"):
        check_model_dir(tmp_path / "missing")
    with pytest.raises(UserError, match="no config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match="is not a SmolVLM model folder"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "smolvlm"}')
    assert check_model_dir(tmp_path) == tmp_path
