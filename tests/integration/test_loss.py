# The lean loss (the head projects supervised positions only) against the full-vocabulary loss it replaced: the
# same sum and the same gradients, on the tiny model with real image batches, bare and wrapped in DoRA adapters.
import pytest
import torch

from smolvlm_cli.train.loss import dense_loss_sum, supervised_loss_sum, supervised_positions
from tests.conftest import TINY_RECIPE


def test_supervised_positions_pairs_each_kept_position_with_its_next_label():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, 8]])
    keep, targets = supervised_positions(labels)
    assert keep.tolist() == [[False, True, True, False, False], [True, False, False, True, False]]
    assert targets.tolist() == [5, 6, 7, 8]


def _batch(tiny_model_dir):
    from transformers import AutoProcessor

    from smolvlm_cli.recipe import load_recipe
    from smolvlm_cli.train.stream import phase_stream

    recipe = load_recipe(TINY_RECIPE)
    phase = recipe.stages["vision"].phases[0]
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    batch = next(iter(phase_stream(recipe, phase, 0, processor)))
    return {k: v for k, v in batch.items() if v is not None}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("adapters", [None, "dora"])
def test_lean_loss_and_gradients_equal_the_full_vocabulary_loss(tiny_model_dir, adapters):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if adapters:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj"]))
    model.train()
    batch = _batch(tiny_model_dir)
    labels = batch.pop("labels")
    supervised = int((labels[:, 1:] != -100).sum())
    assert 0 < supervised < labels[:, 1:].numel() // 2  # prompts and image tokens carry no label

    dense = dense_loss_sum(model(**batch, use_cache=False).logits, labels)
    dense.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    lean = supervised_loss_sum(model, batch, labels)
    lean.backward()
    got = _grads(model)

    assert abs(lean.item() - dense.item()) <= 1e-5 * abs(dense.item())
    assert got.keys() == expected.keys() and len(got) > 0
    for name, g in expected.items():
        assert (got[name] - g).abs().max().item() <= 1e-5 * max(g.abs().max().item(), 1.0), name
    # the head saw only the supervised rows, and once the context ends it sees everything again
    logits = model(**batch, use_cache=False).logits
    assert logits.shape[:2] == labels.shape
