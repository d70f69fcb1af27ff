# `smolvlm export`: the config keys the released SmolVLM2 configs carry that other tools read, and bad input for
# every format (one line, exit 2, nothing written).
from __future__ import annotations

import json


def test_export_adds_the_released_config_keys_a_model_lacks(tmp_path):
    from smolvlm_cli.export import released_config_keys

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "smolvlm", "text_config": {"vocab_size": 7}}))
    released_config_keys(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "model_type": "smolvlm", "text_config": {"architectures": ["VLlama3ForCausalLM"], "vocab_size": 7}}
    (tmp_path / "config.json").write_text(text := json.dumps({"text_config": {"architectures": ["LlamaForCausalLM"]}}))
    released_config_keys(tmp_path)  # a model that states its own is left as it is
    assert (tmp_path / "config.json").read_text() == text


def test_an_unknown_format_is_one_line_and_writes_nothing(cli, tmp_path):
    res = cli("export", tmp_path, "--out", tmp_path / "out", "--format", "hf", "--format", "tflite")
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("error: --format tflite is not one of hf")
    assert not (tmp_path / "out").exists()


def test_a_run_without_a_finished_phase_and_a_full_out_folder_are_one_line(cli, tmp_path):
    from smolvlm_cli.recipe import dump_recipe, load_recipe
    from tests.conftest import TINY_RECIPE

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(dump_recipe(load_recipe(TINY_RECIPE)))
    (run / "run.json").write_text(json.dumps({"recipe": "tiny", "stage": "vision", "init": str(tmp_path)}))
    res = cli("export", run, "--out", tmp_path / "out", "--format", "gguf", "--format", "onnx")
    assert (res.exit_code, res.stderr.strip()) == (2, f"error: run '{run}' has no finished phase and no checkpoint "
                                                      "- train first")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing half-written beside it
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    res = cli("export", run, "--out", tmp_path / "full", "--format", "mlx")
    assert (res.exit_code, res.stderr.strip()) == (2, f"error: output folder '{tmp_path / 'full'}' is not empty - "
                                                      "pass --force to replace it or choose another --out")
