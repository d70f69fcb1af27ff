# `smolvlm generate --model ONNX_DIR`: greedy decoding with onnxruntime over the three exported graphs. The object
# stands in for the transformers model in generate.generate_answer (device, dtype, generate(**inputs, streamer)).
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError

GRAPH_NAMES = {"vision": "vision_encoder", "embed": "embed_tokens", "decoder": "decoder_model_merged"}


def is_onnx_dir(path: str | os.PathLike) -> bool:
    """A folder `smolvlm export --format onnx` wrote (or a released SmolVLM repository with its onnx/ folder)."""
    return (Path(path) / "onnx" / "decoder_model_merged.onnx").is_file()


def _eos_ids(folder: Path) -> set[int]:
    gen = folder / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.is_file() else None
    return set([eos] if isinstance(eos, int) else (eos or []))


class OnnxSmolVLM:
    """The exported graphs of one precision ("" = fp32, "int8", "q4"), run greedily on the CPU."""

    device = "cpu"

    def __init__(self, folder: str | os.PathLike, variant: str = ""):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"{folder} is an ONNX export and onnxruntime is not installed",
                            "pip install 'smolvlm-cli[onnx]'") from None
        self.folder = Path(folder)
        suffix = f"_{variant}" if variant else ""
        self.sessions = {}
        for key, graph in GRAPH_NAMES.items():
            path = self.folder / "onnx" / f"{graph}{suffix}.onnx"
            if not path.is_file():
                raise UserError(f"{path} not found", "re-run smolvlm export --format onnx into this folder")
            self.sessions[key] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        config = json.loads((self.folder / "config.json").read_text())
        self.image_token_id = config["image_token_id"]
        self.eos_ids = _eos_ids(self.folder)
        self.past = [(i.name, i.shape) for i in self.sessions["decoder"].get_inputs() if i.name.startswith("past_")]

    @property
    def dtype(self):
        import torch

        return torch.float32  # what generate_answer casts pixel_values to: the fp32 graphs' input type

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        return self.sessions["embed"].run(None, {"input_ids": input_ids.astype(np.int64)})[0]

    def image_features(self, pixel_values: np.ndarray, pixel_attention_mask: np.ndarray | None) -> np.ndarray:
        """Features of the real tiles, in order: all-zero padding tiles are dropped, as transformers drops them."""
        tiles = pixel_values.reshape(-1, *pixel_values.shape[2:]).astype(np.float32)
        if pixel_attention_mask is None:
            mask = np.ones((tiles.shape[0], *tiles.shape[2:]), dtype=bool)
        else:
            mask = pixel_attention_mask.reshape(-1, *pixel_attention_mask.shape[2:]).astype(bool)
        real = (tiles != 0).any(axis=(1, 2, 3))
        real[0] |= not real.any()
        feeds = {"pixel_values": tiles[real][None], "pixel_attention_mask": mask[real][None]}
        return self.sessions["vision"].run(None, feeds)[0]

    def prompt_embeds(self, input_ids, pixel_values=None, pixel_attention_mask=None) -> np.ndarray:
        """Token embeddings with the image features written over the <image> slots (the model's masked_scatter)."""
        embeds = self.embed(input_ids)
        if pixel_values is not None:
            features = self.image_features(pixel_values, pixel_attention_mask)
            slots = input_ids == self.image_token_id
            features = features.reshape(-1, embeds.shape[-1])
            if int(slots.sum()) != features.shape[0]:
                raise ValueError(f"{int(slots.sum())} <image> tokens but {features.shape[0]} image features")
            embeds[slots] = features
        return embeds

    def decode(self, embeds: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray] | None = None):
        """One decoder call: (logits [batch, new, vocab], present key/values). No past = the first step."""
        batch, new = embeds.shape[:2]
        if past is None:
            past = [np.zeros((batch, shape[1], 0, shape[3]), np.float32) for _, shape in self.past]
        total = attention_mask.shape[1]
        positions = np.cumsum(attention_mask, axis=1) - 1
        positions = np.where(attention_mask == 0, 1, positions)[:, total - new:]
        feeds = {"inputs_embeds": embeds, "attention_mask": attention_mask.astype(np.int64),
                 "position_ids": positions.astype(np.int64), **{n: p for (n, _), p in zip(self.past, past)}}
        logits, *present = self.sessions["decoder"].run(None, feeds)
        return logits, present

    def greedy(self, input_ids, attention_mask=None, pixel_values=None, pixel_attention_mask=None,
               max_new_tokens: int = 256, streamer=None) -> list[int]:
        """The new tokens of the greedy answer (the end-of-answer token included, as transformers returns it)."""
        input_ids = np.asarray(input_ids)
        if input_ids.shape[0] != 1:
            raise ValueError("the ONNX runner answers one prompt at a time")
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
        embeds = self.prompt_embeds(input_ids, pixel_values, pixel_attention_mask)
        if streamer is not None:
            streamer.put(input_ids)
        tokens: list[int] = []
        past = None
        for _ in range(max_new_tokens):
            logits, past = self.decode(embeds, mask, past)
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            if streamer is not None:
                streamer.put(np.array([token]))
            if token in self.eos_ids:
                break
            embeds = self.embed(np.array([[token]]))
            mask = np.concatenate([mask, np.ones((1, 1), mask.dtype)], axis=1)
        if streamer is not None:
            streamer.end()
        return tokens

    def generate(self, input_ids, attention_mask=None, pixel_values=None, pixel_attention_mask=None,
                 max_new_tokens: int = 256, streamer=None, **_ignored):
        """transformers' `generate` signature for greedy decoding (do_sample and pad_token_id are not used)."""
        def arr(x):
            return None if x is None else x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

        ids = arr(input_ids)
        new = self.greedy(ids, arr(attention_mask), arr(pixel_values), arr(pixel_attention_mask), max_new_tokens,
                          streamer)
        return np.concatenate([ids, np.array([new], ids.dtype)], axis=1)


def load_onnx(folder: str | os.PathLike, variant: str = ""):
    """(OnnxSmolVLM, processor) for an exported ONNX folder; the processor as load_model prepares it."""
    from transformers import AutoProcessor

    from ..data.images import honour_upscale

    path = Path(folder)
    try:
        processor = honour_upscale(AutoProcessor.from_pretrained(path))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the processor from {path}: {str(e).splitlines()[0]}",
                        "the folder needs the processor files smolvlm export --format onnx writes") from None
    return OnnxSmolVLM(path, variant), processor
