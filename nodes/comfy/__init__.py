"""The pack's ComfyUI-native path: the story sampler on ComfyUI's own ``MODEL`` (PixArt), ``CLIP`` (T5) and ``VAE``,
with ComfyUI's model management placing every model. Only the nodes import this package; ``lay2story_core`` never
does."""

from .host import managed
from .pipeline import ComfyStoryPipeline
from .pixart import ComfyPixArt, check_pixart, pixart_grid_settings

__all__ = ["ComfyPixArt", "ComfyStoryPipeline", "check_pixart", "managed", "pixart_grid_settings"]
