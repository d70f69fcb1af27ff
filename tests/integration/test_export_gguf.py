# `smolvlm export --format gguf` (deploy/gguf.py): the files read back equal the source weights, carry the tokenizer
# and chat template, match what llama.cpp's own converter writes, and llama-mtmd-cli answers as transformers does.
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LLAMA_CPP = os.environ.get("SMOLVLM_LLAMA_CPP")  # llama.cpp source folder holding convert_hf_to_gguf.py
MTMD_CLI = os.environ.get("SMOLVLM_LLAMA_MTMD_CLI")  # a built llama-mtmd-cli binary
FILES = ["README.md", "mmproj-model-f16.gguf", "mmproj-model-q8_0.gguf", "model-f16.gguf", "model-q8_0.gguf"]


def read(path: Path):
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {k: (tuple(f.types), f.contents()) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


def source_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for f in folder.glob("*.safetensors") for k, v in load_file(f).items()}


def hf_rows(data: np.ndarray, n_head: int) -> np.ndarray:
    """Undo ggml's rotary layout (pairs interleaved per head) back to HF's (two halves per head)."""
    half = data.shape[0] // n_head // 2
    return data.reshape(n_head, half, 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)


def expected_pairs(weights: dict, config: dict, vision: bool):
    """(gguf name, HF-layout array) for every source tensor of one file."""
    import gguf

    if vision:
        names = gguf.TensorNameMap(gguf.MODEL_ARCH.MMPROJ, config["vision_config"]["num_hidden_layers"])
        picked = {k: v for k, v in weights.items() if k.startswith(("model.vision_model.", "model.connector."))}
    else:
        names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config["text_config"]["num_hidden_layers"])
        picked = {k.replace("model.text_model.", "model."): v for k, v in weights.items()
                  if k.startswith(("model.text_model.", "lm_head."))}
    return {names.get_name(k, try_suffixes=(".weight", ".bias")): (k, v) for k, v in picked.items()}


def check_tensors(path: Path, weights: dict, config: dict, vision: bool, quant: str) -> dict[str, int]:
    """Every tensor equals its source: f32 exactly, f16 to f16 rounding, q8_0 within half a step of its block's
    scale (plus the scale's own f16 rounding). Returns how many tensors of each type the file holds."""
    import gguf

    Q = gguf.GGMLQuantizationType
    _, tensors = read(path)
    expected = expected_pairs(weights, config, vision)
    assert sorted(tensors) == sorted(expected)
    text = config["text_config"]
    counts: dict[str, int] = {}
    for name, t in tensors.items():
        hf_name, src = expected[name]
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        data = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type == Q.Q8_0 else np.asarray(t.data)
        data = data.reshape(src.shape).astype(np.float32)
        if not vision and hf_name.endswith("q_proj.weight"):
            data = hf_rows(data, text["num_attention_heads"])
        elif not vision and hf_name.endswith("k_proj.weight"):
            data = hf_rows(data, text["num_key_value_heads"])
        if src.ndim == 1 or ".embeddings." in hf_name:
            assert t.tensor_type == Q.F32, name
        if t.tensor_type == Q.F32:
            np.testing.assert_array_equal(data, src, err_msg=name)
        elif t.tensor_type == Q.F16:
            assert quant == "f16" or src.shape[-1] % 32, name
            np.testing.assert_array_equal(data, src.astype(np.float16).astype(np.float32), err_msg=name)
        else:
            assert quant == "q8_0" and t.tensor_type == Q.Q8_0, name
            blocks = src.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127
            err = np.abs(data.reshape(-1, 32) - blocks)
            assert (err <= step * (0.5 + 127 * 2.0 ** -11) + 1e-12).all(), name
    return counts


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    from smolvlm_cli.deploy.gguf import write_gguf

    src = tmp_path_factory.mktemp("gguf-src") / "model"
    shutil.copytree(tiny_model_dir, src)
    out = tmp_path_factory.mktemp("gguf-out")
    notes: list[str] = []
    write_gguf(src, out, notes.append)
    return src, out, notes


