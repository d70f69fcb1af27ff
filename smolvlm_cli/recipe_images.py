# The recipe's `images:` section: how images are resized and tiled for the model (None keeps the processor's).
# Training applies it to the processor it loads and records it in each phase model's processor (data/images.py).
from __future__ import annotations

from pydantic import Field, model_validator

from .recipe_base import Strict


class ImageSettings(Strict):
    """Image resizing and tiling. Every field left out keeps the value of the processor of the model training starts
    from (released SmolVLM2: longest_edge 2048, max_image_size 512, splitting on, small images upscaled)."""

    longest_edge: int | None = Field(default=None, gt=0, description="images are resized to this longest edge "
                                     "before tiling; a multiple of max_image_size")
    max_image_size: int | None = Field(default=None, gt=0, description="the tile edge the vision tower sees "
                                       "(also video frames); at most the tower's image_size")
    do_image_splitting: bool | None = Field(default=None, description="false: every image is one tile")
    upscale_small_images: bool | None = Field(default=None, description="false: an image is resized to the "
                                              "smallest multiple of the tile that holds it (capped at "
                                              "longest_edge), so an image smaller than one tile stays one tile")

    @model_validator(mode="after")
    def _edge_is_whole_tiles(self) -> "ImageSettings":
        edge, tile = self.longest_edge, self.max_image_size
        if edge is not None and tile is not None and edge % tile:
            raise ValueError(f"images.longest_edge {edge} is not a multiple of images.max_image_size {tile}; "
                             f"use e.g. {max(tile, edge // tile * tile)}")
        return self

    @property
    def is_default(self) -> bool:
        return all(v is None for v in self.model_dump().values())
