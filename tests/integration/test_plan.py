"""`smolvlm plan`: parameter counts from the recipe's shapes on the meta device equal the real models' (the tiny
model `init` builds; the released 256M / 500M counts), offline; a part it cannot size is one clean error line."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, TINY_RECIPE


def _real_counts(model_dir, phase) -> tuple[int, int]:
    """(all, trainable) parameters of the saved model wrapped for `phase` as training does."""
    from transformers import AutoModelForImageTextToText

    from smolvlm_cli.train.phases import apply_phase, trainable_summary

    rows = trainable_summary(apply_phase(AutoModelForImageTextToText.from_pretrained(model_dir), phase), phase)
    return sum(r["total"] for r in rows), sum(r["trainable"] for r in rows)


def test_tiny_counts_equal_the_initialised_model(tiny_model_dir):
    from smolvlm_cli.planner import count_phase, plan_config
    from smolvlm_cli.recipe import load_recipe

    recipe = load_recipe(TINY_RECIPE)
    config, origins = plan_config(recipe.model)
    assert origins == {"vision": "random:tiny (random init)", "text": "random:tiny (random init)"}
    saved = json.loads((tiny_model_dir / "config.json").read_text())
    assert config.text_config.vocab_size == saved["text_config"]["vocab_size"]
    manifest = json.loads((tiny_model_dir / "smolvlm_init.json").read_text())
    for stage in ("vision", "video"):
        for phase in recipe.stages[stage].phases:
            count = count_phase(config, phase)
            assert (count.total, count.trainable) == _real_counts(tiny_model_dir, phase), phase.name
            if phase.name == "full":
                assert count.total == count.trainable == manifest["total_parameters"]

    # DoRA r 8 by hand: r x (in + out) + out (magnitude) per adapted Linear, plus what no adapter wraps
    v, r = saved["text_config"]["vocab_size"], 8

    def dora(i, o):
        return r * (i + o) + o

    vision = 2 * (4 * dora(64, 64) + dora(64, 128) + dora(128, 64)) + (3 * 8 * 8 * 64 + 64) + 64 * 64 + 2 * 4 * 64 \
        + 2 * 64  # layers; patch conv, positions, layer norms, post norm
    text = 4 * (2 * dora(64, 64) + 2 * dora(64, 32) + 2 * dora(64, 256) + dora(256, 64)) + 4 * 2 * 64 + 64
    connector, embeddings = 64 * 4 * 64, v * 64 + dora(64, v)  # embed rows trained in full, lm_head adapted
    dora_phase = recipe.stages["vision"].phases[0]
    assert count_phase(config, dora_phase).trainable == vision + text + connector + embeddings


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line


def test_tiny_plan_table_via_cli(cli, wide):
    res = cli("plan", "--recipe", TINY_RECIPE, "--stage", "video", "--gpus", "2", "--deepspeed", "zero2")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "tiny: video stage on 2 GPUs x 80 GiB, DeepSpeed zero2 (ZeRO-2), bf16" in out
    assert "1. motion" in out and "2. video" in out and "gathered layer" not in out
    assert re.search(r"tokens / optimizer step\s+│\s+32,768\s+│\s+32,768", out)  # 32 x 1024
    assert re.search(r"fits in 80 GiB\?\s+│\s+yes\s+│\s+yes", out)
    assert "DeepSpeed, offload optimizer" in out and "Korthikanti" in out


@pytest.mark.parametrize("name,total,dora_trainable", [
    ("smolvlm2-256m", 256_484_928, 70_547_008),
    ("smolvlm2-500m", 507_482_304, None),
])
def test_release_recipes_plan_offline(cli, wide, name, total, dora_trainable):
    """No hub cache here (conftest sets HF_HUB_OFFLINE): the released parts' known shapes give the released counts."""
    args = ["plan", "--recipe", ROOT / "recipes" / f"{name}.yaml", "--gpus", "64"]
    if dora_trainable is None:  # the 500M: one full phase is enough (skips building its adapters)
        args += ["--stage", "video"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert "shapes of the released config" in res.stdout
    full = f"{total:,}"
    assert re.search(rf"trainable\s+│.*{full}", res.stdout), res.stdout
    if dora_trainable:
        assert re.search(rf"trainable\s+│\s+{dora_trainable:,}\s+│\s+{full}\s+│\s+{full}", res.stdout)
        assert re.search(r"grad accum\. \(64 GPUs\)\s+│\s+2\s+│\s+4\s+│\s+16", res.stdout)  # 1024 / (8 x 64) ...


def test_part_without_shapes_is_one_error_line(cli):
    res = cli("plan", "--recipe", TINY_RECIPE, "--set", "model.text.source=someorg/uncached-lm")
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "text part 'someorg/uncached-lm' is not in the local Hugging Face cache" in lines[0]


@pytest.mark.slow
def test_256m_counts_from_the_real_smollm2_gguf(gguf_path):
    """The text part's own config and tokenizer (read from the GGUF, no weights) give the released count too."""
    from smolvlm_cli.planner import count_phase, plan_config
    from smolvlm_cli.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml",
                         [f"model.text.source={gguf_path}", "model.vision.source=random:siglip-b16-512"])
    config, origins = plan_config(recipe.model)
    assert origins["text"] == str(gguf_path)
    assert (config.text_config.vocab_size, config.image_token_id) == (49280, 49190)
    assert count_phase(config, recipe.stages["video"].phases[0]).total == 256_484_928
