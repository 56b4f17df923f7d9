"""Sequence captioning: the pluggable :class:`Captioner` interface, the captions' validated form, the instruction
sent to vision-language models, and the deterministic :class:`TemplateCaptioner`.

The paper annotates each sequence with GPT-4o mini: a global caption per frame ("identity + frame prompt") and a
detailed subject caption for the boxed character. A captioner returns exactly that for one sequence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "MAX_CAPTION_CHARS",
    "CaptionError",
    "CaptionFormatError",
    "Captioner",
    "SequenceCaptions",
    "TemplateCaptioner",
    "caption_instruction",
    "extract_json",
    "parse_captions",
]

MAX_CAPTION_CHARS = 1000  # the story schema's default caption limit
Box = Sequence[float]


class CaptionError(RuntimeError):
    """A sequence could not be captioned. ``fatal`` errors (bad key, unknown model: every later call would fail the
    same way) stop the dataset build; others skip the sequence and are counted."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal

    def __reduce__(self):  # keep ``fatal`` across processes (worker -> main)
        return (self.__class__, self.args, {"fatal": self.fatal})


class CaptionFormatError(ValueError):
    """A captioner's output does not have the expected JSON form; the message names the field and the value."""


@dataclass(frozen=True)
class SequenceCaptions:
    """Captions of one sequence: the character's identity text, one frame prompt per frame (what happens, without the
    identity), and one subject caption per frame (how the character looks in its box; ``None`` = none)."""

    identity: str
    frame_prompts: tuple[str, ...]
    subject_captions: tuple[str | None, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_prompts", tuple(self.frame_prompts))
        object.__setattr__(self, "subject_captions", tuple(self.subject_captions))
        if len(self.frame_prompts) != len(self.subject_captions):
            raise CaptionFormatError(f"subject_captions: expected {len(self.frame_prompts)} (one per frame prompt), "
                                     f"got {len(self.subject_captions)}")
        _text(self.identity, "identity")
        for i, prompt in enumerate(self.frame_prompts):
            _text(prompt, f"frames[{i}].prompt")
        for i, caption in enumerate(self.subject_captions):
            if caption is not None:
                _text(caption, f"frames[{i}].subject", allow_empty=True)

    def to_dict(self) -> dict:
        """The JSON form vision-language models are asked for (see :func:`caption_instruction`)."""
        return {"identity": self.identity,
                "frames": [{"prompt": p, "subject": s} for p, s in zip(self.frame_prompts, self.subject_captions)]}


@runtime_checkable
class Captioner(Protocol):
    """Anything with this method can caption sequences. ``boxes[i]`` is the character's normalised ``[x0, y0, x1,
    y1]`` box in ``frames[i]``. Raise :class:`CaptionError` when the sequence cannot be captioned."""

    def caption(self, frames: Sequence[Image.Image], boxes: Sequence[Box]) -> SequenceCaptions: ...


def _text(value: object, field: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise CaptionFormatError(f"{field}: expected a string, got {type(value).__name__} {value!r:.80}")
    if not allow_empty and not value.strip():
        raise CaptionFormatError(f"{field}: must not be empty, got {value!r}")
    if len(value) > MAX_CAPTION_CHARS:
        raise CaptionFormatError(f"{field}: is {len(value)} characters, over the limit of {MAX_CAPTION_CHARS}")
    return value


def parse_captions(data: object, num_frames: int) -> SequenceCaptions:
    """Validates ``{"identity": str, "frames": [{"prompt": str, "subject": str | null}, ...]}`` with one entry per
    frame; raises :class:`CaptionFormatError` naming the field and the value."""
    if not isinstance(data, dict):
        raise CaptionFormatError(f"<captions>: expected a JSON object, got {type(data).__name__} {data!r:.80}")
    missing = [key for key in ("identity", "frames") if key not in data]
    if missing:
        raise CaptionFormatError(f"<captions>: missing key(s) {missing} (got keys {sorted(data)})")
    identity = _text(data["identity"], "identity").strip()
    frames = data["frames"]
    if not isinstance(frames, list):
        raise CaptionFormatError(f"frames: expected a list, got {type(frames).__name__} {frames!r:.80}")
    if len(frames) != num_frames:
        raise CaptionFormatError(f"frames: expected {num_frames} entries (one per image), got {len(frames)}")
    prompts, subjects = [], []
    for i, entry in enumerate(frames):
        if not isinstance(entry, dict):
            raise CaptionFormatError(f"frames[{i}]: expected an object, got {type(entry).__name__} {entry!r:.80}")
        if "prompt" not in entry:
            raise CaptionFormatError(f"frames[{i}]: missing key 'prompt' (got keys {sorted(entry)})")
        prompts.append(_text(entry["prompt"], f"frames[{i}].prompt").strip())
        subject = entry.get("subject")
        if subject is not None:
            subject = _text(subject, f"frames[{i}].subject", allow_empty=True).strip() or None
        subjects.append(subject)
    return SequenceCaptions(identity, tuple(prompts), tuple(subjects))


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def extract_json(text: str) -> object:
    """The JSON value in a model's reply: the whole text, or inside a ``` fence, or the outermost ``{...}``."""
    if not isinstance(text, str):
        raise CaptionFormatError(f"<reply>: expected text, got {type(text).__name__}")
    match = _FENCE.match(text)
    body = match.group(1) if match else text.strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as err:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start:end + 1])
            except json.JSONDecodeError:
                pass
        raise CaptionFormatError(f"<reply>: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): "
                                 f"{body[:120]!r}") from err


