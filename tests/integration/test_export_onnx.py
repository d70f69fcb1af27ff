# `smolvlm export --format onnx` and `smolvlm generate --model ONNX_DIR`: the released three-graph layout, fp32
# graphs equal to transformers (first-step logits to 1e-4, same greedy tokens for image and video prompts, on the
# tiny model and at the 256M shapes), the int8 / q4 variants measured, and the CLI end to end.
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from smolvlm_cli.errors import UserError
from smolvlm_cli.generate import build_messages, cli_generate, generate_answer, load_images
from tests.integration.test_generate import Recorder, write_mp4

ROOT = Path(__file__).resolve().parents[2]
GRAPH_IO = {
    "vision_encoder": (["pixel_values", "pixel_attention_mask"], ["image_features"]),
    "embed_tokens": (["input_ids"], ["inputs_embeds"]),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("onnx-media")
    Image.new("RGB", (96, 72), (200, 30, 30)).save(root / "red.png")
    img = np.zeros((50, 120, 3), np.uint8)
    img[:, :60] = (30, 200, 30)
    Image.fromarray(img).save(root / "wide.png")  # not square: a padded global tile
    write_mp4(root / "bar.mp4")
    return root


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model_dir, tmp_path_factory):
    """The tiny model exported through the real CLI."""
    from typer.testing import CliRunner

    from smolvlm_cli.cli import app

    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    result = CliRunner().invoke(app, ["export", str(tiny_model_dir), "--out", str(out), "--format", "onnx"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from smolvlm_cli.eval.runner import load_model

    return load_model(tiny_model_dir, "cpu")


def prompt_inputs(processor, prompt: str, images=(), video=None, **extra) -> dict:
    text = processor.apply_chat_template(build_messages(prompt, len(images), video is not None),
                                         add_generation_prompt=True)
    kwargs = {"text": [text], "return_tensors": "pt", **extra}
    if images:
        kwargs["images"] = [list(images)]
    if video is not None:
        kwargs.update(videos=[video.frames], video_metadata=[video.metadata()], do_sample_frames=False)
    return dict(processor(**kwargs))


def transformers_greedy(model, inputs: dict, n: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def onnx_greedy(runner, inputs: dict, n: int) -> list[int]:
    arrays = {k: v.numpy() for k, v in inputs.items()}
    return runner.greedy(arrays["input_ids"], arrays["attention_mask"], arrays.get("pixel_values"),
                         arrays.get("pixel_attention_mask"), max_new_tokens=n)


def first_step_gap(model, runner, inputs: dict) -> float:
    import torch

    with torch.inference_mode():
        ref = model(**inputs).logits[0].numpy()
    arrays = {k: v.numpy() for k, v in inputs.items()}
    embeds = runner.prompt_embeds(arrays["input_ids"], arrays.get("pixel_values"), arrays.get("pixel_attention_mask"))
    return float(np.abs(runner.decode(embeds, arrays["attention_mask"])[0][0] - ref).max())


def check_against_transformers(model, processor, folder: Path, media: Path, n: int, tol: float = 1e-4,
                               **image_kwargs) -> dict:
    """Greedy tokens for an image and a video prompt (equal lists asserted) and the first-step logit gaps."""
    from smolvlm_cli.data.frame_cache import load_model_video
    from smolvlm_cli.deploy.onnx_generate import OnnxSmolVLM

    runner = OnnxSmolVLM(folder)
    images = load_images([media / "red.png", media / "wide.png"][:image_kwargs.pop("n_images", 2)])
    cases = {"image": prompt_inputs(processor, "What colour is it?", images, **image_kwargs),
             "video": prompt_inputs(processor, "Where does the bar grow?",
                                    video=load_model_video(media / "bar.mp4", processor))}
    gaps = {}
    for name, inputs in cases.items():
        expected = transformers_greedy(model, inputs, n)
        assert onnx_greedy(runner, inputs, n) == expected and expected, name
        gaps[name] = first_step_gap(model, runner, inputs)
        assert gaps[name] < tol, (name, gaps[name])
    return gaps


def test_layout_names_and_card(tiny_onnx, tiny_model_dir):
    import onnxruntime as ort

    from smolvlm_cli.deploy.onnx_quant import quant_ops

    config = json.loads((tiny_model_dir / "config.json").read_text())
    layers = config["text_config"]["num_hidden_layers"]
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    io = {**GRAPH_IO, "decoder_model_merged": (["inputs_embeds", "attention_mask", "position_ids", *past],
                                               ["logits", *[p.replace("past_key_values", "present") for p in past]])}
    for graph, (inputs, outputs) in io.items():
        for suffix in ("", "_int8", "_q4"):
            session = ort.InferenceSession(str(tiny_onnx / "onnx" / f"{graph}{suffix}.onnx"))
            assert [i.name for i in session.get_inputs()] == inputs
            assert [o.name for o in session.get_outputs()] == outputs
        assert {"MatMulInteger", "DequantizeLinear"} & quant_ops(tiny_onnx / "onnx" / f"{graph}_int8.onnx")
        assert {"MatMulNBits", "GatherBlockQuantized"} & quant_ops(tiny_onnx / "onnx" / f"{graph}_q4.onnx")
        assert not quant_ops(tiny_onnx / "onnx" / f"{graph}.onnx")
    names = {p.name for p in tiny_onnx.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "processor_config.json", "README.md"} <= names
    assert not any(n.endswith(".safetensors") for n in names)
    card = (tiny_onnx / "README.md").read_text()
    assert "smolvlm generate --model path/to/this-folder --image" in card
    for row in ("| fp32 | transformers", "| int8 | fp32 graphs", "| q4 | fp32 graphs"):
        assert row in card


def test_fp32_graphs_equal_transformers_on_image_and_video(tiny_onnx, hf_model, media):
    model, processor = hf_model
    gaps = check_against_transformers(model, processor, tiny_onnx, media, n=12)
    assert set(gaps) == {"image", "video"}


def test_quantised_variants_measured(tiny_onnx, tiny_model_dir):
    """The card's figures are what onnx_check measures; on the tiny model int8 and q4 keep most greedy tokens."""
    from smolvlm_cli.deploy.onnx import load_fp32
    from smolvlm_cli.deploy.onnx_card import verified
    from smolvlm_cli.deploy.onnx_check import verify

    report = verify(load_fp32(tiny_model_dir), tiny_onnx, ["int8", "q4"])
    assert verified(report) in (tiny_onnx / "README.md").read_text()  # deterministic: same figures as at export
    assert report["fp32"]["max_logit_gap"] < 1e-4 and report["fp32"]["same_tokens"] == report["fp32"]["tokens"]
    for variant in ("int8", "q4"):
        row = report[variant]
        assert 0 < row["max_logit_gap"] < 1.0  # quantised (not a copy), and close
        assert row["same_tokens"] >= 0.75 * row["tokens"]
    sizes = {v: (tiny_onnx / "onnx" / f"decoder_model_merged{v}.onnx").stat().st_size for v in ("", "_int8", "_q4")}
    assert sizes[""] > sizes["_int8"] > sizes["_q4"]


def test_cli_generate_on_the_onnx_folder(tiny_onnx, tiny_model_dir, hf_model, media, cli):
    model, processor = hf_model
    result = cli("generate", "--model", tiny_onnx, "--image", media / "red.png", "--max-new-tokens", 6,
                 "Which colour?")
    assert result.exit_code == 0, result.output
    expected = generate_answer(model, processor, "Which colour?", load_images([media / "red.png"]), max_new_tokens=6,
                               out=Recorder())
    assert result.stdout.strip() == expected and expected

    out = Recorder()
    answer = cli_generate(tiny_onnx, "Where does the bar grow?", video=media / "bar.mp4", max_new_tokens=6, out=out)
    assert answer == cli_generate(tiny_model_dir, "Where does the bar grow?", video=media / "bar.mp4",
                                  max_new_tokens=6, out=Recorder())
    assert "".join(out.writes).strip() == answer and out.writes[-1].endswith("\n")


def test_missing_variant_is_one_line(tiny_onnx):
    from smolvlm_cli.deploy.onnx_generate import OnnxSmolVLM

    with pytest.raises(UserError) as info:
        OnnxSmolVLM(tiny_onnx, "q8")
    assert info.value.message == f"{tiny_onnx / 'onnx' / 'vision_encoder_q8.onnx'} not found"


# --- the 256M recipe's shapes: random SigLIP-B/16-512 + the real SmolLM2-135M-Instruct ----------------------------

@pytest.fixture(scope="module")
def onnx_256m(gguf_path, tmp_path_factory):
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.deploy.onnx import write_onnx
    from smolvlm_cli.recipe import load_recipe

    root = tmp_path_factory.mktemp("m256")
    recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml", ["model.dtype=float32"])
    init_model(recipe, root / "hf", vision_ref="random:siglip-b16-512", text_ref=str(gguf_path))
    (root / "onnx").mkdir()
    started = time.perf_counter()
    notes: list[str] = []
    write_onnx(root / "hf", root / "onnx", notes.append)
    seconds = time.perf_counter() - started
    sizes = {p.name: p.stat().st_size for p in sorted((root / "onnx" / "onnx").glob("*.onnx"))}
    print(f"\n256M onnx export: {seconds:.0f} s; {notes}; sizes (MiB): "
          + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes.items()))
    return root


@pytest.mark.slow
def test_256m_shapes_fp32_equal_transformers(onnx_256m, media):
    """Measured here: first-step logit gap 1.1e-4 (sdpa reference) / 2.4e-4 (eager) over 30 fp32 layers, so 5e-4."""
    from smolvlm_cli.eval.runner import load_model

    model, processor = load_model(onnx_256m / "hf", "cpu")
    gaps = check_against_transformers(model, processor, onnx_256m / "onnx", media, n=4, n_images=1, tol=5e-4,
                                      do_image_splitting=False)  # one 512 px tile: seconds, not minutes, on a CPU
    print(f"256M first-step logit gaps: {gaps}")
    card = (onnx_256m / "onnx" / "README.md").read_text()
    print(card[card.index("## Verified"):card.index("## Run it")])
