"""`smolvlm init`: the assembled model carries its parts' weights, loads with plain transformers, and bad input
fails cleanly (exit 2, one line, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, TINY_RECIPE

SIGLIP_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   image_size=64, patch_size=8)


def _siglip_text():
    return dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)


@pytest.fixture(scope="module")
def siglip_dirs(tmp_path_factory):
    """A tiny random SigLIP saved in both layouts (SiglipModel and SiglipVisionModel)."""
    from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(3)
    base = tmp_path_factory.mktemp("siglip")
    full = SiglipModel(SiglipConfig(vision_config=SIGLIP_TINY, text_config=_siglip_text()))
    full.save_pretrained(base / "full")
    torch.manual_seed(4)
    vision_only = SiglipVisionModel(SiglipVisionConfig(**SIGLIP_TINY))
    vision_only.save_pretrained(base / "vision")
    return {"full": (base / "full", full.vision_model), "vision": (base / "vision", vision_only)}


def test_tiny_init_via_cli_prints_summary_and_writes_folder(cli, tmp_path):
    out = tmp_path / "model"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out)
    assert res.exit_code == 0, res.output
    assert "tokens per image tile: 16" in res.stdout and "context length: 2048" in res.stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "recipe.yaml", "smolvlm_init.json"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folder left behind
    # the processor and generation settings load back, whichever files transformers keeps them in
    from transformers import AutoProcessor, GenerationConfig

    proc = AutoProcessor.from_pretrained(out)
    assert proc.chat_template and proc.image_seq_len == 16
    eou = proc.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert eou != proc.tokenizer.unk_token_id and GenerationConfig.from_pretrained(out).eos_token_id == eou
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "smolvlm" and config["scale_factor"] == 2
    assert config["text_config"]["vocab_size"] % 128 == 0
    assert config["text_config"]["rope_parameters"]["rope_theta"] == 100000
    assert config["text_config"]["architectures"] == ["VLlama3ForCausalLM"]  # as released: llama.cpp reads it


@pytest.mark.parametrize("layout", ["full", "vision"])
def test_vision_tower_equals_siglip(siglip_dirs, tmp_path, layout):
    from transformers import AutoModelForImageTextToText

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    path, reference = siglip_dirs[layout]
    init_model(load_recipe(TINY_RECIPE), tmp_path / "m", vision_ref=str(path))
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "m").eval()
    assert not any("head" in k for k in model.model.vision_model.state_dict())
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.model.vision_model(pixel_values=pixels).last_hidden_state
        theirs = reference.eval()(pixel_values=pixels).last_hidden_state
    assert ours.shape == (2, 64, 64)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)


def test_output_loads_offline_and_generates_on_image_and_video(tiny_model_dir, tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "SmolVLMForConditionalGeneration" and type(proc).__name__ == "SmolVLMProcessor"
    eou = proc.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert model.generation_config.eos_token_id == eou and proc.tokenizer.eos_token_id == eou
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()  # untied

    rng = np.random.RandomState(0)
    img = Image.fromarray(rng.randint(0, 255, (100, 90, 3), dtype=np.uint8))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert prompt == "<|im_start|>User:<image>What colour?<end_of_utterance>\nAssistant:"
    one_tile = proc(text=prompt, images=[img], return_tensors="pt")  # the tiny recipe: one 64 px tile per image
    assert one_tile["pixel_values"].shape == (1, 1, 3, 64, 64)
    assert int((one_tile["input_ids"] == model.config.image_token_id).sum()) == 16

    # exercise image splitting (up to 2x2 tiles): the same recipe with a longer edge (same tokenizer and ids)
    split_dir = tmp_path / "split"
    init_model(load_recipe(TINY_RECIPE, ["model.processor.longest_edge=128"]), split_dir)
    split = AutoProcessor.from_pretrained(split_dir)
    assert split.apply_chat_template(msgs, add_generation_prompt=True) == prompt
    inputs = split(text=prompt, images=[img], return_tensors="pt")
    # 100x90 -> resized to longest edge 128 -> 2x2 tiles of 64 + global image = 5 tiles of 16 tokens
    assert inputs["pixel_values"].shape == (1, 5, 3, 64, 64)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 5 * 16
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    frames = rng.randint(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    meta = VideoMetadata(total_num_frames=3, fps=1.0, duration=3.0, frames_indices=[0, 1, 2])
    vmsgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which direction?"}]}]
    vprompt = proc.apply_chat_template(vmsgs, add_generation_prompt=True)
    vin = proc(text=vprompt, videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt")
    decoded = proc.tokenizer.decode(vin["input_ids"][0])
    assert "series of three frames from a 0:00:03" in decoded
    assert "Frame from 00:00:" in decoded and "Frame from 00:02:" in decoded
    assert int((vin["input_ids"] == model.config.image_token_id).sum()) == 3 * 16
    out = model.generate(**vin, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > vin["input_ids"].shape[1]


@pytest.mark.parametrize("lm_name,hidden,layers,heads,kv,mlp,expected", [
    ("SmolLM2-135M", 576, 30, 9, 3, 1536, 256_484_928),
    ("SmolLM2-360M", 960, 32, 15, 5, 2560, 507_482_304),
])
def test_release_shapes_give_released_parameter_counts(lm_name, hidden, layers, heads, kv, mlp, expected):
    """The 256M / 500M recipes with parts of the released shapes, counted on the meta device."""
    from transformers import LlamaConfig, SmolVLMForConditionalGeneration, SiglipVisionConfig

    from smolvlm_cli.assemble import build_config, count_parameters
    from smolvlm_cli.recipe import load_recipe

    name = "smolvlm2-256m" if hidden == 576 else "smolvlm2-500m"
    m = load_recipe(ROOT / "recipes" / f"{name}.yaml").model
    vision = SiglipVisionConfig(**m.random_parts["siglip-b16-512"].vision.model_dump())
    lm = LlamaConfig(vocab_size=49152, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     num_key_value_heads=kv, intermediate_size=mlp, tie_word_embeddings=True)
    config = build_config(m, vision, lm, vocab_size=49280, image_token_id=49190, pad_id=2)
    with torch.device("meta"):
        model = SmolVLMForConditionalGeneration(config)
    counts = count_parameters(model)
    assert sum(counts.values()) == expected
    assert counts["connector"] == 768 * 16 * hidden
    assert counts["embeddings"] == counts["lm_head"] == 49280 * hidden


@pytest.mark.slow
def test_256m_from_real_smollm2_gguf(gguf_path, tmp_path):
    """256M recipe: random SigLIP-B/16-512 + the real SmolLM2-135M-Instruct. Released ids and parameter count;
    text-only logits on the original vocabulary equal the source LM's."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml", ["model.dtype=float32"])
    result = init_model(recipe, tmp_path / "m", vision_ref="random:siglip-b16-512", text_ref=str(gguf_path))
    assert result.total_parameters == 256_484_928
    assert result.vocab_size == 49280 and result.image_seq_len == 64 and result.context_length == 8192
    assert result.special_token_ids == {"<image>": 49190, "<end_of_utterance>": 49279}

    proc = AutoProcessor.from_pretrained(tmp_path / "m")
    tok = proc.tokenizer
    assert tok.convert_tokens_to_ids(["<global-img>", "<row_1_col_1>", "<row_6_col_6>", "<fake_token_around_image>",
                                      "<image>", "<end_of_utterance>"]) == [49152, 49153, 49188, 49189, 49190, 49279]
    assert proc.image_seq_len == 64

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "m").eval()
    assert model.config.tie_word_embeddings is False
    source = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).eval()
    emb = source.get_input_embeddings().weight
    new_rows = model.model.text_model.embed_tokens.weight[49152:]
    assert torch.allclose(new_rows, emb.mean(0).expand_as(new_rows), atol=1e-6)
    assert torch.equal(model.lm_head.weight, model.model.text_model.embed_tokens.weight)  # untied copy

    ids = tok("Gravity is the force that", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours = model(input_ids=ids).logits[..., :49152]
        theirs = source(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4


# --- bad input: one line on stderr, exit 2, nothing written -------------------------------------------------------

def _assert_clean_failure(res, out, pattern):
    import re

    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    assert " - " in lines[0]  # the hint
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_part_path(cli, tmp_path):
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--vision", tmp_path / "nope")
    _assert_clean_failure(res, out, r"vision part '.*nope' not found")


def test_text_part_that_is_not_a_causal_lm(cli, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               vocab_size=100)).save_pretrained(bert)
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--text", bert)
    _assert_clean_failure(res, out, r"text part '.*bert' is a BertForMaskedLM, not a causal language model")


def test_parts_swapped(cli, tmp_path, siglip_dirs):
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--text", siglip_dirs["full"][0])
    _assert_clean_failure(res, out, r"text part '.*full' is a SiglipModel, not a causal language model")
    lm = tmp_path / "lm"
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                 intermediate_size=64, vocab_size=100)).save_pretrained(lm)
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--vision", lm)
    _assert_clean_failure(res, out, r"vision part '.*lm' is a 'llama' model, not SigLIP")


