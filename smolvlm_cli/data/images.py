# The recipe's image settings on a SmolVLMProcessor: applied to the processor training, data check and inspect load,
# recorded into a phase model's processor, and honoured again wherever a model folder's processor is loaded.
from __future__ import annotations

import math
from pathlib import Path

from ..errors import RecipeError

# Not a transformers setting: stored beside the image processor's own keys (a plain transformers load keeps the key
# and ignores it); `honour_upscale` gives it effect in this project's loaders (training, eval, generate, data check).
UPSCALE_KEY = "upscale_small_images"


def no_upscale_edge(height: int, width: int, tile: int, longest_edge: int) -> int:
    """The longest edge an image is resized to when small images are not upscaled: the smallest multiple of the tile
    that holds the image, never above `longest_edge` (386 px with 512 px tiles: 512, one tile)."""
    return min(longest_edge, max(tile, math.ceil(max(height, width) / tile) * tile))


class _NoUpscale:
    """Image-processor mixin: the first resize (the one given `longest_edge`) stops at the image's own tile multiple.
    The later resizes (to whole tiles, the global image) are given height and width and are left alone; the
    processor's rows / cols, and so its image tokens, follow from the smaller image."""

    def resize(self, image, size, *args, **kwargs):
        if getattr(size, "longest_edge", None):
            from transformers.image_utils import SizeDict

            height, width = image.shape[-2:]
            edge = no_upscale_edge(int(height), int(width), self.max_image_size["longest_edge"], size.longest_edge)
            if edge < size.longest_edge:
                size = SizeDict(longest_edge=edge)
        return super().resize(image, size, *args, **kwargs)

    def to_dict(self):
        out = super().to_dict()
        out["image_processor_type"] = type(self).__mro__[2].__name__  # plain transformers loads what we save
        return out


_NAMES = {"SmolVLMImageProcessor": "SmolVLMNoUpscaleImageProcessor",
          "SmolVLMImageProcessorPil": "SmolVLMNoUpscalePilImageProcessor"}


def _no_upscale_class(base: type) -> type:
    if base.__name__ not in _NAMES:
        raise RecipeError(f"images.upscale_small_images false needs a SmolVLM image processor, not {base.__name__}",
                          "start from a SmolVLM2 checkpoint, or leave images.upscale_small_images unset")
    return __getattr__(_NAMES[base.__name__])


def __getattr__(name: str):
    """The no-upscale image processor classes, made on first use (no transformers import when this module loads)
    and reachable by name, so that DataLoader workers can unpickle an encoder holding one."""
    if name not in _NAMES.values():
        raise AttributeError(name)
    from transformers import SmolVLMImageProcessor
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    for base in (SmolVLMImageProcessor, SmolVLMImageProcessorPil):
        cls_name = _NAMES[base.__name__]
        if cls_name not in globals():
            globals()[cls_name] = type(cls_name, (_NoUpscale, base), {"__module__": __name__})
    return globals()[name]


def honour_upscale(processor):
    """Give a loaded processor's `upscale_small_images: false` its effect (a no-op otherwise). Idempotent."""
    ip = processor.image_processor
    if getattr(ip, UPSCALE_KEY, True) is False and not isinstance(ip, _NoUpscale):
        ip.__class__ = _no_upscale_class(type(ip))
    elif getattr(ip, UPSCALE_KEY, True) is not False and isinstance(ip, _NoUpscale):
        ip.__class__ = type(ip).__mro__[2]
    return processor


def tile_tokens(tile: int, vision_config, scale_factor: int) -> int:
    """Image tokens per tile of edge `tile`: (tile / patch)^2 patches, pixel-shuffled by scale_factor^2. RecipeError
    when the tile is larger than the tower's image_size or not a whole number of shuffled patches."""
    size, patch = vision_config.image_size, vision_config.patch_size
    step = patch * scale_factor
    if tile > size:
        raise RecipeError(f"images.max_image_size {tile} is larger than the vision tower's image_size {size}",
                          f"use at most {size}")
    if tile % step:
        raise RecipeError(f"images.max_image_size {tile} is not a multiple of patch_size x scale_factor = "
                          f"{patch} x {scale_factor} = {step}", f"use a multiple of {step}, e.g. {size}")
    return (tile // patch) ** 2 // scale_factor ** 2


def apply_images(processor, settings, config=None):
    """Apply a recipe `images:` section (ImageSettings) to `processor` in place; unset fields keep its values.
    `config` (the model's config) is needed when max_image_size is set: the tile decides the tokens per image."""
    if settings is None or settings.is_default:
        return honour_upscale(processor)
    ip = processor.image_processor
    tile = settings.max_image_size or ip.max_image_size["longest_edge"]
    edge = settings.longest_edge or _edge(ip.size)
    if edge % tile:
        field = "longest_edge" if settings.longest_edge else "max_image_size"
        raise RecipeError(f"images.{field}: longest_edge {edge} is not a multiple of the tile {tile}",
                          f"set images.longest_edge to a multiple of {tile} (e.g. {max(tile, edge // tile * tile)})")
    if settings.max_image_size is not None:
        if config is None:
            raise RecipeError("images.max_image_size needs the model's config", "pass the model folder")
        processor.image_seq_len = tile_tokens(tile, config.vision_config, config.scale_factor)
        ip.max_image_size = {"longest_edge": tile}
        vp = getattr(processor, "video_processor", None)
        if vp is not None:  # video frames are squared to the tile too: same tokens per frame as the prompt says
            vp.max_image_size = {"longest_edge": tile}
    if settings.longest_edge is not None:
        ip.size = {"longest_edge": edge}
    if settings.do_image_splitting is not None:
        ip.do_image_splitting = settings.do_image_splitting
    if settings.upscale_small_images is not None:
        setattr(ip, UPSCALE_KEY, settings.upscale_small_images)
    return honour_upscale(processor)


def _edge(size) -> int:
    return size["longest_edge"] if isinstance(size, dict) else size.longest_edge


def load_processor(folder: str | Path, settings=None):
    """AutoProcessor of a model folder with the recipe's image settings (or the folder's own) in effect."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    config = None
    if settings is not None and settings.max_image_size is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
    return apply_images(processor, settings, config)


def record_images(folder: Path, settings) -> None:
    """Write the image settings into the processor saved in `folder` (a phase model), so that eval, generate and the
    next phase see images as this phase trained on them. Saved by the plain transformers classes."""
    if settings is None or settings.is_default:
        return
    load_processor(folder, settings).save_pretrained(folder)


def image_token_count(input_ids, processor) -> int:
    """Image placeholder tokens in a sequence (the positions the vision features fill)."""
    return int((input_ids == processor.image_token_id).sum())
