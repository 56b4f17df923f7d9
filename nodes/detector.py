"""``L2S_LayoutDetector``: a layout read off images with Grounding DINO (transformers, a local folder in
``models/grounding-dino``), as the Lay2Story data recipe does: the top box of "the main character" per frame."""

from __future__ import annotations

import logging

from lay2story_core.story import Layout, LayoutError
from lay2story_core.story.fields import parse_caption, parse_id
from lay2story_core.vision import GroundingDinoDetector, draw_boxes
from lay2story_core.vision.layout import detections_to_layout

from . import comfy_env, model_files
from .image_utils import pil_to_image, to_pil_list

logger = logging.getLogger(__name__)

__all__ = ["L2S_LayoutDetector", "detections_to_layout"]


class L2S_LayoutDetector:
    NODE_ID = "L2S_LayoutDetector"
    DISPLAY_NAME = "Lay2Story Layout Detector"
    CATEGORY = "Lay2Story/layout"
    DESCRIPTION = (
        "Finds the character in each image with Grounding DINO (a transformers folder in models/grounding-dino, "
        "e.g. grounding-dino-tiny) and makes a layout of the best box per frame. Frames where nothing scores above "
        "the threshold get no box (layout off there)."
    )
    FUNCTION = "detect"
    RETURN_TYPES = ("L2S_LAYOUT", "IMAGE")
    RETURN_NAMES = ("layout", "preview")
    OUTPUT_TOOLTIPS = (
        "One frame per image, each with the character's detected box (or none).",
        "The images with the detected boxes and scores drawn.",
    )

    def __init__(self) -> None:
        self._detector: tuple[tuple, GroundingDinoDetector] | None = None

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to find the character in, one image per frame."}),
                "detector": (model_files.detector_choices(), {
                    "tooltip": "Grounding DINO folder in models/grounding-dino (transformers save_pretrained, e.g. "
                               "IDEA-Research/grounding-dino-tiny downloaded there)."}),
                "prompt": ("STRING", {"default": "the main character",
                                      "tooltip": "What to look for, in words (e.g. 'the fox')."}),
                "box_threshold": ("FLOAT", {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.01,
                                            "tooltip": "Lowest box score kept; frames with no box above it get "
                                                       "no layout."}),
                "text_threshold": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Lowest token score for the words of the box label."}),
                "character_id": ("STRING", {"default": "hero",
                                            "tooltip": "The story character the boxes belong to."}),
                "device": (["auto", "cpu", "cuda"], {"default": "auto",
                                                     "tooltip": "Where the detector runs."}),
            },
            "optional": {
                "caption": ("STRING", {
                    "default": "", "multiline": False,
                    "tooltip": "Subject caption for every detected box (empty: none, the frame caption is used)."}),
            },
        }

    def _load(self, choice: str, device: str) -> GroundingDinoDetector:
        path = model_files.resolve_choice(choice, "detector", default_kind="grounding-dino")
        run_device = comfy_env.resolve_device(device)
        key = (path, run_device)
        if self._detector is not None and self._detector[0] == key:
            return self._detector[1]
        self._detector = None
        try:
            detector = GroundingDinoDetector.from_pretrained(path, device=run_device)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"detector: could not load {choice!r}: {err}") from err
        self._detector = (key, detector)
        return detector

    def detect(self, images, detector: str, prompt: str = "the main character", box_threshold: float = 0.35,
               text_threshold: float = 0.25, character_id: str = "hero", device: str = "auto",
               caption: str = "") -> tuple[Layout, object]:
        frames = to_pil_list(images, "images")
        try:
            char_id = parse_id(character_id.strip() if isinstance(character_id, str) else character_id,
                               "character_id")
            subject_caption = parse_caption(caption, "caption")
        except LayoutError as err:
            raise ValueError(str(err)) from err
        for name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        model = self._load(detector, device)
        found = []
        pbar = comfy_env.progress_bar(len(frames))
        for i, frame in enumerate(frames):  # one at a time: a progress/Cancel point per image
            comfy_env.throw_if_interrupted()
            found += model.detect([frame], prompt, box_threshold=box_threshold, text_threshold=text_threshold)
            pbar.update_absolute(i + 1, len(frames))
        layout = detections_to_layout(found, char_id, subject_caption)
        previews = []
        for frame, det, subjects in zip(frames, found, layout.frames):
            boxes = [s.box for s in subjects]
            labels = [f"{char_id} {det.score:.2f}"] if subjects else None
            previews.append(draw_boxes(frame, boxes, labels))
        logger.info("Grounding DINO found %s in %d of %d frames", prompt, sum(bool(f) for f in layout.frames),
                    len(frames))
        return (layout, pil_to_image(previews))
