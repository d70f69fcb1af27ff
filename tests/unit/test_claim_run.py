# A run folder holds one stage of one recipe: resuming with the same recipe works even when the recipe.yaml it
# recorded was written by an older version (without the fields added since); another recipe is refused.
from __future__ import annotations

import json

import pytest
import yaml

from smolvlm_cli.errors import OutputError
from smolvlm_cli.recipe import dump_recipe, load_recipe
from smolvlm_cli.train.launch import Dist
from smolvlm_cli.train.run import _claim_run
from tests.conftest import TINY_RECIPE

MAIN = Dist(rank=0, world_size=1, local_rank=0)


def test_a_run_recorded_before_new_recipe_fields_resumes_and_another_recipe_is_refused(tmp_path):
    recipe = load_recipe(TINY_RECIPE)
    run = tmp_path / "run"
    _claim_run(run, recipe, "vision", tmp_path / "init", MAIN)
    assert (run / "recipe.yaml").read_text() == dump_recipe(recipe)
    old = yaml.safe_load((run / "recipe.yaml").read_text())
    del old["images"], old["train"]["optimizer"], old["train"]["report_to"]  # what an older version wrote
    (run / "recipe.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    _claim_run(run, recipe, "vision", tmp_path / "init", MAIN)  # the same recipe: accepted

    with pytest.raises(OutputError, match="holds another run .* or a different recipe"):
        _claim_run(run, load_recipe(TINY_RECIPE, ["seed=1"]), "vision", tmp_path / "init", MAIN)
    with pytest.raises(OutputError, match="holds another run"):
        _claim_run(run, recipe, "video", tmp_path / "init", MAIN)
    assert json.loads((run / "run.json").read_text())["stage"] == "vision"