def caption_instruction(boxes: Sequence[Box]) -> str:
    """The instruction for a vision-language model captioning one sequence (images in order, boxes drawn)."""
    lines = [
        f"These {len(boxes)} images are consecutive frames of a cartoon story. The main character is marked by a box "
        "in each frame; its normalised [x0, y0, x1, y1] box per frame is:",
        *(f"  frame {i + 1}: [{', '.join(f'{v:.3f}' for v in box)}]" for i, box in enumerate(boxes)),
        "Reply with JSON only, no other text, in exactly this form:",
        '{"identity": "<who the main character is and how it always looks: species, body, face, hair, usual '
        'clothes; 10-30 words, same for all frames>", "frames": [{"prompt": "<what happens in this frame: action, '
        'pose, expression, setting, camera; 10-40 words, do not repeat the identity>", "subject": "<how the '
        f'character looks inside its box in this frame: pose, expression, clothing details; 10-30 words>"}}, ...]}} '
        f"with exactly {len(boxes)} entries in \"frames\", in frame order.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- template captioner
_COLOURS = {
    "black": (20, 20, 20), "white": (235, 235, 235), "grey": (128, 128, 128), "red": (200, 40, 40),
    "orange": (230, 140, 30), "yellow": (230, 210, 50), "green": (50, 160, 60), "blue": (40, 80, 200),
    "purple": (130, 50, 160), "pink": (230, 130, 180), "brown": (120, 75, 40),
}


def _colour_name(rgb: np.ndarray) -> str:
    names = list(_COLOURS)
    palette = np.asarray([_COLOURS[n] for n in names], dtype=np.float64)
    return names[int(((palette - rgb[None, :]) ** 2).sum(1).argmin())]


def _place(box: Box) -> tuple[str, str]:
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, area = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * (y1 - y0)
    horizontal = "on the left" if cx < 1 / 3 else "on the right" if cx > 2 / 3 else "in the middle"
    vertical = "at the top" if cy < 1 / 3 else "at the bottom" if cy > 2 / 3 else ""
    shot = "close-up" if area > 0.4 else "medium shot" if area > 0.1 else "wide shot"
    return " ".join(p for p in (horizontal, vertical) if p), shot


class TemplateCaptioner:
    """Deterministic captions from the boxes and the boxed pixels (position, shot size, dominant colour): no model,
    for tests and for building a layout-only dataset when no captioning model is at hand."""

    def __init__(self, identity: str = "the main character") -> None:
        self.identity = _text(identity, "identity").strip()

    def caption(self, frames: Sequence[Image.Image], boxes: Sequence[Box]) -> SequenceCaptions:
        if len(frames) != len(boxes) or not frames:
            raise ValueError(f"frames/boxes: expected the same non-zero number, got {len(frames)} and {len(boxes)}")
        prompts, subjects = [], []
        for i, (frame, box) in enumerate(zip(frames, boxes)):
            where, shot = _place(box)
            w, h = frame.size
            x0, y0, x1, y1 = (float(v) for v in box)
            crop = frame.convert("RGB").crop((int(x0 * w), int(y0 * h), max(int(x0 * w) + 1, round(x1 * w)),
                                              max(int(y0 * h) + 1, round(y1 * h))))
            colour = _colour_name(np.asarray(crop, dtype=np.float64).reshape(-1, 3).mean(0))
            prompts.append(f"frame {i + 1} of {len(frames)}, a {shot}, the character stands {where}")
            subjects.append(f"{self.identity} in {colour} tones, {where}")
        return SequenceCaptions(self.identity, tuple(prompts), tuple(subjects))
