"""Filling the ZeRO configs: the persistence threshold a recipe may set, and which configs offload the optimizer."""
import pytest

from smolvlm_cli.errors import RecipeError
from smolvlm_cli.recipe import load_recipe
from smolvlm_cli.train.dsconfig import fill, load_ds_config, offloads_optimizer

from tests.conftest import TINY_RECIPE

PHASE = {"micro_batch": 4, "grad_accum": 2, "world_size": 2, "grad_clip": 1.0, "bf16": False}


def _zero(config: dict, hidden_size: int = 64, **kwargs) -> dict:
    return fill(config, hidden_size=hidden_size, **PHASE, **kwargs)["zero_optimization"]


def test_default_persistence_threshold_is_unchanged():
    assert _zero(load_ds_config("zero3"))["stage3_param_persistence_threshold"] == 100_000  # the 100k floor
    assert _zero(load_ds_config("zero3"), hidden_size=20_000)["stage3_param_persistence_threshold"] == 200_000
    assert fill(load_ds_config("zero3"), hidden_size=64, **PHASE) == \
        fill(load_ds_config("zero3"), hidden_size=64, persistence_threshold=None, **PHASE)


def test_recipe_persistence_threshold_fills_zero3_configs():
    assert _zero(load_ds_config("zero3"), persistence_threshold=0)["stage3_param_persistence_threshold"] == 0
    assert _zero(load_ds_config("zero3_offload"), persistence_threshold=100)["stage3_param_persistence_threshold"] \
        == 100
    # a ZeRO-3 config without the field gets it; ZeRO-2 has no parameter partitioning to tune
    assert _zero({"zero_optimization": {"stage": 3}}, persistence_threshold=0)["stage3_param_persistence_threshold"] \
        == 0
    assert "stage3_param_persistence_threshold" not in _zero(load_ds_config("zero2"), persistence_threshold=0)


def test_recipe_threshold_that_the_config_overrides_is_refused():
    own = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 1e5}}
    assert _zero(own, persistence_threshold=100_000)["stage3_param_persistence_threshold"] == 1e5
    with pytest.raises(RecipeError, match=r"sets stage3_param_persistence_threshold to 100000.0 but the recipe's "
                                          r"train.zero3_persistence_threshold is 0") as err:
        _zero(own, persistence_threshold=0)
    assert err.value.hint == 'set stage3_param_persistence_threshold to "auto" in the config, or drop the recipe field'


def test_recipe_field_loads_and_rejects_negative_values():
    assert load_recipe(TINY_RECIPE).train.zero3_persistence_threshold is None
    assert load_recipe(TINY_RECIPE, ["train.zero3_persistence_threshold=0"]).train.zero3_persistence_threshold == 0
    with pytest.raises(RecipeError, match=r"'train.zero3_persistence_threshold'"):
        load_recipe(TINY_RECIPE, ["train.zero3_persistence_threshold=-1"])


def test_which_configs_offload_the_optimizer():
    shipped = load_ds_config("zero3_offload")["zero_optimization"]
    assert shipped["offload_optimizer"]["device"] == shipped["offload_param"]["device"] == "cpu"
    assert offloads_optimizer(load_ds_config("zero3_offload"))
    assert not offloads_optimizer(load_ds_config("zero3")) and not offloads_optimizer(load_ds_config("zero2"))
    assert offloads_optimizer({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme"}}})
    assert offloads_optimizer({"zero_optimization": {"stage": 2, "cpu_offload": True}})  # DeepSpeed's old spelling
    assert not offloads_optimizer({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"},
                                                         "offload_param": {"device": "cpu"}}})
