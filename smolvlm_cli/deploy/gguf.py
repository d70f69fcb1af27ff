# `smolvlm export --format gguf`: the text model (llama architecture, SmolLM2's BPE vocabulary) and the vision
# projector (mmproj, llama.cpp's idefics3 type) as GGUF files, in f16 and q8_0, named and laid out as llama.cpp expects.
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserError
from .gguf_vocab import add_tokenizer

# (file suffix, llama.cpp file type name, tensor type name for the weight matrices)
VARIANTS = (("f16", "MOSTLY_F16", "F16"), ("q8_0", "MOSTLY_Q8_0", "Q8_0"))
TEXT_PREFIXES = ("model.text_model.", "lm_head.")
VISION_PREFIXES = ("model.vision_model.", "model.connector.")


def read_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise UserError(f"'{path}' not found", "export --format gguf needs a SmolVLM Hugging Face folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    if text.get("model_type") != "llama":
        raise UserError(f"the text model is '{text.get('model_type')}', not Llama-based",
                        "export --format gguf supports SmolVLM models with a Llama (SmolLM2) text model; "
                        "use --format hf")
    if vision.get("model_type") not in ("smolvlm_vision", "idefics3_vision"):
        raise UserError(f"the vision model is '{vision.get('model_type')}', not SmolVLM's SigLIP",
                        "export --format gguf supports SmolVLM / Idefics3 models; use --format hf")
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"RoPE scaling '{rope.get('rope_type', rope.get('type'))}' is not supported by this export",
                        "export --format hf, or train without RoPE scaling")
    return config


def model_name(hf_dir: Path) -> str:
    """The model card's title (the recipe name), else the folder's name."""
    card = hf_dir / "README.md"
    if card.is_file():
        for line in card.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return hf_dir.name


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def load_tensors(hf_dir: Path, prefixes: tuple[str, ...]) -> dict:
    """float32 numpy arrays of the tensors whose names start with one of prefixes, from every safetensors file."""
    from safetensors import safe_open

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"no .safetensors weights in '{hf_dir}'", "export the model with transformers first")
    out = {}
    for f in files:
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                if key.startswith(prefixes):
                    out[key] = st.get_tensor(key).float().numpy()
    return out


def unpermute_rope(w, n_head: int):
    """HF Llama keeps each head's rotary halves apart ([x0..x31, y0..y31]); ggml rotates neighbouring pairs
    ([x0, y0, x1, y1, ...]): interleave the two halves of every head."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(gguf_name: str, hf_name: str, data, wanted: str, vision: bool):
    """llama.cpp's choice: vectors and norms stay f32, as do the vision embeddings (idefics3); matrices take the
    file's type, f16 where a row does not split into whole q8_0 blocks."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if data.ndim <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return Q.F32
    if vision and ".embeddings." in hf_name:
        return Q.F32
    qtype = Q[wanted]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return Q.F16 if data.shape[-1] % block else qtype


def encode(data, qtype):
    import gguf
    import numpy as np

    Q = gguf.GGMLQuantizationType
    if qtype == Q.F32:
        return data.astype(np.float32)
    if qtype == Q.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)


def text_tensors(weights: dict, text: dict):
    """(gguf name, hf name, float32 array) of the language model in llama.cpp's llama layout."""
    import gguf

    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, text["num_hidden_layers"])
    n_head, n_kv = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])
    for hf_name, data in weights.items():
        key = hf_name.replace("model.text_model.", "model.", 1)
        new = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UserError(f"tensor '{hf_name}' has no place in llama.cpp's llama model",
                            "export --format gguf supports plain Llama text models; use --format hf")
        if key.endswith(("q_proj.weight", "q_proj.bias")):
            data = unpermute_rope(data, n_head)
        elif key.endswith(("k_proj.weight", "k_proj.bias")):
            data = unpermute_rope(data, n_kv)
        yield new, hf_name, data


