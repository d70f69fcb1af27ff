# `smolvlm export --format onnx`: the three-graph split of the released SmolVLM onnx/ folders (vision_encoder,
# embed_tokens, decoder_model_merged with a KV cache), fp32 plus int8 and q4 variants, with the processor files.
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import UserError

GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
SKIPPED_FILES = ("README.md", "model.safetensors.index.json")
OPSET = 21  # the first with int4 types, which the q4 variant (MatMulNBits) needs


def _torch_modules(model):
    """nn.Modules whose forward is each graph's signature (names mirror HuggingFaceTB/SmolVLM2-*/onnx)."""
    import torch
    from transformers import DynamicCache

    class VisionEncoder(torch.nn.Module):
        """pixel_values [batch, images, 3, H, W] + pixel_attention_mask [batch, images, H, W] -> image_features
        [batch*images, image_seq_len, text hidden]: every tile, padding tiles included (the caller drops them)."""

        def __init__(self):
            super().__init__()
            self.smol = model.model

        def forward(self, pixel_values, pixel_attention_mask):
            batch, images = pixel_values.shape[:2]
            pixels = pixel_values.reshape(batch * images, *pixel_values.shape[2:])
            mask = pixel_attention_mask.reshape(batch * images, *pixel_attention_mask.shape[2:])
            patch = self.smol.config.vision_config.patch_size
            patch_mask = mask.unfold(1, patch, patch).unfold(2, patch, patch).sum(dim=(-1, -2)) > 0
            hidden = self.smol.vision_model(pixel_values=pixels, patch_attention_mask=patch_mask).last_hidden_state
            return self.smol.connector(hidden)

    class EmbedTokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = model.get_input_embeddings()

        def forward(self, input_ids):
            return self.embed(input_ids)

    class Decoder(torch.nn.Module):
        """One graph for the prompt and each new token: an empty past (length 0) on the first step."""

        def __init__(self):
            super().__init__()
            self.text, self.head, self.config = model.model.text_model, model.lm_head, model.config.text_config

        def forward(self, inputs_embeds, attention_mask, position_ids, past):
            cache = DynamicCache(config=self.config)
            for layer in range(len(past) // 2):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            hidden = self.text(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               cache=cache, use_cache=True).last_hidden_state
            present = [t for layer in cache.layers for t in (layer.keys, layer.values)]
            return (self.head(hidden), *present)

    return VisionEncoder().eval(), EmbedTokens().eval(), Decoder().eval()


def text_shapes(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of the text model's KV cache."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_hidden_layers, text.num_key_value_heads, head_dim


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def _export(module, args, path: Path, inputs: list[str], outputs: list[str], dynamic) -> None:
    import contextlib
    import io
    import warnings

    import torch

    # the exporter prints its progress and warns about every dynamic axis name it renames
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_shapes=dynamic,
                          dynamo=True, external_data=False, verbose=False, opset_version=OPSET)


def export_graphs(model, onnx_dir: Path) -> None:
    """Write the three fp32 graphs. Sample shapes use batch 2 and a non-empty past so that no dimension is
    specialised to 0 or 1 by torch.export."""
    import torch
    from torch.export import Dim

    vision, embed, decoder = _torch_modules(model)
    size = model.config.vision_config.image_size
    batch, images = Dim("batch_size"), Dim("num_images")
    pixels = torch.randn(2, 2, 3, size, size)
    mask = torch.ones(2, 2, size, size, dtype=torch.bool)
    mask[:, 1, :, size // 2:] = False  # a padded tile, so the patch-position code is traced on its general path
    _export(vision, (pixels, mask), onnx_dir / "vision_encoder.onnx", ["pixel_values", "pixel_attention_mask"],
            ["image_features"], ({0: batch, 1: images}, {0: batch, 1: images}))

    seq = Dim("sequence_length")
    _export(embed, (torch.zeros(2, 3, dtype=torch.long),), onnx_dir / "embed_tokens.onnx", ["input_ids"],
            ["inputs_embeds"], ({0: batch, 1: seq},))

    layers, heads, head_dim = text_shapes(model.config)
    past_len, total = Dim("past_sequence_length", min=0), Dim("total_sequence_length")
    past = tuple(torch.randn(2, heads, 5, head_dim) for _ in range(2 * layers))
    hidden = model.config.text_config.hidden_size
    args = (torch.randn(2, 3, hidden), torch.ones(2, 8, dtype=torch.long), torch.arange(5, 8).repeat(2, 1), past)
    names = past_names(layers)
    _export(decoder, args, onnx_dir / "decoder_model_merged.onnx",
            ["inputs_embeds", "attention_mask", "position_ids", *names],
            ["logits", *[n.replace("past_key_values", "present") for n in names]],
            ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
             tuple({0: batch, 2: past_len} for _ in past)))


def copy_processor_files(hf_dir: Path, out: Path) -> list[str]:
    """Config, generation config, tokenizer, processor and chat template: everything but the weights and card."""
    copied = []
    for path in sorted(Path(hf_dir).iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_FILES) and path.name not in SKIPPED_FILES:
            shutil.copy2(path, out / path.name)
            copied.append(path.name)
    return copied


def load_fp32(hf_dir: Path):
    import torch
    from transformers import AutoModelForImageTextToText

    try:  # eager attention: plain MatMul/Softmax graphs that every runtime (and the quantisers) understand
        return AutoModelForImageTextToText.from_pretrained(hf_dir, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the merged model from {hf_dir}: {str(e).splitlines()[0]}",
                        "export needs a SmolVLM folder that transformers loads") from None


def require_onnx_tools() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format onnx needs {', '.join(missing)}, which is not installed",
                        "pip install 'smolvlm-cli[onnx]'")


def write_onnx(hf_dir: Path, out: Path, say=None) -> None:
    """Fill `out` with config/processor files, onnx/{graph}.onnx in fp32, int8 and q4, and a model card whose
    figures (fp32 vs transformers, quantised vs fp32) are measured here on this model."""
    import torch

    from .onnx_card import model_card
    from .onnx_check import verify
    from .onnx_quant import quantize_all

    require_onnx_tools()
    hf_dir, out = Path(hf_dir), Path(out)
    started = time.perf_counter()
    model = load_fp32(hf_dir)
    onnx_dir = out / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        export_graphs(model, onnx_dir)
    copy_processor_files(hf_dir, out)
    variants = quantize_all(onnx_dir, GRAPHS)
    report = verify(model, out, variants)
    seconds = time.perf_counter() - started
    (out / "README.md").write_text(model_card(out, report, seconds))
    if say is not None:
        say(f"onnx: {len(GRAPHS)} graphs x {1 + len(variants)} precisions in {seconds:.0f} s; fp32 first-step logits "
            f"within {report['fp32']['max_logit_gap']:.1e} of transformers")
