"""Captioning with a local vision-language model folder through transformers' ``image-text-to-text`` pipeline
(e.g. a Qwen2-VL / Idefics3 / LLaVA-style chat model saved locally).

Untested here: no such weights are available offline. It sends the same instruction and box-marked frames as
:class:`~training.data.http_captioner.HttpCaptioner` and validates the reply the same way. Greedy decoding, one try:
a reply that is not the expected JSON raises a (non-fatal) :class:`~training.data.captions.CaptionError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from PIL import Image

from lay2story_core.vision.draw import draw_boxes

from .captions import (
    Box,
    CaptionError,
    CaptionFormatError,
    SequenceCaptions,
    caption_instruction,
    extract_json,
    parse_captions,
)

__all__ = ["TransformersCaptioner"]

logger = logging.getLogger(__name__)


class TransformersCaptioner:
    """``transformers.pipeline("image-text-to-text", model=folder)`` with a chat message of images + instruction."""

    def __init__(self, folder: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int = 768, max_image_side: int = 512) -> None:
        from transformers import pipeline

        path = os.fspath(folder)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"TransformersCaptioner: {path!r} is not a transformers model folder (no "
                                    "config.json)")
        self.pipe = pipeline("image-text-to-text", model=path, device=device, dtype=dtype or "auto")
        self.max_new_tokens = int(max_new_tokens)
        self.max_image_side = int(max_image_side)
        logger.info("loaded captioning model %s", path)

    def caption(self, frames: Sequence[Image.Image], boxes: Sequence[Box]) -> SequenceCaptions:
        if len(frames) != len(boxes) or not frames:
            raise ValueError(f"frames/boxes: expected the same non-zero number, got {len(frames)} and {len(boxes)}")
        images = []
        for frame, box in zip(frames, boxes):
            image = draw_boxes(frame, [box])
            image.thumbnail((self.max_image_side, self.max_image_side), Image.BICUBIC)
            images.append(image)
        messages = [{"role": "user", "content": [*({"type": "image", "image": im} for im in images),
                                                  {"type": "text", "text": caption_instruction(boxes)}]}]
        out = self.pipe(text=messages, max_new_tokens=self.max_new_tokens, return_full_text=False,
                        generate_kwargs={"do_sample": False})
        reply = out[0]["generated_text"] if out else ""
        if isinstance(reply, list):  # some versions return the chat with the new assistant turn appended
            reply = reply[-1].get("content", "") if reply else ""
        try:
            return parse_captions(extract_json(reply), len(frames))
        except CaptionFormatError as err:
            raise CaptionError(f"TransformersCaptioner: unusable reply: {err}") from err
