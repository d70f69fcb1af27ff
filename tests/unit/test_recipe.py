import pytest

from smolvlm_cli.errors import RecipeError
from smolvlm_cli.recipe import apply_override, load_recipe, parse_override

from tests.conftest import ROOT, TINY_RECIPE


def test_tiny_recipe_loads_with_expected_values():
    r = load_recipe(TINY_RECIPE)
    assert r.name == "tiny"
    assert (r.model.vision.image_size, r.model.vision.patch_size, r.model.scale_factor) == (64, 8, 2)
    assert r.model.random_parts["tiny"].text.num_key_value_heads == 2


@pytest.mark.parametrize("name,text_hidden", [("smolvlm2-256m", 576), ("smolvlm2-500m", 960)])
def test_release_recipes_match_reference(name, text_hidden):
    r = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    m = r.model
    assert m.vision.source == "google/siglip-base-patch16-512"
    assert (m.vision.image_size, m.vision.patch_size, m.vision.hidden_size) == (512, 16, 768)
    assert m.text.hidden_size == text_hidden
    assert (m.scale_factor, m.rope_theta, m.max_position_embeddings) == (4, 100000, 8192)
    assert m.tie_word_embeddings is False and m.vocab_multiple == 128
    p = m.processor
    assert (p.longest_edge, p.video_fps, p.video_max_frames, p.video_longest_edge) == (2048, 1.0, 64, 512)


def test_set_overrides_with_type_checking():
    r = load_recipe(TINY_RECIPE, ["model.scale_factor=4", "seed=7", "model.dtype=bfloat16"])
    assert (r.model.scale_factor, r.seed, r.model.dtype) == (4, 7, "bfloat16")
    with pytest.raises(RecipeError, match=r"'model.scale_factor'.*valid integer.*'two'"):
        load_recipe(TINY_RECIPE, ["model.scale_factor=two"])
    with pytest.raises(RecipeError, match=r"'model.dtype'"):
        load_recipe(TINY_RECIPE, ["model.dtype=int8"])


