"""The path most users take, at the released 256M's shapes and token ids: a SmolVLM2-256M-shaped checkpoint folder
(random SigLIP-B/16-512 + the real SmolLM2-135M-Instruct) fine-tuned with recipes/finetune-lora.yaml and `--data` on
a 40-row JSONL with images, 1 process, real DeepSpeed: the loss falls, only the LoRA-adapted projections (with the
LM's norms) and the connector change, and the export loads in plain transformers."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_finetune_data import LORA, colour_rows
from tests.integration.test_train import cli, losses

pytestmark = pytest.mark.slow

STEPS = 4
# One 512 px tile per image (the 48 px images are not upscaled to 2048 px = 17 tiles), short sequences, a quick lr.
SETS = [f"stages.vision.phases.0.{k}" for k in (
    f"steps={STEPS}", "global_batch_size=2", "micro_batch_size=1", "max_seq_len=256", "schedule.warmup_steps=0",
    "parts.text.lr=2.0e-3", "parts.connector.lr=2.0e-3")] + ["images.upscale_small_images=false",
                                                             "train.checkpoint_every=100"]


@pytest.fixture(scope="module")
def released_256m(gguf_path, tmp_path_factory):
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe
    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("256m") / "SmolVLM2-256M-Video-Instruct"
    recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml", ["model.dtype=float32"])
    result = init_model(recipe, out, vision_ref="random:siglip-b16-512", text_ref=str(gguf_path))
    assert result.total_parameters == 256_484_928 and result.special_token_ids["<image>"] == 49190
    return out


def test_lora_finetune_of_a_256m_checkpoint_on_a_jsonl(released_256m, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    folder = tmp_path / "data"
    rows = colour_rows(folder, 40, "image", "img/")
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    res = cli("train-vision", "--recipe", LORA, "--init", released_256m, "--out", run,
              *[a for s in SETS for a in ("--set", s)], "--data", folder / "train.jsonl")
    assert res.returncode == 0, res.stderr[-3000:]
    loss = losses(run)
    assert len(loss) == STEPS and loss[-1] < loss[0] - 0.5, loss

    before = load_file(released_256m / "model.safetensors")
    after = load_file(run / "phases" / "00-lora" / "model.safetensors")
    assert before.keys() == after.keys()  # adapters merged into the base weights
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k.split(".")[1] for k in changed} == {"connector", "text_model"}
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    text = [k for k in changed if k.startswith("model.text_model.")]
    assert all(any(f".{p}.weight" in k for p in projections) or "norm" in k for k in text)
    assert sum(f".{p}.weight" in k for k in text for p in projections) == 30 * 7  # every layer's 7 projections

    export = tmp_path / "export"
    res = cli("export", run, "--out", export, "--dtype", "float32")
    assert res.returncode == 0, res.stderr[-2000:]
    model = AutoModelForImageTextToText.from_pretrained(export)
    assert type(model).__name__ == "SmolVLMForConditionalGeneration"
    exported = model.state_dict()
    assert not any("lora" in k for k in exported)
    assert all(torch.equal(exported[k], after[k]) for k in changed)
