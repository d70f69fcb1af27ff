"""`smolvlm export --format mlx`: mlx-vlm (mlx[cpu] on Linux) loads the export and its greedy answer to an image
prompt equals transformers' (tiny model; 256M shapes with the real SmolLM2 text model, slow); the 4- and 8-bit
variants load and answer. mlx-vlm runs in a child process: loading a SmolVLM with it patches transformers'
AutoProcessor for the whole process, which would change what the other tests' processors return."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlx_vlm", reason="mlx-vlm is not installed: pip install 'smolvlm-cli[mlx]'")

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What colour?"

# The user's path (the model card's snippet): load, mlx-vlm's chat template, greedy stream_generate; per step the
# log-probabilities over the vocabulary. Several jobs in one child process: importing mlx-vlm takes seconds.
RUNNER = """
import json, sys
import numpy as np
from mlx_vlm import load, stream_generate
from mlx_vlm.prompt_utils import apply_chat_template
results = []
for job in json.loads(sys.argv[1]):
    model, processor = load(job["model"], **job["load"])
    prompt = apply_chat_template(processor, model.config, job["question"], num_images=1)
    logprobs = []
    for step in stream_generate(model, processor, prompt, image=[job["image"]], max_tokens=job["max_tokens"],
                                temperature=0.0):
        if step.finish_reason is None or step.finish_reason == "stop":  # the last one repeats the last step
            logprobs.append(np.array(step.logprobs, dtype=np.float32))
    np.save(job["logprobs"], np.stack(logprobs))
    results.append({"prompt": prompt, "tokens": step.token_ids,
                    "image_processor": type(processor.image_processor).__name__})