def test_tiny_files_and_model_card(tiny_gguf):
    _, out, notes = tiny_gguf
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert notes == ["gguf: wrote model-f16.gguf and mmproj-model-f16.gguf",
                     "gguf: wrote model-q8_0.gguf and mmproj-model-q8_0.gguf"]
    card = (out / "README.md").read_text()
    assert "llama-mtmd-cli -m model-q8_0.gguf --mmproj mmproj-model-q8_0.gguf" in card
    assert "## What was verified" in card


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_tiny_tensors_equal_source(tiny_gguf, quant):
    src, out, _ = tiny_gguf
    config = json.loads((src / "config.json").read_text())
    weights = source_weights(src)
    text = check_tensors(out / f"model-{quant}.gguf", weights, config, vision=False, quant=quant)
    vision = check_tensors(out / f"mmproj-model-{quant}.gguf", weights, config, vision=True, quant=quant)
    n_layers, v_layers = config["text_config"]["num_hidden_layers"], config["vision_config"]["num_hidden_layers"]
    # text: 2 norms per layer + the final norm in f32; 7 matrices per layer + embeddings + output in the file's type
    assert text == {"F32": 2 * n_layers + 1, quant.upper(): 7 * n_layers + 2}
    # vision: patch + position embeddings, their bias, 4 biases + 2 norms x2 per layer, post norm x2 in f32
    assert vision == {"F32": 3 + 10 * v_layers + 2, quant.upper(): 6 * v_layers + 1}


def test_tiny_metadata_tokenizer_and_template(tiny_gguf):
    import gguf
    from transformers import AutoProcessor

    src, out, _ = tiny_gguf
    config = json.loads((src / "config.json").read_text())
    proc = AutoProcessor.from_pretrained(src)
    tok = proc.tokenizer
    fields, _ = read(out / "model-q8_0.gguf")
    value = {k: v for k, (_, v) in fields.items()}
    vocab = config["text_config"]["vocab_size"]
    assert value["general.architecture"] == "llama" and value["general.type"] == "model"
    assert value["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert value["llama.block_count"] == config["text_config"]["num_hidden_layers"]
    assert value["llama.attention.head_count_kv"] == config["text_config"]["num_key_value_heads"]
    assert value["tokenizer.ggml.model"] == "gpt2"
    assert value["tokenizer.ggml.pre"] == "gpt2"  # this vocabulary merges digits ('Ġ1', '00'): GPT-2's regex alone
    tokens = value["tokenizer.ggml.tokens"]
    assert len(tokens) == vocab == len(value["tokenizer.ggml.token_type"])
    assert tokens[:len(tok)] == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert tokens[len(tok):] == [f"[PAD{i}]" for i in range(len(tok), vocab)]
    spec = json.loads((src / "tokenizer.json").read_text())
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert value["tokenizer.ggml.merges"] == merges
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    assert value["tokenizer.ggml.eos_token_id"] == eou
    assert value["tokenizer.ggml.bos_token_id"] == tok.convert_tokens_to_ids("<|im_start|>")
    assert value["tokenizer.ggml.token_type"][eou] == gguf.TokenType.CONTROL
    assert value["tokenizer.chat_template"] == proc.chat_template
    mm, _ = read(out / "mmproj-model-f16.gguf")
    mm = {k: v for k, (_, v) in mm.items()}
    assert mm["general.type"] == "mmproj" and mm["clip.projector_type"] == "idefics3"
    assert mm["clip.vision.projector.scale_factor"] == config["scale_factor"]
    assert mm["clip.vision.projection_dim"] == config["text_config"]["hidden_size"]


def test_pre_tokenizer_names():
    from smolvlm_cli.deploy.gguf_vocab import pre_tokenizer_name
    from smolvlm_cli.errors import UserError

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    digits = {"type": "Digits", "individual_digits": True}
    plain_vocab = {"model": {"vocab": {"a": 0, "Ġa": 1, "3": 2, "Â²": 3}}}  # '²' alone is one number character
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, byte_level]},
                               **plain_vocab}) == "smollm"
    assert pre_tokenizer_name({"pre_tokenizer": byte_level, **plain_vocab}) == "smollm"
    assert pre_tokenizer_name({"pre_tokenizer": byte_level, "model": {"vocab": {"Ġ3": 0}}}) == "gpt2"
    with pytest.raises(UserError, match="Metaspace"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}, **plain_vocab})


def test_text_model_that_is_not_llama(tiny_model_dir, tmp_path):
    from smolvlm_cli.deploy.gguf import write_gguf
    from smolvlm_cli.errors import UserError

    src = tmp_path / "m"
    src.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["text_config"]["model_type"] = "qwen2"
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as e:
        write_gguf(src, out, None)
    line = e.value.one_line()
    assert line == ("the text model is 'qwen2', not Llama-based - export --format gguf supports SmolVLM models with "
                    "a Llama (SmolLM2) text model; use --format hf")
    assert list(out.iterdir()) == []


