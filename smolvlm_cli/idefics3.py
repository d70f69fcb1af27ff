# SmolVLM v1 checkpoints (HuggingFaceTB/SmolVLM-256M-Instruct and kin) are Idefics3 models: the same SigLIP tower,
# pixel-shuffle connector, Llama LM, weight names and special tokens as SmolVLM2, without video. `--init` of such a
# folder trains from a SmolVLM copy written once into $SMOLVLM_CACHE/converted, keyed by the source's files.
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .fsutil import atomic_output_dir, cache_root

# The SmolVLM2 video defaults (1 fps, at most 64 frames, frames at the tile size), which v1 never had.
VIDEO_FPS, VIDEO_MAX_FRAMES = 1.0, 64


def is_idefics3(folder: Path) -> bool:
    config = Path(folder) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "idefics3"


def _source_key(src: Path) -> str:
    """Changes when any file of the checkpoint does (name, size, modification time), or when it moves."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    stamp = [str(src.resolve())] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]


def converted_idefics3(src: Path, root: Path | None = None) -> Path:
    """The SmolVLM folder converted from the Idefics3 checkpoint `src`, written on first use (atomically)."""
    src = Path(src)
    out = (root or cache_root() / "converted") / f"{src.resolve().name}-{_source_key(src)}"
    if (out / "config.json").is_file():
        return out
    with atomic_output_dir(out, force=True) as tmp:
        write_smolvlm(src, tmp)
    return out


def write_smolvlm(src: Path, out: Path) -> None:
    """The weights unchanged (same names, same dtype) under a SmolVLM config; the processor keeps v1's tokenizer,
    image settings and tokens per tile, with SmolVLM2's chat template and video settings."""
    import torch
    from transformers import (AutoProcessor, Idefics3ForConditionalGeneration, SmolVLMConfig,
                              SmolVLMForConditionalGeneration)

    v1 = Idefics3ForConditionalGeneration.from_pretrained(src, dtype="auto")
    c = v1.config
    vision = {k: v for k, v in c.vision_config.to_dict().items() if k not in ("model_type", "transformers_version")}
    config = SmolVLMConfig(vision_config=vision, text_config=c.text_config.to_dict(), scale_factor=c.scale_factor,
                           image_token_id=c.image_token_id, tie_word_embeddings=c.tie_word_embeddings,
                           pad_token_id=getattr(c, "pad_token_id", None))
    config.architectures = ["SmolVLMForConditionalGeneration"]
    if not getattr(config.text_config, "architectures", None):
        from .assemble import TEXT_ARCHITECTURES

        config.text_config.architectures = list(TEXT_ARCHITECTURES)
    with torch.device("meta"):
        model = SmolVLMForConditionalGeneration(config)
    model.load_state_dict(v1.state_dict(), strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.to(v1.dtype).save_pretrained(out)
    if (src / "generation_config.json").is_file():
        (out / "generation_config.json").write_text((src / "generation_config.json").read_text())
    _processor(AutoProcessor.from_pretrained(src), c).save_pretrained(out)


def _processor(v1, config):
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    ip = v1.image_processor
    tile = ip.max_image_size["longest_edge"]
    common = dict(image_mean=ip.image_mean, image_std=ip.image_std, resample=ip.resample)
    image = SmolVLMImageProcessor(do_image_splitting=ip.do_image_splitting, size=dict(ip.size),
                                  max_image_size=dict(ip.max_image_size), **common)
    video = SmolVLMVideoProcessor(
        size={"longest_edge": tile}, max_image_size={"longest_edge": tile}, do_sample_frames=False,
        video_sampling={"fps": VIDEO_FPS, "max_frames": VIDEO_MAX_FRAMES, "video_size": {"longest_edge": tile}},
        **common)
    return SmolVLMProcessor(image_processor=image, tokenizer=v1.tokenizer, video_processor=video,
                            image_seq_len=v1.image_seq_len, chat_template=DEFAULT_CHAT_TEMPLATE)