def test_unknown_key_names_its_path(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'model.vision.sorce'"):
        load_recipe(TINY_RECIPE, ["model.vision.sorce=x"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_RECIPE.read_text().replace("  scale_factor: 2", "  scale_factr: 2"))
    with pytest.raises(RecipeError, match=r"unknown key 'model.scale_factr' in recipe"):
        load_recipe(bad)


def test_tile_divisibility_is_checked():
    with pytest.raises(RecipeError, match=r"image_size 64 is not divisible by patch_size x scale_factor = 8 x 3 = 24"):
        load_recipe(TINY_RECIPE, ["model.scale_factor=3"])


def test_broken_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(RecipeError, match=r"not valid YAML at line 3"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match=r"recipe file .* not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_override_parsing_and_list_indices():
    assert parse_override("a.b=1e-4") == (["a", "b"], "1e-4")  # YAML 1.1 reads it as a string; pydantic coerces
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=true") == (["a"], True)
    data = {"phases": [{"lr": 1}, {"lr": 2}]}
    apply_override(data, ["phases", "1", "lr"], 5)
    assert data == {"phases": [{"lr": 1}, {"lr": 5}]}
    with pytest.raises(RecipeError, match="not an index"):
        apply_override(data, ["phases", "2", "lr"], 5)
    with pytest.raises(RecipeError, match="has no '='"):
        parse_override("model.seed")


@pytest.mark.parametrize("name", ["smolvlm2-256m", "smolvlm2-500m"])
def test_release_recipes_carry_the_released_training_stages(name):
    r = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    dora, full, sft = r.stages["vision"].phases
    assert (dora.adapter.r, dora.adapter.alpha, dora.adapter.dropout) == (64, 16, 0.1)
    assert {p: t.mode for p, t in dora.parts.items()} == {"vision": "dora", "connector": "full", "text": "dora",
                                                          "embeddings": "dora"}
    assert (dora.global_batch_size, dora.schedule.warmup_steps, dora.weight_decay, dora.packing) == (1024, 2000, 0.1,
                                                                                                   True)
    assert all(t.mode == "full" and t.lr == 1e-4 for p in (full, sft) for t in p.parts.values())
    assert (full.steps, full.global_batch_size, full.neftune_alpha, sft.global_batch_size) == (6000, 2048, 5, 8192)
    (video,) = r.stages["video"].phases
    assert {p: t.lr for p, t in video.parts.items()} == {"vision": 5e-6, "connector": 1e-4, "text": 2e-5,
                                                         "embeddings": 2e-5}
    assert (video.global_batch_size, video.video_fps, video.video_max_frames, video.max_seq_len) == (512, 1.0, 64, 8192)
    assert (video.schedule.type, video.schedule.warmup_ratio, video.weight_decay, video.packing) == ("cosine", 0.03,
                                                                                                   0.0, False)
    modality = {"llava_video": "video", "finevideo": "video", "video_star": "video", "vript": "video",
                "vista": "video", "moviechat": "video", "sharegpt4video": "video", "llava_onevision": "image",
                "mammoth_vl": "image", "m4_instruct": "multi-image", "text_sft": "text"}
    shares = {}
    for e in video.data:
        shares[modality[e.source]] = round(shares.get(modality[e.source], 0) + e.weight, 6)
    assert shares == {"video": 33.1, "image": 33.8, "multi-image": 11.6, "text": 21.5}


EVAL = ["eval.every_steps=5", "eval.tasks=[synthetic, docvqa]"]  # a group expands to its tasks


def test_eval_weights_on_run_tasks_load():
    r = load_recipe(TINY_RECIPE, [*EVAL, "eval.weights={synthetic_colour: 2, docvqa: 1, synthetic_count: 0}"])
    assert r.eval.weights == {"synthetic_colour": 2.0, "docvqa": 1.0, "synthetic_count": 0.0}
    assert load_recipe(TINY_RECIPE, EVAL).eval.weights is None  # the default composite


@pytest.mark.parametrize("weights,message", [
    ("{synthetic_colour: 1, mmmu: 1, DocVQA: 1}", r"eval\.weights names 'mmmu', 'DocVQA', not among the tasks "
                                                  r"eval\.tasks runs \(synthetic_colour, .*, docvqa\)"),
    ("{mmmu: 1}", r"eval\.weights names 'mmmu', not among"),
    ("{}", r"eval\.weights gives no task a positive weight"),
    ("{synthetic_colour: 0, docvqa: 0}", r"eval\.weights gives no task a positive weight"),
    ("{synthetic_colour: 1, docvqa: -1}", r"eval\.weights gives 'docvqa' a negative weight"),
])
def test_bad_eval_weights_are_recipe_errors(weights, message):
    """Periodic eval ranks checkpoints by the weighted composite: weights that cannot score the tasks it runs fail
    when the recipe loads, as one line naming the bad keys, not at the first eval."""
    with pytest.raises(RecipeError, match=r"^'eval' in recipe '.*tiny\.yaml': Value error, " + message) as err:
        load_recipe(TINY_RECIPE, [*EVAL, f"eval.weights={weights}"])
    assert "\n" not in err.value.one_line() and err.value.one_line().endswith(" - fix the value in the recipe or --set")


def test_unknown_eval_task_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"eval\.tasks: unknown eval task 'docvqa_tset' \(choose from: docvqa, "):
        load_recipe(TINY_RECIPE, ["eval.every_steps=5", "eval.tasks=[docvqa_tset]"])


@pytest.mark.parametrize("override,message", [
    ("eval.dataset_paths={synthetic_colour: /d, mmmu: /data/mmmu}",
     r"eval\.dataset_paths names 'mmmu', not among the tasks eval\.tasks runs \(synthetic_colour, .*, docvqa\)"),
    ("eval.dataset_paths={docvqa_tset: /data/docvqa}", r"eval\.dataset_paths names 'docvqa_tset', not among"),
    ("eval.media_roots={mvbench: /videos, videomme: /videos}",
     r"eval\.media_roots names 'mvbench', 'videomme', not among the tasks eval\.tasks runs"),
    ("eval.prompt_style=llava", r"eval\.prompt_style 'llava' is not one of lmms, vlmevalkit"),
    ("eval.tasks=[synthetic_colour, mvbench, docvqa, videomme]",
     r"eval\.tasks runs the video task\(s\) 'mvbench', 'videomme' but eval\.media_roots gives no folder of their "
     r"videos"),
])
def test_bad_eval_data_settings_are_recipe_errors(override, message):
    """Where periodic eval reads its data is checked when the recipe loads, like the weights."""
    with pytest.raises(RecipeError, match=r"^'eval' in recipe '.*tiny\.yaml': Value error, " + message) as err:
        load_recipe(TINY_RECIPE, [*EVAL, override])
    assert "\n" not in err.value.one_line()


def test_eval_dataset_paths_reach_the_eval_loader(tmp_path, monkeypatch):
    """A recipe's eval paths resolve against the recipe's folder and are what the eval runner reads a benchmark
    from; the synthetic tasks keep reading the recipe's synthetic set."""
    import yaml

    from smolvlm_cli.data.resolve import synthetic_root
    from smolvlm_cli.eval.data import iter_items, row_sources
    from smolvlm_cli.eval.runner import check_inputs
    from smolvlm_cli.eval.tasks import registry
    from smolvlm_cli.train.evaluate import eval_inputs
    from tests.eval_fixtures import write_benchmarks

    folder = tmp_path / "recipes"
    paths, media = write_benchmarks(folder / "bench")
    data = yaml.safe_load(TINY_RECIPE.read_text())
    data["synthetic"] = {"n_train": 1, "n_test": 3, "image_size": 32}
    data["eval"] = {"every_steps": 2, "tasks": ["synthetic_colour", "docvqa", "mvbench"], "prompt_style": "vlmevalkit",
                    "dataset_paths": {"DocVQA": "./bench/docvqa", "mvbench": str(paths["mvbench"])},
                    "media_roots": {"mvbench": "./bench/media/mvbench"}}
    (folder / "r.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    r = load_recipe(folder / "r.yaml")
    assert r.eval.dataset_paths == {"DocVQA": str(paths["docvqa"].resolve()), "mvbench": str(paths["mvbench"])}
    assert r.eval.media_roots == {"mvbench": str(media["mvbench"].resolve())}
    dataset_paths, media_roots = eval_inputs(r)
    names, data_paths, media_paths = check_inputs(r.eval.tasks, dataset_paths, media_roots, r.eval.prompt_style,
                                                  None, 8, None)
    assert names == ["synthetic_colour", "docvqa", "mvbench"]
    assert data_paths == {"synthetic_colour": synthetic_root(r.synthetic), "docvqa": paths["docvqa"].resolve(),
                          "mvbench": paths["mvbench"]}
    assert media_paths == {"mvbench": media["mvbench"].resolve()}
    docvqa = registry()["docvqa"]
    items = list(iter_items(docvqa, row_sources(docvqa, data_paths["docvqa"]), r.eval.prompt_style, None))
    assert [(it.id, it.answers) for it in items] == [("q1", ["June 1", "1 June"]), ("q2", ["J. Smith"])]


def test_held_out_data_paths_resolve_against_the_recipe_folder(tmp_path):
    import yaml

    data = yaml.safe_load(TINY_RECIPE.read_text())
    data["eval"] = {"data": ["./held.jsonl", "elsewhere.jsonl"]}
    (tmp_path / "held.jsonl").write_text("{}\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    assert load_recipe(tmp_path / "r.yaml").eval.data == [str(tmp_path / "held.jsonl"), "elsewhere.jsonl"]
