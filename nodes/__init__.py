"""ComfyUI nodes of the Lay2Story pack: one registry from which both ComfyUI mappings are derived."""

from .registry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
