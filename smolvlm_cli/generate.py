# `smolvlm generate`: answer one prompt about images or a video with a SmolVLM folder, streaming the answer.
# Media are read before the weights load (a bad path fails fast); video frames come from the training sampler,
# with the processor's settings (data.video.video_sampling) and the frame cache when it holds the video.
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Sequence

from .errors import MediaError, UserError


def build_messages(prompt: str, n_images: int = 0, video: bool = False) -> list[dict]:
    """The one user turn: media parts first (as the training data puts them), then the prompt text."""
    content = [{"type": "image"} for _ in range(n_images)]
    if video:
        content.append({"type": "video"})
    return [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}]


def load_images(paths: Sequence[str | os.PathLike]) -> list:
    """RGB PIL images; MediaError naming the first file that is missing or not a readable image."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise MediaError(f"image file not found: {path}", "check the --image path")
        if not path.is_file():
            raise MediaError(f"image path is not a file: {path}", "point --image at an image file")
        try:
            with Image.open(path) as img:
                img.load()
                images.append(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise MediaError(f"cannot read image {path}: {reason}",
                             "the file is corrupt, truncated or not an image; re-save it as PNG or JPEG") from None
    return images


def _streamer(tokenizer, out: IO[str]):
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        """TextStreamer that writes to `out` (not print) and keeps the text, so callers get the answer too."""

        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.parts: list[str] = []

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.parts.append(text)
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return Streamer()


def generate_answer(model, processor, prompt: str, images: Sequence = (), video=None, max_new_tokens: int = 256,
                    out: IO[str] | None = None) -> str:
    """Greedy answer to `prompt` about PIL `images` or a sampled `video` (data.video.SampledVideo), streamed to
    `out` (stdout by default) token by token; returns the whole answer."""
    import torch

    text = processor.apply_chat_template(build_messages(prompt, len(images), video is not None),
                                         add_generation_prompt=True)
    kwargs: dict = {"text": [text], "return_tensors": "pt"}
    if images:
        kwargs["images"] = [list(images)]
    if video is not None:
        kwargs.update(videos=[video.frames], video_metadata=[video.metadata()], do_sample_frames=False)
    inputs = processor(**kwargs).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    streamer = _streamer(processor.tokenizer, out or sys.stdout)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                       pad_token_id=processor.tokenizer.pad_token_id)
    return "".join(streamer.parts).strip()


def cli_generate(model_dir: str | os.PathLike, prompt: str, images: Sequence[str | os.PathLike] = (),
                 video: str | os.PathLike | None = None, max_new_tokens: int = 256, device: str | None = None,
                 out: IO[str] | None = None) -> str:
    """`smolvlm generate`: check the inputs, load the model folder (never remote code), stream the answer."""
    from .data.frame_cache import load_model_video
    from .deploy.onnx_generate import is_onnx_dir, load_onnx
    from .eval.runner import check_model_dir, load_model

    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty", 'pass the question as the last argument, e.g. "What is in the image?"')
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}", "pass a positive number")
    if images and video is not None:
        raise UserError("--image and --video cannot be combined",
                        "SmolVLM's processor takes images or one video per prompt: pass one kind")
    check_model_dir(model_dir)
    loaded = load_images(images)
    if video is not None and not Path(video).is_file():
        raise MediaError(f"video file not found: {video}", "check the --video path")
    if is_onnx_dir(model_dir):  # `smolvlm export --format onnx`: the same answer loop over onnxruntime graphs
        model, processor = load_onnx(model_dir)
    else:
        model, processor = load_model(model_dir, device)
    sampled = load_model_video(video, processor) if video is not None else None
    return generate_answer(model, processor, prompt, loaded, sampled, max_new_tokens, out)
