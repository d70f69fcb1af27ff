# Turn a gathered training state dict into a plain Hugging Face model folder (adapters merged into the weights),
# next to the processor of the model the phase started from. Runs on one process, outside any ZeRO context.
from __future__ import annotations

import shutil
from pathlib import Path

from ..fsutil import atomic_output_dir

PROCESSOR_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "chat_template.json", "special_tokens_map.json", "preprocessor_config.json",
                   "video_preprocessor_config.json", "generation_config.json", "recipe.yaml", "smolvlm_init.json")


def build_model(start_dir: Path, phase=None):
    """The phase's model architecture on CPU in fp32 (random weights), wrapped with the phase's adapters."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from .phases import adapter_config

    unset_hf_deepspeed_config()  # a plain CPU model, never a zero.Init-partitioned one
    config = AutoConfig.from_pretrained(start_dir)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    lora = adapter_config(phase) if phase is not None else None
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    return model


def merged_model(state: dict, start_dir: Path, phase=None):
    """The phase's model with `state` loaded and its adapters merged. A QLoRA phase's 4-bit weights are first
    de-quantised (the NF4 values the adapters were trained against), so the merge happens in fp32."""
    model = load_phase_state(build_model(start_dir, phase), state)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval()


def load_phase_state(model, state: dict):
    """Load a gathered phase state (4-bit weights de-quantised) into build_model's model; a missing or unexpected
    key (other than a tied lm_head) is an error."""
    from .quantize import dequantized, is_quantized

    if is_quantized(state):
        state = dequantized(state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight", "base_model.model.lm_head.weight"}
    if unexpected or [k for k in missing if k not in tied]:
        raise RuntimeError(f"state dict does not match the phase model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return model


def write_model_folder(model, start_dir: Path, out: Path, dtype: str | None = None, force: bool = True,
                       extra=None) -> Path:
    """save_pretrained + the processor files of `start_dir` (+ whatever `extra(tmp)` adds), atomically."""
    import torch

    if dtype:
        model = model.to(getattr(torch, dtype))
    with atomic_output_dir(Path(out), force=force) as tmp:
        model.save_pretrained(tmp)
        for name in PROCESSOR_FILES:
            src = Path(start_dir) / name
            if src.is_file() and (name == "generation_config.json" or not (tmp / name).exists()):
                shutil.copy2(src, tmp / name)
        if extra is not None:
            extra(tmp)
    return Path(out)


def record_video_sampling(phase, images=None):
    """For write_model_folder's `extra`: the phase's `video_fps` / `video_max_frames` become the saved processor's
    video settings, and the recipe's `images:` section (recipe_images.ImageSettings) its image settings, so that eval
    and `smolvlm generate` see a trained model's videos and images as it was trained (None when both keep the
    processor's)."""
    from ..data.images import record_images

    if phase is None or (phase.video_fps is None and phase.video_max_frames is None):
        return None if images is None or images.is_default else (lambda folder: record_images(folder, images))

    def extra(folder: Path) -> None:
        from transformers import AutoProcessor

        record_images(folder, images)
        processor = AutoProcessor.from_pretrained(folder)
        vp = processor.video_processor
        fps = phase.video_fps or vp.fps
        frames = phase.video_max_frames or vp.num_frames
        vp.fps, vp.num_frames = fps, frames
        vp.video_sampling = {**(getattr(vp, "video_sampling", None) or {}), "fps": fps, "max_frames": frames}
        processor.save_pretrained(folder)

    return extra
