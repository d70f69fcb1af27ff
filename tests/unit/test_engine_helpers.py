"""Pure helpers of the training engine."""


def test_packed_masks_fit_the_attention_implementation():
    import torch

    from smolvlm_cli.train.engine import fit_to_attention

    mask = torch.zeros(1, 1, 4, 4)
    batch = {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": mask}
    assert fit_to_attention(batch, "sdpa", torch.bfloat16)["attention_mask"].dtype == torch.bfloat16
    assert fit_to_attention(batch, "flash_attention_2", torch.bfloat16)["attention_mask"] is None
    padded = {"attention_mask": torch.ones(1, 4, dtype=torch.long)}
    assert fit_to_attention(padded, "flash_attention_2", torch.bfloat16) is padded


def test_gradient_accumulation_is_derived_from_the_global_batch():
    import pytest

    from smolvlm_cli.errors import RecipeError
    from smolvlm_cli.train.dsconfig import fill, gradient_accumulation, load_ds_config

    assert gradient_accumulation(1024, 8, 16) == 8
    assert gradient_accumulation(8, 4, 2) == 1
    with pytest.raises(RecipeError, match="global batch 10 is not divisible by micro batch 4 x 2 processes"):
        gradient_accumulation(10, 4, 2)
    cfg = fill(load_ds_config("zero3"), micro_batch=4, grad_accum=2, world_size=2, grad_clip=1.0, bf16=False,
               hidden_size=64)
    assert (cfg["train_batch_size"], cfg["gradient_accumulation_steps"], cfg["gradient_clipping"]) == (16, 2, 1.0)
    assert cfg["bf16"]["enabled"] is False and cfg["zero_optimization"]["reduce_bucket_size"] == 50_000_000
    assert "auto" not in str(cfg)
    with pytest.raises(RecipeError, match="DeepSpeed config 'zero9' not found"):
        load_ds_config("zero9")


def test_adapter_target_modules_select_layers():
    import re

    import pytest

    from smolvlm_cli.errors import RecipeError
    from smolvlm_cli.recipe import load_recipe
    from tests.conftest import TINY_RECIPE
    from smolvlm_cli.train.phases import adapter_config

    phase = load_recipe(TINY_RECIPE).stages["vision"].phases[0]  # vision, text, embeddings in dora
    names = ["model.vision_model.encoder.layers.0.self_attn.q_proj", "model.vision_model.encoder.layers.1.mlp.fc2",
             "model.text_model.layers.3.self_attn.o_proj", "model.text_model.layers.0.mlp.up_proj", "lm_head",
             "model.connector.modality_projection.proj", "model.text_model.embed_tokens",
             "model.vision_model.embeddings.patch_embedding"]

    def adapted(p):
        return [n for n in names if re.fullmatch(adapter_config(p).target_modules, n)]

    assert adapted(phase) == names[:5]
    assert adapter_config(phase).use_dora and adapter_config(phase).r == 8
    phase.adapter.target_modules = ["q_proj", "o_proj"]
    assert adapted(phase) == [names[0], names[2]]
    phase.adapter.target_modules = ["nothing"]
    with pytest.raises(RecipeError, match="match no layer"):
        adapter_config(phase)


def test_epochs_become_steps(tmp_path):
    import pytest
    import yaml

    from smolvlm_cli.errors import RecipeError
    from smolvlm_cli.train.run import prepare
    from tests.conftest import TINY_RECIPE

    data = yaml.safe_load(TINY_RECIPE.read_text())
    phase = data["stages"]["vision"]["phases"][1]
    del phase["steps"]
    phase["epochs"] = 0.5
    phase["global_batch_size"], phase["micro_batch_size"] = 8, 4
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    # 2 sources of 400 rows each, half a pass, 8 samples a step
    assert len(phase["data"]) == 2
    assert prepare(path, "vision", [], None).stages["vision"].phases[1].steps == 50
    assert prepare(path, "vision", [], 7).stages["vision"].phases[1].steps == 7
    assert prepare(path, "vision", ["stages.vision.phases.1.steps=3"], None).stages["vision"].phases[1].steps == 3
    del phase["epochs"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="phase 'full' needs steps or epochs"):
        prepare(path, "vision", [], None)


def test_make_reproducible_seeds_every_rng_and_sets_deterministic_kernels(monkeypatch):
    import os
    import random

    import numpy as np
    import torch

    from smolvlm_cli.train.engine import make_reproducible

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(True)  # as a training run in this process may have left it
    draws = []
    for _ in range(2):
        make_reproducible(5, deterministic=False)
        draws.append((random.random(), float(np.random.rand()), torch.rand(3).tolist()))
    assert draws[0] == draws[1]
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    try:
        make_reproducible(5, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
