from smolvlm_cli.download import recorded_manifest
from smolvlm_cli.download_manifest import write_manifest
from smolvlm_cli.recipe import load_recipe

from tests.conftest import TINY_RECIPE


def test_init_and_train_find_the_manifest_of_an_out_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "dl"
    (out / "models" / "google--siglip").mkdir(parents=True)
    models = {"vision": {"repo_id": "google/siglip", "sha": "a" * 40}}
    write_manifest(out / "manifest.json", "tiny", models, {})
    assert recorded_manifest(load_recipe(TINY_RECIPE)) is None  # random parts: nothing downloaded
    recipe = load_recipe(TINY_RECIPE, [f"model.vision.source={out / 'models' / 'google--siglip'}"])
    found = recorded_manifest(recipe)
    assert found["models"] == models and found["recipe"] == "tiny"


def test_default_download_folder_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path))
    write_manifest(tmp_path / "downloads" / "tiny" / "manifest.json", "tiny", {}, {"colour": {"sha": "b" * 40}})
    assert recorded_manifest(load_recipe(TINY_RECIPE))["datasets"] == {"colour": {"sha": "b" * 40}}