def vision_tensors(weights: dict, vision: dict):
    import gguf

    names = gguf.TensorNameMap(gguf.MODEL_ARCH.MMPROJ, vision["num_hidden_layers"])
    for hf_name, data in weights.items():
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UserError(f"tensor '{hf_name}' has no place in llama.cpp's idefics3 projector",
                            "export --format gguf supports SmolVLM's SigLIP + pixel-shuffle connector; use --format hf")
        yield new, hf_name, data


def text_metadata(w, text: dict, file_type) -> None:
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    rope = text.get("rope_parameters") or {}
    w.add_block_count(text["num_hidden_layers"])
    w.add_context_length(text["max_position_embeddings"])
    w.add_embedding_length(text["hidden_size"])
    w.add_feed_forward_length(text["intermediate_size"])
    w.add_head_count(text["num_attention_heads"])
    w.add_head_count_kv(text.get("num_key_value_heads", text["num_attention_heads"]))
    w.add_rope_freq_base(rope.get("rope_theta", text.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(text["rms_norm_eps"])
    if text.get("head_dim") is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(file_type)
    w.add_vocab_size(text["vocab_size"])
    w.add_rope_dimension_count(head_dim)


def vision_metadata(w, config: dict, hf_dir: Path, file_type) -> None:
    import gguf

    vision = config["vision_config"]
    processor = {}
    if (hf_dir / "processor_config.json").is_file():
        processor = json.loads((hf_dir / "processor_config.json").read_text()).get("image_processor", {})
    if (hf_dir / "preprocessor_config.json").is_file():
        processor = {**processor, **json.loads((hf_dir / "preprocessor_config.json").read_text())}
    w.add_file_type(file_type)
    w.add_clip_has_vision_encoder(True)
    w.add_vision_projection_dim(config["text_config"]["hidden_size"])
    w.add_vision_image_size(vision["image_size"])
    w.add_vision_patch_size(vision["patch_size"])
    w.add_vision_embedding_length(vision.get("hidden_size", 1152))
    w.add_vision_feed_forward_length(vision.get("intermediate_size", 3072))
    w.add_vision_block_count(vision["num_hidden_layers"])
    w.add_vision_head_count(vision.get("num_attention_heads", 16))
    w.add_vision_image_mean(processor.get("image_mean", [0.5, 0.5, 0.5]))
    w.add_vision_image_std(processor.get("image_std", [0.5, 0.5, 0.5]))
    w.add_clip_projector_type(gguf.VisionProjectorType.IDEFICS3)
    w.add_vision_attention_layernorm_eps(vision.get("layer_norm_eps", 1e-5))
    w.add_vision_projector_scale_factor(config.get("scale_factor", 2))
    w.add_vision_use_gelu(True)
    w.add_vision_preproc_image_size((processor.get("size") or {}).get("longest_edge", vision["image_size"]))


def write_file(path: Path, arch: str, gguf_type: str, tensors, wanted: str, name: str, hf_dir: Path,
               parameters) -> None:
    """One GGUF file: tensors first (the parameter count names the size label), then the general metadata,
    then the model's own (parameters(writer))."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    vision = gguf_type == gguf.GGUFType.MMPROJ
    for new, hf_name, data in tensors:
        qtype = tensor_type(new, hf_name, data, wanted, vision)
        w.add_tensor(new, encode(data, qtype), raw_dtype=qtype)
    meta = gguf.Metadata.load(None, hf_dir, name, w.get_total_parameter_count()[0])
    if meta.size_label is None:
        meta.size_label = gguf.size_label(*w.get_total_parameter_count())
    w.add_type(gguf_type)
    meta.set_gguf_meta_model(w)
    parameters(w)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(hf_dir: Path, out: Path, say=None) -> None:
    """OUT/<name>-f16.gguf, OUT/<name>-q8_0.gguf (text) and OUT/mmproj-<name>-f16.gguf, -q8_0.gguf (vision)."""
    try:
        import gguf
    except ImportError:
        raise UserError("export --format gguf needs the gguf package", "pip install 'smolvlm-cli[gguf]'") from None

    hf_dir, out = Path(hf_dir), Path(out)
    config = read_config(hf_dir)
    text = {**config, **config["text_config"]}
    name = model_name(hf_dir)
    base = slug(name)
    text_weights = load_tensors(hf_dir, TEXT_PREFIXES)
    vision_weights = load_tensors(hf_dir, VISION_PREFIXES)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
    clip = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]
    for suffix, file_type, wanted in VARIANTS:
        ftype = gguf.LlamaFileType[file_type]

        def text_params(w, ftype=ftype):
            text_metadata(w, text, ftype)
            add_tokenizer(w, hf_dir, text["vocab_size"])

        write_file(out / f"{base}-{suffix}.gguf", arch, gguf.GGUFType.MODEL, text_tensors(text_weights, text),
                   wanted, name, hf_dir, text_params)
        write_file(out / f"mmproj-{base}-{suffix}.gguf", clip, gguf.GGUFType.MMPROJ,
                   vision_tensors(vision_weights, config["vision_config"]), wanted, name, hf_dir,
                   lambda w, ftype=ftype: vision_metadata(w, config, hf_dir, ftype))
        if say:
            say(f"gguf: wrote {base}-{suffix}.gguf and mmproj-{base}-{suffix}.gguf")
    (out / "README.md").write_text(model_card(name, base), encoding="utf-8")


def model_card(name: str, base: str) -> str:
    from importlib.metadata import version

    return "\n".join([
        f"# {name} (GGUF)", "",
        "The language model (llama architecture, SmolLM2 tokenizer and chat template) and the vision projector "
        "(`mmproj`, llama.cpp's `idefics3` projector: SigLIP + the pixel-shuffle connector), exported by "
        f"smolvlm-cli with the `gguf` package {version('gguf')}. Adapters, if any, are merged.", "",
        "| file | what | weights |", "|---|---|---|",
        f"| `{base}-f16.gguf` | language model | f16 (norms f32) |",
        f"| `{base}-q8_0.gguf` | language model | q8_0 (norms f32) |",
        f"| `mmproj-{base}-f16.gguf` | vision encoder + connector | f16 (embeddings, norms, biases f32) |",
        f"| `mmproj-{base}-q8_0.gguf` | vision encoder + connector | q8_0 (embeddings, norms, biases f32) |", "",
        "## Run with llama.cpp", "", "```bash",
        f"llama-mtmd-cli -m {base}-q8_0.gguf --mmproj mmproj-{base}-q8_0.gguf \\",
        '    --image photo.jpg -p "Describe this image." --temp 0',
        f"llama-server -m {base}-q8_0.gguf --mmproj mmproj-{base}-q8_0.gguf   # OpenAI-compatible API",
        "```", "",
        "llama.cpp takes images, not videos: pass sampled frames as several `--image` arguments.", "",
        "## What was verified", "",
        "- Read back with `gguf.GGUFReader`, every tensor equals the source weights (f16: to f16 rounding; q8_0: "
        "within q8_0's quantization error), and the tokenizer, merges, special ids and chat template are present.",
        "- The tensor names, shapes, types and metadata keys are the ones llama.cpp's own `convert_hf_to_gguf.py` "
        "writes for SmolVLM (text model and `--mmproj`), checked by smolvlm-cli's test suite on SmolVLM2-256M shapes.",
        "- Not checked on every export: llama-mtmd-cli's answers (smolvlm-cli's test suite compares its greedy answer "
        "to an image prompt with transformers' when given a llama-mtmd-cli binary) and ollama.",
        "- Not included: k-quants (q4_K ...), which the `gguf` package cannot write; make them with llama.cpp's "
        f"`llama-quantize {base}-f16.gguf {base}-q4_k_m.gguf Q4_K_M`.",
        ""])
