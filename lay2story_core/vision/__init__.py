"""Shared vision models: Grounding DINO detection and CLIP embeddings (transformers, local folders only), and box
previews. Used by the dataset pipeline, the ComfyUI layout-detector node and the evaluation."""

from .clip import ClipEmbedder
from .draw import draw_boxes
from .grounding_dino import Detection, GroundingDinoDetector, normalize_prompt

__all__ = ["ClipEmbedder", "Detection", "GroundingDinoDetector", "draw_boxes", "normalize_prompt"]