print(json.dumps(results))
"""


def run_mlx(jobs: list[tuple[Path, dict]], image: Path, max_tokens: int, tmp: Path) -> list[tuple[dict, np.ndarray]]:
    """(folder, load kwargs) per job -> (prompt, tokens, image processor class) and per-step log-probabilities."""
    specs = [{"model": str(folder), "image": str(image), "question": QUESTION, "max_tokens": max_tokens,
              "logprobs": str(tmp / f"logprobs-{i}.npy"), "load": load} for i, (folder, load) in enumerate(jobs)]
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(specs)], capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [(r, np.load(spec["logprobs"])) for r, spec in zip(results, specs)]


def transformers_greedy(model_dir: Path, image: Path, max_tokens: int, backend: str | None = None):
    """transformers' processor (its default image backend: torchvision) and generate(do_sample=False): the prompt,
    the new tokens and each step's log-probabilities."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    proc = AutoProcessor.from_pretrained(model_dir)
    if backend is not None:
        proc.image_processor = AutoImageProcessor.from_pretrained(model_dir, backend=backend)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = proc(text=prompt, images=[Image.open(image)], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    logprobs = torch.log_softmax(torch.cat(out.logits).float(), dim=-1).numpy()
    return prompt, tokens, logprobs


def export_mlx(source: Path, out: Path) -> Path:
    from typer.testing import CliRunner

    from smolvlm_cli.cli import app

    res = CliRunner().invoke(app, ["export", str(source), "--out", str(out), "--format", "mlx"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "q4/ (4-bit), q8/ (8-bit)" in res.output
    return out


def save_image(path: Path, size: tuple[int, int]) -> Path:
    from PIL import Image

    Image.fromarray(np.random.RandomState(0).randint(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_mlx(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlx-tiny")
    return export_mlx(tiny_model_dir, tmp / "mlx"), save_image(tmp / "image.png", (100, 90)), tmp


def first_difference(ours: list[int], theirs: list[int]) -> int:
    """How many leading tokens agree."""
    return next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))


TINY_TOKENS = 12
JOBS = {"fp32": (".", {"backend": "torchvision"}), "fp32-pil": (".", {}), "q8": ("q8", {"backend": "torchvision"}),
        "q4": ("q4", {"backend": "torchvision"})}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tmp_path_factory):
    """The tiny model with its matrices scaled by sqrt(50): at the random init's scale its greedy answer is one
    token repeated; scaled, the answer changes from token to token (top-2 margins down to 0.035 nats), so equal
    answers mean something. Exported with the CLI; transformers' and mlx-vlm's answers for the same image prompt."""
    import torch
    from transformers import AutoModelForImageTextToText

    tmp = tmp_path_factory.mktemp("mlx-tiny")
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(50 ** 0.5)
    model.save_pretrained(tmp / "model")
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, tmp / "model" / name)
    out = export_mlx(tmp / "model", tmp / "mlx")
    image = save_image(tmp / "image.png", (100, 90))
    hf = {backend: transformers_greedy(tmp / "model", image, TINY_TOKENS, backend) for backend in (None, "pil")}
    runs = run_mlx([(out / sub, load) for sub, load in JOBS.values()], image, TINY_TOKENS, tmp)
    return out, hf, dict(zip(JOBS, runs))


def test_tiny_export_folder(tiny):
    from safetensors import safe_open

    out = tiny[0]
    for folder, bits in ((out, None), (out / "q4", 4), (out / "q8", 8)):
        config = json.loads((folder / "config.json").read_text())
        assert config["text_config"]["rope_theta"] == 100000.0  # mlx-vlm would assume 1e6 without it
        assert config.get("quantization") == (None if bits is None else {"group_size": 64, "bits": bits,
                                                                          "mode": "affine"})
        card = (folder / "README.md").read_text()
        assert "mlx_vlm.generate --model MODEL_DIR --image" in card and 'backend="torchvision"' in card
        with safe_open(folder / "model.safetensors", "np") as f:
            scales = [k for k in f.keys() if k.endswith(".scales")]
        if bits is None:
            assert scales == []
        else:  # text model, embeddings, lm_head and connector quantised; the vision tower kept in float32
            assert "connector.modality_projection.proj.scales" in scales and "language_model.lm_head.scales" in scales
            assert not [k for k in scales if k.startswith("vision_model.")]


def test_tiny_greedy_answer_equals_transformers(tiny):
    _, hf, runs = tiny
    prompt, tokens, logprobs = hf[None]
    result, mlx_logprobs = runs["fp32"]
    assert result["prompt"] == prompt == "<|im_start|>User:<image>What colour?<end_of_utterance>\nAssistant:"
    assert result["image_processor"] == "SmolVLMImageProcessor"
    assert len(set(tokens)) >= 10 and result["tokens"] == tokens
    assert np.abs(mlx_logprobs[0] - logprobs[0]).max() < 1e-4  # measured 5e-5 (logits of this scaled model ~50)
    assert np.abs(mlx_logprobs - logprobs).max() < 1e-3  # measured 2.8e-4 over 12 steps


def test_tiny_default_load_uses_pil_backend(tiny):
    """mlx_vlm.load without backend= (and the mlx_vlm.generate command) resize with PIL, transformers with
    torchvision: at most one grey level apart, enough to turn this sensitive model's answer at the 5th token. Its
    answer equals transformers' with the PIL backend, so the backend is the whole difference."""
    _, hf, runs = tiny
    result, mlx_logprobs = runs["fp32-pil"]
    _, pil_tokens, pil_logprobs = hf["pil"]
    assert result["image_processor"] == "SmolVLMImageProcessorPil"
    assert result["tokens"] == pil_tokens
    assert np.abs(mlx_logprobs - pil_logprobs).max() < 1e-3
    assert first_difference(pil_tokens, hf[None][1]) == 4  # measured: the torchvision answer differs from here


def test_tiny_quantised_variants_load_and_answer(tiny):
    _, hf, runs = tiny
    tokens, logprobs = hf[None][1], hf[None][2]
    q8, q8_logprobs = runs["q8"]
    q4, q4_logprobs = runs["q4"]
    assert len(q8["tokens"]) == len(q4["tokens"]) == TINY_TOKENS and max(q8["tokens"] + q4["tokens"]) < 768
    assert q8["tokens"] == tokens  # measured: all 12 agree
    assert np.abs(q8_logprobs - logprobs).max() < 0.5  # measured 0.23
    assert np.isfinite(q4_logprobs).all()  # 4 bits in groups of 64 on 64-wide layers: 0 of 12 agree here


def test_bad_input_is_one_line(cli, tmp_path, monkeypatch):
    """A tied lm_head (mlx-vlm's SmolVLM has its own: its converter stops with "Missing 1 parameters") and a missing
    mlx-vlm: one line, exit 2, nothing written."""
    import importlib.util
    import re

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    tied = tmp_path / "tied"
    init_model(load_recipe(ROOT / "recipes" / "tiny.yaml", ["model.tie_word_embeddings=true"]), tied)
    find_spec = importlib.util.find_spec
    cases = [(tied, "ties lm_head to the embeddings", None),
             (tied, "needs mlx and mlx-vlm", lambda name, *a: None if name == "mlx_vlm" else find_spec(name, *a))]
    for i, (source, pattern, fake) in enumerate(cases):
        if fake is not None:
            monkeypatch.setattr(importlib.util, "find_spec", fake)
        out = tmp_path / f"out{i}"
        res = cli("export", source, "--out", out, "--format", "mlx")
        assert res.exit_code == 2, res.output
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and re.search(pattern, lines[0]) and " - " in lines[0], res.stderr
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}")]


# --- 256M shapes: random SigLIP-B/16-512 + the real SmolLM2-135M-Instruct ----------------------------------------

RELEASE_TOKENS = 8


@pytest.fixture(scope="module")
def release(gguf_path, tmp_path_factory):
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.deploy.mlx import write_mlx
    from smolvlm_cli.recipe import load_recipe

    tmp = tmp_path_factory.mktemp("mlx-256m")
    # one 512 px tile per image (64 image tokens): mlx's CPU backend takes minutes for the 17 tiles of 2048 px
    recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml", ["model.dtype=float32",
                                                                    "model.processor.longest_edge=512"])
    init_model(recipe, tmp / "model", vision_ref="random:siglip-b16-512", text_ref=str(gguf_path))
    # the writer on the float32 folder itself (the CLI path is the tiny test's): one 1 GB copy fewer on disk
    (tmp / "mlx").mkdir()
    write_mlx(tmp / "model", tmp / "mlx")
    image = save_image(tmp / "image.png", (100, 90))
    hf = transformers_greedy(tmp / "model", image, RELEASE_TOKENS)
    runs = run_mlx([(tmp / "mlx" / sub, load) for sub, load in JOBS.values()], image, RELEASE_TOKENS, tmp)
    yield hf, dict(zip(JOBS, runs))
    shutil.rmtree(tmp)  # about 3 GB


@pytest.mark.slow
def test_256m_greedy_answer_equals_transformers(release):
    (prompt, tokens, logprobs), runs = release
    result, mlx_logprobs = runs["fp32"]
    assert result["prompt"] == prompt and result["tokens"] == tokens
    assert np.abs(mlx_logprobs[0] - logprobs[0]).max() < 1e-3  # measured 1.8e-4 (30 float32 layers)
    assert runs["fp32-pil"][0]["tokens"] == tokens  # mlx-vlm's default (PIL) resizing gives the same answer here


@pytest.mark.slow
def test_256m_quantised_variants_answer(release):
    (_, tokens, _), runs = release
    print({name: first_difference(runs[name][0]["tokens"], tokens) for name in ("q8", "q4")})
    assert runs["q8"][0]["tokens"] == tokens
    assert len(runs["q4"][0]["tokens"]) == RELEASE_TOKENS
