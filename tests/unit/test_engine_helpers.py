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
    assert cfg["bf16"]["enabled"] is False and cfg["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    assert "auto" not in str(cfg)
    with pytest.raises(RecipeError, match="DeepSpeed config 'zero9' not found"):
        load_ds_config("zero9")
