# `smolvlm export` writes the config keys the released SmolVLM2 configs carry that other tools read.
from __future__ import annotations


def test_export_adds_the_released_config_keys_a_model_lacks(tmp_path):
    import json

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