def test_inconsistent_sizes(cli, tmp_path, siglip_dirs):
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--set", "model.vision.hidden_size=768")
    _assert_clean_failure(res, out, r"inconsistent sizes: the connector expects vision hidden 768 x 4 = 3072")
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--set", "model.vision.image_size=128",
              "--set", "model.processor.longest_edge=128",
              "--vision", siglip_dirs["vision"][0])
    _assert_clean_failure(res, out, r"takes 64px images in 8px patches but the recipe says 128px")


def test_unknown_recipe_key(cli, tmp_path):
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--set", "model.vison.source=x")
    _assert_clean_failure(res, out, r"unknown key 'model.vison'")


def test_unknown_random_part(cli, tmp_path):
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--text", "random:huge")
    _assert_clean_failure(res, out, r"no random text part 'huge'.*random:tiny")


def test_hub_part_not_in_cache(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "m"
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--vision", "google/siglip-base-patch16-512")
    _assert_clean_failure(res, out, r"'google/siglip-base-patch16-512' is not in the local Hugging Face cache")


def test_non_empty_output_needs_force(cli, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out)
    assert res.exit_code == 2
    assert "not empty" in res.stderr and "--force" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    res = cli("init", "--recipe", TINY_RECIPE, "--out", out, "--force")
    assert res.exit_code == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()


def test_failure_during_write_keeps_previous_folder(tmp_path, monkeypatch):
    """A crash (here: disk full) while saving leaves the old folder intact and no temp folder."""
    import errno

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.errors import OutputError
    from smolvlm_cli.recipe import load_recipe

    out = tmp_path / "m"
    out.mkdir()
    (out / "old.txt").write_text("previous model")

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("transformers.SmolVLMProcessor.save_pretrained", full_disk)
    with pytest.raises(OutputError, match="disk full while writing"):
        init_model(load_recipe(TINY_RECIPE), out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert (out / "old.txt").read_text() == "previous model"


def test_debug_shows_traceback(cli, tmp_path):
    from typer.testing import CliRunner

    from smolvlm_cli.cli import app

    res = CliRunner().invoke(app, ["--debug", "init", "--recipe", str(tmp_path / "nope.yaml"), "--out",
                                   str(tmp_path / "m")])
    assert res.exit_code == 1 and type(res.exception).__name__ == "RecipeError"


def test_version(cli):
    from smolvlm_cli import __version__

    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"smolvlm-cli {__version__}"
