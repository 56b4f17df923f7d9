"""Open-set detection with Grounding DINO through transformers (no torchvision, no groundingdino-py).

Used by the dataset pipeline (top box of "the main character" per frame, as in the Lay2Story data recipe) and by the
ComfyUI layout-detector node. Boxes come back normalised ``[x0, y0, x1, y1]`` in ``[0, 1]``, the story schema's form.

The post-processing follows transformers' ``GroundingDinoProcessor.post_process_grounded_object_detection``
(sigmoid logits, max over text tokens, centre->corner boxes), kept in normalised coordinates and with the label
phrase decoded without special tokens.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from ._common import check_images, check_model_folder, resolve_device, resolve_dtype
from .draw import draw_boxes

__all__ = ["Detection", "GroundingDinoDetector", "draw_boxes", "normalize_prompt"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One detected box: normalised ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= 1`` (same for y), the box score
    (max text-token probability) and the text label (the prompt tokens above the text threshold)."""

    box: tuple[float, float, float, float]
    score: float
    label: str

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": self.score, "label": self.label}

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of an image of ``width`` x ``height`` (rounded outwards, at least one pixel)."""
        x0, y0, x1, y1 = self.box
        eps = 1e-6  # 0.55 * 100 is 55.00000000000001: do not round that up to 56
        px0, py0 = math.floor(x0 * width + eps), math.floor(y0 * height + eps)
        px1 = max(px0 + 1, min(width, math.ceil(x1 * width - eps)))
        py1 = max(py0 + 1, min(height, math.ceil(y1 * height - eps)))
        return px0, py0, px1, py1


def normalize_prompt(prompt: str) -> str:
    """Grounding DINO's text format: lower case, phrases separated by " . ", ending with ".".

    ``"The main character"`` -> ``"the main character."``; ``["cat", "dog"]``-style lists are not accepted here,
    write ``"cat. dog."``.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: expected a non-empty string, got {prompt!r}")
    text = " ".join(prompt.lower().split())
    return text if text.endswith(".") else text + "."


def _check_threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


class GroundingDinoDetector:
    """Grounding DINO (``GroundingDinoForObjectDetection`` + ``GroundingDinoProcessor``) from a local folder.

    >>> detector = GroundingDinoDetector.from_pretrained("models/grounding-dino-tiny")
    >>> [d] = detector.detect([image], "the main character")
    """

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model.eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None) -> GroundingDinoDetector:
        """Loads a transformers Grounding DINO folder (e.g. ``IDEA-Research/grounding-dino-tiny`` saved locally).

        The image processor is the PIL one (the default one needs torchvision); weights load from safetensors.
        """
        from transformers import AutoTokenizer, GroundingDinoForObjectDetection, GroundingDinoProcessor
        from transformers.models.grounding_dino import GroundingDinoImageProcessorPil

        path = check_model_folder(folder, "GroundingDinoDetector")
        device, dtype = resolve_device(device), resolve_dtype(dtype)
        model = GroundingDinoForObjectDetection.from_pretrained(path, dtype=dtype, use_safetensors=True)
        processor = GroundingDinoProcessor(
            image_processor=GroundingDinoImageProcessorPil.from_pretrained(path),
            tokenizer=AutoTokenizer.from_pretrained(path),
        )
        logger.info("loaded Grounding DINO from %s on %s (%s)", path, device, dtype)
        return cls(model.to(device), processor, device, dtype)

    # ------------------------------------------------------------------------------------------------ inference
    @torch.inference_mode()
    def _raw(self, images: list[Image.Image], text: str) -> tuple[torch.Tensor, ...]:
        """Probabilities ``(n, queries, tokens)``, normalised xyxy boxes ``(n, queries, 4)``, input ids and the
        text attention mask ``(n, tokens)``."""
        max_len = int(getattr(self.model.config, "max_text_len", 256))
        inputs = self.processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True,
                                truncation=True, max_length=max_len)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid()
        cx, cy, w, h = outputs.pred_boxes.float().unbind(-1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).clamp(0.0, 1.0)
        return probs.cpu(), boxes.cpu(), inputs["input_ids"].cpu(), inputs["attention_mask"].cpu()

    def _label(self, token_probs: torch.Tensor, input_ids: torch.Tensor, text_threshold: float, text: str) -> str:
        # Like transformers' get_phrases_from_posmap: the first and last positions ([CLS], [SEP]) never count.
        chosen = token_probs > text_threshold
        chosen[0] = False
        chosen[-1] = False
        ids = [int(i) for i in input_ids[chosen]]
        label = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip() if ids else ""
        label = label.strip(" .")
        return label or text.rstrip(".")

    def detect_all(self, images: Sequence[Image.Image], prompt: str, box_threshold: float = 0.35,
                   text_threshold: float = 0.25, batch_size: int = 8) -> list[list[Detection]]:
        """All boxes scoring at least ``box_threshold`` per image, best first (boxes of zero area are dropped)."""
        images = check_images(images)
        text = normalize_prompt(prompt)
        box_threshold = _check_threshold(box_threshold, "box_threshold")
        text_threshold = _check_threshold(text_threshold, "text_threshold")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        # Batches hold images of one size only: padding a smaller image changes what the backbone sees, so mixing
        # sizes would make an image's boxes depend on its batch neighbours.
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.size, []).append(i)
        batches = [idx[s:s + batch_size] for idx in by_size.values() for s in range(0, len(idx), batch_size)]
        results: list[list[Detection]] = [[] for _ in images]
        for batch in batches:
            probs, boxes, input_ids, text_mask = self._raw([images[i] for i in batch], text)
            for k, index in enumerate(batch):
                length = min(int(text_mask[k].sum()), probs.shape[-1])
                token_probs = probs[k][:, :length]
                scores = token_probs.max(dim=-1).values
                order = torch.argsort(scores, descending=True, stable=True)
                found = []
                for q in order.tolist():
                    score = float(scores[q])
                    if score < box_threshold:
                        break
                    x0, y0, x1, y1 = (float(v) for v in boxes[k, q])
                    if x1 <= x0 or y1 <= y0:
                        continue
                    label = self._label(token_probs[q].clone(), input_ids[k][: token_probs.shape[1]],
                                        text_threshold, text)
                    found.append(Detection((x0, y0, x1, y1), score, label))
                results[index] = found
        return results

    def detect(self, images: Sequence[Image.Image], prompt: str, box_threshold: float = 0.35,
               text_threshold: float = 0.25, batch_size: int = 8) -> list[Detection | None]:
        """The top box per image, or ``None`` where no box reaches ``box_threshold``."""
        found = self.detect_all(images, prompt, box_threshold, text_threshold, batch_size)
        return [boxes[0] if boxes else None for boxes in found]
