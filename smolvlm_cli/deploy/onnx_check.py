# What `smolvlm export --format onnx` measures on the model it exported, for its model card: fp32 graphs against
# transformers (first-step logits, greedy tokens) and each quantised variant against the fp32 graphs.
from __future__ import annotations

from pathlib import Path

import numpy as np

CHECK_PROMPT = "Describe this image."
CHECK_TOKENS = 16


def check_image():
    """A fixed picture (red square on a blue-to-green gradient) so the figures are reproducible."""
    from PIL import Image

    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    pixels = np.zeros((80, 96, 3), np.uint8)
    pixels[..., 1], pixels[..., 2] = ramp[None, :], 255 - ramp[None, :]
    pixels[20:50, 30:60] = (220, 30, 30)
    return Image.fromarray(pixels)


def check_inputs(processor, prompt: str = CHECK_PROMPT) -> dict:
    from ..generate import build_messages

    text = processor.apply_chat_template(build_messages(prompt, 1), add_generation_prompt=True)
    # one tile (no splitting): the check stays seconds long at the 256M shapes and still runs every graph
    return dict(processor(text=[text], images=[[check_image()]], do_image_splitting=False, return_tensors="np"))


def teacher_forced(runner, inputs: dict, continuation: list[int]) -> np.ndarray:
    """Logits of every position of prompt + continuation in one decoder call (the first-step graph path)."""
    ids = np.concatenate([inputs["input_ids"], np.array([continuation], np.int64)], axis=1)
    embeds = runner.prompt_embeds(ids, inputs.get("pixel_values"), inputs.get("pixel_attention_mask"))
    logits, _ = runner.decode(embeds, np.ones_like(ids))
    return logits[0]


def transformers_reference(model, inputs: dict, n_tokens: int) -> tuple[np.ndarray, list[int]]:
    """(first-step logits of the prompt, greedy new tokens) from the transformers model itself."""
    import torch

    feeds = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    with torch.inference_mode():
        logits = model(**feeds).logits[0].numpy()
        out = model.generate(**feeds, max_new_tokens=n_tokens, do_sample=False)
    return logits, out[0, feeds["input_ids"].shape[1]:].tolist()


def agreement(reference: list[int], tokens: list[int]) -> int:
    """How many greedy tokens agree before the first difference."""
    same = 0
    for a, b in zip(reference, tokens):
        if a != b:
            break
        same += 1
    return same


def verify(model, folder: Path, variants: list[str], n_tokens: int = CHECK_TOKENS) -> dict:
    """Per precision: max logit gap and identical greedy tokens against the reference (transformers for fp32,
    the fp32 graphs for the quantised ones, teacher-forced on the fp32 answer so one early flip is not counted
    n times)."""
    from .onnx_generate import load_onnx

    fp32, processor = load_onnx(folder)
    inputs = check_inputs(processor)
    n_prompt = inputs["input_ids"].shape[1]
    ref_logits, ref_tokens = transformers_reference(model, inputs, n_tokens)
    tokens = fp32.greedy(inputs["input_ids"], inputs["attention_mask"], inputs.get("pixel_values"),
                         inputs.get("pixel_attention_mask"), max_new_tokens=n_tokens)
    first = fp32.prompt_embeds(inputs["input_ids"], inputs.get("pixel_values"), inputs.get("pixel_attention_mask"))
    first_logits = fp32.decode(first, inputs["attention_mask"])[0][0]
    report = {"prompt": CHECK_PROMPT, "prompt_tokens": n_prompt, "fp32": {
        "max_logit_gap": float(np.abs(first_logits - ref_logits).max()),
        "same_tokens": agreement(ref_tokens, tokens), "tokens": len(ref_tokens)}}
    base = teacher_forced(fp32, inputs, tokens)[n_prompt - 1:-1]  # position i predicts tokens[i]
    for variant in variants:
        quant = teacher_forced(load_onnx(folder, variant)[0], inputs, tokens)[n_prompt - 1:-1]
        report[variant] = {"max_logit_gap": float(np.abs(quant - base).max()),
                           "same_tokens": int((quant.argmax(-1) == base.argmax(-1)).sum()), "tokens": len(base)}
    return report
