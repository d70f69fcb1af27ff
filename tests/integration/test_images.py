"""The recipe's `images:` section: at the released 256M processor settings (longest_edge 2048 = 4 x 512 tiles, 64
tokens per tile) a 386 px image is 17 tiles upscaled and one tile with `upscale_small_images: false`, in training's
encoder and in the processor eval and generate load; the settings are validated, reach the model (smaller tiles run),
and training records them in the phase model's processor."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image as PILImage

from smolvlm_cli.errors import RecipeError

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "recipes" / "finetune-lora.yaml"


def images(*sets: str):
    from smolvlm_cli.recipe import load_recipe

    return load_recipe(ROOT / "recipes" / "tiny.yaml", [f"images.{s}" for s in sets]).images


def tokens_and_tiles(processor, image) -> tuple[int, int]:
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                          "text": "What is it?"}]}], add_generation_prompt=True)
    out = processor(text=[text], images=[[image]], return_tensors="pt")
    return int((out["input_ids"] == processor.image_token_id).sum()), int(out["pixel_values"].shape[1])


@pytest.fixture(scope="module")
def released_256m_processor(tiny_model_dir, tmp_path_factory) -> Path:
    """A processor folder at SmolVLM2-256M's image settings, built as `smolvlm init` builds one (tiny tokenizer)."""
    from transformers import AutoTokenizer

    from smolvlm_cli.assemble import build_processor
    from smolvlm_cli.recipe import load_recipe

    model = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml").model
    processor = build_processor(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert processor.image_seq_len == 64 and processor.image_processor.max_image_size == {"longest_edge": 512}
    assert processor.image_processor.size["longest_edge"] == 2048
    out = tmp_path_factory.mktemp("p256m")
    processor.save_pretrained(out)
    return out


def test_small_image_stays_one_tile(released_256m_processor, tmp_path):
    from transformers import AutoProcessor

    from smolvlm_cli.data.encode import EncodeConfig, Encoder
    from smolvlm_cli.data.images import honour_upscale, load_processor, record_images
    from smolvlm_cli.data.sample import Image, Sample, Text, Turn

    small = PILImage.new("RGB", (386, 386), (200, 40, 40))
    assert tokens_and_tiles(load_processor(released_256m_processor), small) == (17 * 64, 17)  # 4 x 4 + global
    settings = images("upscale_small_images=false")
    processor = load_processor(released_256m_processor, settings)
    assert tokens_and_tiles(processor, small) == (64, 1)
    # larger images go to their own tile multiple, capped at longest_edge: 700 x 500 -> 1024 -> 2 x 2 + global
    assert tokens_and_tiles(processor, PILImage.new("RGB", (700, 500))) == (5 * 64, 5)
    assert tokens_and_tiles(processor, PILImage.new("RGB", (3000, 1000))) == (9 * 64, 9)  # 2048 x 683: 4 x 2 + 1

    sample = Sample("s", "test", [Turn("user", [Image(pil=small), Text("What colour?")]),
                                  Turn("assistant", [Text("red")])])
    enc = Encoder(processor, EncodeConfig(max_seq_len=4096))(sample)  # training's path
    assert int((enc.input_ids == processor.image_token_id).sum()) == 64
    assert tuple(enc.pixel_values.shape) == (1, 3, 512, 512)

    folder = tmp_path / "phase"
    shutil.copytree(released_256m_processor, folder)
    record_images(folder, settings)  # what training writes into a phase model
    saved = json.loads((folder / "processor_config.json").read_text())["image_processor"]
    assert saved["upscale_small_images"] is False and saved["image_processor_type"] == "SmolVLMImageProcessor"
    plain = AutoProcessor.from_pretrained(folder)  # plain transformers still loads it (and ignores the key)
    assert tokens_and_tiles(plain, small) == (17 * 64, 17)
    assert tokens_and_tiles(honour_upscale(plain), small) == (64, 1)


def test_recorded_settings_reach_eval_and_generate(tiny_model_dir, tmp_path):
    from smolvlm_cli.data.images import record_images
    from smolvlm_cli.eval.runner import load_model
    from smolvlm_cli.generate import generate_answer

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    record_images(model_dir, images("longest_edge=128", "upscale_small_images=false"))
    model, processor = load_model(model_dir, "cpu")  # eval's and generate's loader
    assert processor.image_processor.size["longest_edge"] == 128
    assert tokens_and_tiles(processor, PILImage.new("RGB", (40, 40))) == (16, 1)
    assert tokens_and_tiles(processor, PILImage.new("RGB", (100, 100))) == (5 * 16, 5)  # 128: 2 x 2 + global
    answer = generate_answer(model, processor, "What is it?", [PILImage.new("RGB", (40, 40))], max_new_tokens=3,
                             out=open("/dev/null", "w"))
    assert isinstance(answer, str)


def test_smaller_tiles_run_and_bad_settings_stop(tiny_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText

    from smolvlm_cli.data.images import load_processor

    processor = load_processor(tiny_model_dir, images("max_image_size=32", "longest_edge=64"))
    assert processor.image_seq_len == 4  # (32 / 8)^2 / 2^2
    n, tiles = tokens_and_tiles(processor, PILImage.new("RGB", (64, 48)))
    assert (n, tiles) == (5 * 4, 5)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}],
                                         add_generation_prompt=True)
    inputs = processor(text=[text], images=[[PILImage.new("RGB", (64, 48))]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits  # the image features fill exactly the prompt's image tokens
    assert torch.isfinite(logits).all()

    with pytest.raises(RecipeError, match="images.max_image_size 128 is larger than the vision tower's "
                                          "image_size 64"):
        load_processor(tiny_model_dir, images("max_image_size=128", "longest_edge=128"))
    with pytest.raises(RecipeError, match="images.max_image_size 20 is not a multiple of patch_size x "
                                          "scale_factor = 8 x 2 = 16"):
        load_processor(tiny_model_dir, images("max_image_size=20", "longest_edge=40"))
    with pytest.raises(RecipeError, match="images.longest_edge 1000 is not a multiple of images.max_image_size 512"):
        images("longest_edge=1000", "max_image_size=512")
    with pytest.raises(RecipeError, match="unknown key 'images.upscale'"):
        images("upscale=false")


@pytest.mark.slow
def test_training_records_the_settings_in_the_phase_model(tmp_path, tiny_model_dir):
    from smolvlm_cli.data.images import load_processor
    from tests.integration.test_data_check import _row
    from tests.integration.test_train import cli

    (tmp_path / "img").mkdir()
    PILImage.new("RGB", (40, 40), (30, 200, 30)).save(tmp_path / "img" / "g.png")
    data = tmp_path / "train.jsonl"
    data.write_text(_row("img/g.png", "What colour?", "green") * 4)
    phase = "stages.vision.phases.0"
    sets = [f"{phase}.steps=1", f"{phase}.global_batch_size=2", f"{phase}.micro_batch_size=2",
            f"{phase}.max_seq_len=256", "images.longest_edge=128", "images.upscale_small_images=false"]
    run = tmp_path / "run"
    res = cli("train-vision", "--recipe", LORA, "--init", tiny_model_dir, "--out", run, "--data", data,
              *[a for s in sets for a in ("--set", s)])
    assert res.returncode == 0, res.stderr[-3000:]
    folder = next((run / "phases").glob("00-*"))
    saved = json.loads((folder / "processor_config.json").read_text())["image_processor"]
    assert saved["size"] == {"longest_edge": 128} and saved["upscale_small_images"] is False
    assert tokens_and_tiles(load_processor(folder), PILImage.new("RGB", (40, 40))) == (16, 1)