# --- 256M shapes with the real SmolLM2 tokenizer: llama.cpp's converter and llama-mtmd-cli ---------------------------

@pytest.fixture(scope="module")
def m256(gguf_path, tmp_path_factory):
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.deploy.gguf import write_gguf
    from smolvlm_cli.recipe import load_recipe

    base = tmp_path_factory.mktemp("gguf-256m")
    recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml", ["model.dtype=float32"])
    init_model(recipe, base / "model", vision_ref="random:siglip-b16-512", text_ref=str(gguf_path))
    (base / "out").mkdir()
    write_gguf(base / "model", base / "out", None)
    return base / "model", base / "out"


def convert(src: Path, out: Path, quant: str, mmproj: bool) -> Path:
    args = [sys.executable, str(Path(LLAMA_CPP) / "convert_hf_to_gguf.py"), str(src), "--outfile", str(out),
            "--outtype", quant] + (["--mmproj"] if mmproj else [])
    res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def assert_same_as_converter(ours: Path, theirs: Path) -> None:
    """Same metadata keys, value types and values (but the name, taken from the folder), same tensors byte for byte."""
    our_fields, our_tensors = read(ours)
    their_fields, their_tensors = read(theirs)
    assert sorted(our_fields) == sorted(their_fields)
    for key, (types, value) in their_fields.items():
        assert our_fields[key][0] == types, key
        if key != "general.name":
            assert our_fields[key][1] == value, key
    assert sorted(our_tensors) == sorted(their_tensors)
    for name, t in their_tensors.items():
        o = our_tensors[name]
        assert (o.tensor_type, list(o.shape)) == (t.tensor_type, list(t.shape)), name
        assert np.array_equal(np.asarray(o.data), np.asarray(t.data)), name


@pytest.mark.slow
@pytest.mark.skipif(not LLAMA_CPP, reason="set SMOLVLM_LLAMA_CPP to a llama.cpp source folder")
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_256m_matches_llama_cpp_converter(m256, tmp_path, quant):
    src, out = m256
    assert_same_as_converter(out / f"model-{quant}.gguf", convert(src, tmp_path / "t.gguf", quant, mmproj=False))
    assert_same_as_converter(out / f"mmproj-model-{quant}.gguf", convert(src, tmp_path / "v.gguf", quant, True))


@pytest.mark.skipif(not LLAMA_CPP, reason="set SMOLVLM_LLAMA_CPP to a llama.cpp source folder")
def test_tiny_mmproj_matches_llama_cpp_converter(tiny_gguf, tmp_path):
    """The tiny tokenizer is not in llama.cpp's pre-tokenizer table (its converter refuses the text model), but the
    projector needs no tokenizer."""
    src, out, _ = tiny_gguf
    assert_same_as_converter(out / "mmproj-model-q8_0.gguf", convert(src, tmp_path / "v.gguf", "q8_0", True))


@pytest.mark.slow
@pytest.mark.skipif(not MTMD_CLI, reason="set SMOLVLM_LLAMA_MTMD_CLI to a llama-mtmd-cli binary")
def test_256m_llama_mtmd_cli_answers_as_transformers(m256, tmp_path):
    """Greedy answer to one image prompt. The image is one flat colour, so llama.cpp's and transformers' resizing
    give the same pixels and any difference comes from the exported model."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    src, out = m256
    image = tmp_path / "flat.png"
    Image.new("RGB", (512, 512), (200, 40, 40)).save(image)
    question, n_new = "What colour is this picture?", 8
    proc = AutoProcessor.from_pretrained(src)
    prompt = proc.apply_chat_template([{"role": "user", "content": "<image>" + question}],
                                      add_generation_prompt=True)
    inputs = proc(text=prompt, images=[Image.open(image)], return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(src).eval()
    with torch.no_grad():
        ids = model.generate(**inputs, do_sample=False, max_new_tokens=n_new)
    theirs = proc.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    res = subprocess.run([MTMD_CLI, "-m", str(out / "model-f16.gguf"), "--mmproj", str(out / "mmproj-model-f16.gguf"),
                          "--image", str(image), "-p", "<__media__>" + question, "--temp", "0", "-n", str(n_new),
                          "-t", "2", "--jinja"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == theirs.strip(), (res.stdout, theirs)
