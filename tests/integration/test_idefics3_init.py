"""`--init` of an Idefics3 (SmolVLM v1) checkpoint: converted once into a SmolVLM folder whose logits equal the v1
model's exactly on the same prompt, then fine-tuned with recipes/finetune-lora.yaml (real DeepSpeed, 1 process)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smolvlm_cli.idefics3 import converted_idefics3, is_idefics3
from smolvlm_cli.train.run import resolve_init
from tests.integration.test_finetune_data import LORA, colour_rows, tiny_sets
from tests.integration.test_train import cli, losses


@pytest.fixture(scope="module")
def v1_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A v1 checkpoint as the hub has them: Idefics3 config, weights and processor (the tiny model's weights)."""
    from transformers import (AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor, SmolVLMForConditionalGeneration)

    smol = SmolVLMForConditionalGeneration.from_pretrained(tiny_model_dir)
    c = smol.config
    vision = {k: v for k, v in c.vision_config.to_dict().items() if k != "model_type"}
    config = Idefics3Config(vision_config=vision, text_config=c.text_config.to_dict(), scale_factor=c.scale_factor,
                            image_token_id=c.image_token_id, tie_word_embeddings=c.tie_word_embeddings)
    v1 = Idefics3ForConditionalGeneration(config)
    v1.load_state_dict(smol.state_dict(), strict=True)
    out = tmp_path_factory.mktemp("v1") / "SmolVLM-tiny-Instruct"
    v1.save_pretrained(out)
    ip = AutoProcessor.from_pretrained(tiny_model_dir)
    image = Idefics3ImageProcessor(do_image_splitting=True, size=dict(ip.image_processor.size),
                                   max_image_size=dict(ip.image_processor.max_image_size),
                                   image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=1)
    Idefics3Processor(image_processor=image, tokenizer=ip.tokenizer, image_seq_len=ip.image_seq_len,
                      chat_template=ip.chat_template).save_pretrained(out)
    return out


def test_converted_v1_gives_the_v1_models_logits_and_is_made_once(v1_dir, tmp_path, monkeypatch):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path / "cache"))
    assert is_idefics3(v1_dir)
    folder = resolve_init(v1_dir)
    assert folder.parent == tmp_path / "cache" / "converted" and folder.name.startswith("SmolVLM-tiny-Instruct-")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "smolvlm"
    stamp = os.stat(folder / "model.safetensors").st_mtime_ns
    assert converted_idefics3(v1_dir) == folder and os.stat(folder / "model.safetensors").st_mtime_ns == stamp

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    image = Image.new("RGB", (100, 60), (200, 40, 40))
    logits, ids = [], []
    for path in (v1_dir, folder):
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        batch = processor(text=text, images=[[image]], return_tensors="pt")
        ids.append(batch["input_ids"])
        with torch.no_grad():
            logits.append(model(**batch).logits)
    assert type(model).__name__ == "SmolVLMForConditionalGeneration"
    assert torch.equal(ids[0], ids[1])
    assert torch.equal(logits[0], logits[1])


@pytest.mark.slow
def test_lora_finetune_from_a_v1_checkpoint(v1_dir, tmp_path, monkeypatch):
    rows = colour_rows(tmp_path / "data", 16, "image", "img/")
    data = tmp_path / "data" / "train.jsonl"
    data.write_text("".join(json.dumps({"image": r["image"], "question": r["question"], "answer": r["answer"]}) + "\n"
                            for r in rows))
    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path / "cache"))  # the ranks' environment
    res = cli("train-vision", "--recipe", LORA, "--init", v1_dir, "--out", tmp_path / "run", *tiny_sets(3),
              "--data", data)
    assert res.returncode == 0, res.stderr
    assert len(losses(tmp_path / "run")) == 3
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert Path(run["init"]).parent == tmp_path / "cache" / "converted"
    assert json.loads((tmp_path / "run" / "phases" / "00-lora" / "config.json").read_text())["model_type"] == "smolvlm"
