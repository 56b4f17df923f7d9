"""What ComfyUI's own samplers take beside a story-patched ``MODEL``: the story's per-frame ``CONDITIONING``
(``L2S_StoryConditioning``) and its empty ``LATENT`` (``L2S_EmptyStoryLatent``), one batch row per frame.

ComfyUI applies a conditioning whose batch equals the latent's row by row (``CONDRegular.process_cond`` keeps a
batch of the right size as it is), so frame ``i``'s latent is denoised with frame ``i``'s caption. The rows of a
conditioning tensor must share one token length. ComfyUI itself batches conditionings of unequal lengths by
repeating each to the least common multiple of the lengths (``comfy/conds.py``, ``CONDCrossAttn.concat``): attention
over a token sequence repeated ``r`` times equals attention over it once (every key's softmax weight is split over
its ``r`` copies), so the repeated row is the same conditioning. :func:`batch_encodings` does the same while the
common length stays within :data:`MAX_REPEAT` times the longest caption (ComfyUI's own concat stops at 4 repeats of
the shorter one, for speed; here the rows are built once, so only the size is bounded: CLIP captions of 1, 2 and 3
chunks batch at 6 chunks). Beyond it, tokenizers that do not pad (ComfyUI's T5 for PixArt, FLUX, SD3, whose lengths
are arbitrary) pad every caption to the longest with their own pad token, as ComfyUI pads each FLUX / SD3 prompt
shorter than its minimum length: those rows are then the caption encoded at that padded length.
"""

from __future__ import annotations

import logging
import math

import torch

from lay2story_core.story import Layout, Story

from .layout_editor import apply_layout_to_story
from .story_apply import check_clip
from .story_nodes import check_story

logger = logging.getLogger(__name__)

__all__ = ["MAX_REPEAT", "L2S_EmptyStoryLatent", "L2S_StoryConditioning", "batch_encodings", "common_length",
           "encode_texts", "latent_geometry"]

MAX_REPEAT = 4  # rows are repeated to a common length of at most this many times the longest caption
MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION


def common_length(lengths: list[int]) -> int | None:
    """The token length rows of ``lengths`` are batched at: their least common multiple, or ``None`` when that is
    more than :data:`MAX_REPEAT` times the longest (the conditioning would grow past what it is worth)."""
    target = math.lcm(*lengths)
    return target if target <= MAX_REPEAT * max(lengths) else None


def _token_aligned(key: str, value: object, length: int) -> bool:
    """Whether an encoder output is per token (repeated with the caption's tokens): ``cond`` and attention masks."""
    return isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[1] == length and (
        key == "cond" or "mask" in key)


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return a is b or a == b


def batch_encodings(rows: list[dict], field: str = "story") -> dict:
    """One ``encode_from_tokens(..., return_dict=True)`` dict per batch row -> one dict of batched values: ``cond``
    ``(B, T, C)`` (each row repeated to the common length ``T``, :func:`common_length`), ``pooled_output`` and every
    other tensor concatenated along the batch (attention masks repeated like their tokens); values that are not
    tensors (``None`` pooled outputs, hooks) must agree across rows and are kept once. ``ValueError`` naming
    ``field`` for rows that cannot be batched."""
    lengths = [int(r["cond"].shape[1]) for r in rows]
    target = common_length(lengths)
    if target is None:
        raise ValueError(f"{field}: captions of {sorted(set(lengths))} tokens cannot be batched (their common "
                         f"length {math.lcm(*lengths)} exceeds {MAX_REPEAT}x the longest): shorten the longest "
                         f"frame prompts")
    out = {}
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        if all(isinstance(v, torch.Tensor) for v in values):
            values = [v.repeat(1, target // n, *([1] * (v.ndim - 2))) if _token_aligned(key, v, n) else v
                      for v, n in zip(values, lengths)]
            if len({tuple(v.shape[1:]) for v in values}) > 1:
                raise ValueError(f"{field}: the encoder's {key!r} outputs have shapes "
                                 f"{[tuple(v.shape) for v in values]} that do not batch")
            out[key] = torch.cat(values)
        elif all(_same(v, values[0]) for v in values):
            out[key] = values[0]
        else:
            raise ValueError(f"{field}: the encoder's {key!r} output differs between captions and does not batch")
    return out


def _encode(clip, text: str, tokenizer_options: dict | None = None) -> dict:
    tokens = clip.tokenize(text, **({"tokenizer_options": tokenizer_options} if tokenizer_options else {}))
    return clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)


def _unpadded_tokenizers(clip) -> list:
    """The tokenizers of a ``CLIP`` that do not pad to a fixed length (T5 for PixArt / FLUX / SD3): ComfyUI's
    ``SDTokenizer`` s held by its tokenizer (``clip_l``, ``t5xxl``, ...) with ``pad_to_max_length`` off."""
    tokenizer = getattr(clip, "tokenizer", None)
    parts = [v for v in vars(tokenizer).values()] if tokenizer is not None and hasattr(tokenizer, "__dict__") else []
    return [p for p in parts if hasattr(p, "embedding_key") and hasattr(p, "tokenize_with_weights")
            and getattr(p, "pad_to_max_length", True) is False]


def _padding_options(clip, texts: list[str]) -> dict:
    """``tokenizer_options`` padding each unpadded tokenizer's tokens to the longest caption's count."""
    options = {}
    for part in _unpadded_tokenizers(clip):
        counts = [sum(len(chunk) for chunk in part.tokenize_with_weights(t)) for t in texts]
        options[f"{part.embedding_key}_min_length"] = max(counts)
    return options


def encode_texts(clip, texts: list[str], field: str = "story") -> dict:
    """The batched encoder outputs of ``texts`` (one row each; each distinct text encoded once), see
    :func:`batch_encodings`; captions whose lengths do not batch are re-encoded padded to a common length when
    the ``CLIP``'s tokenizers allow it (module docstring)."""
    distinct = list(dict.fromkeys(texts))
    encoded = {t: _encode(clip, t) for t in distinct}
    lengths = [int(encoded[t]["cond"].shape[1]) for t in distinct]
    if common_length(lengths) is None:
        options = _padding_options(clip, distinct)
        if options:
            logger.info("clip: captions of %s tokens padded to a common length to batch them (%s)",
                        sorted(set(lengths)), options)
            encoded = {t: _encode(clip, t, options) for t in distinct}
    return batch_encodings([encoded[t] for t in texts], field)


def _conditioning(batched: dict) -> list:
    """ComfyUI's ``CONDITIONING``: ``[[cond, {"pooled_output": ..., other outputs}]]`` (as CLIP Text Encode)."""
    rest = {k: v for k, v in batched.items() if k != "cond"}
    return [[batched["cond"], rest]]


class L2S_StoryConditioning:
    NODE_ID = "L2S_StoryConditioning"
    DISPLAY_NAME = "Lay2Story Story Conditioning"
    CATEGORY = "Lay2Story/conditioning"
    DESCRIPTION = (
        "The story's prompts for ComfyUI's samplers, one batch row per frame: each frame's positive prompt is its "
        "characters' identities + the frame prompt (StoryDiffusion's captions), the negative is the story's "
        "negative prompt. Encoded with the model's CLIP (pooled outputs kept for SDXL and FLUX); use with Lay2Story "
        "Apply Story and Lay2Story Empty Story Latent."
    )
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "One row per frame: frame i's identity + prompt (connect to the sampler's positive).",
        "The story's negative prompt, one row per frame (connect to the sampler's negative).",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The CLIP of the model you sample with (Load Checkpoint's, or Load "
                                             "CLIP / DualCLIPLoader for FLUX and PixArt)."}),
                "story": ("L2S_STORY", {"tooltip": "The story: characters and one prompt per frame."}),
            },
            "optional": {
                "layout": ("L2S_LAYOUT", {"tooltip": "A layout to apply to the story first: who is in each frame "
                                                     "decides whose identity its prompt starts with."}),
            },
        }

    def encode(self, clip, story, layout: Layout | None = None) -> tuple[list, list]:
        clip = check_clip(clip)
        story = check_story(story)
        if layout is not None:
            if not isinstance(layout, Layout):
                raise ValueError(f"layout: expected an L2S_LAYOUT, got {type(layout).__name__}")
            story = apply_layout_to_story(story, layout, field="layout")
        captions = [story.global_caption(i) for i in range(story.num_frames)]
        positive = encode_texts(clip, captions)
        negative = encode_texts(clip, [story.negative_prompt] * story.num_frames)
        return _conditioning(positive), _conditioning(negative)


# ---------------------------------------------------------------------------------------------------- latent
def latent_geometry(model=None, field: str = "model") -> tuple[int, int]:
    """``(channels, downscale)`` of a ``MODEL``'s latents (its ``latent_format``: SD1.5 / SDXL / PixArt 4, FLUX /
    SD3 16; 8x smaller than the image), or ComfyUI's EmptyLatentImage's ``(4, 8)`` without a model."""
    if model is None:
        return 4, 8
    fmt = getattr(getattr(model, "model", None), "latent_format", None)
    if fmt is None or not hasattr(fmt, "latent_channels"):
        raise ValueError(f"{field}: expected a MODEL (from Load Checkpoint / Load Diffusion Model), got "
                         f"{type(model).__name__}")
    if getattr(fmt, "latent_dimensions", 2) != 2:
        raise ValueError(f"{field}: a {type(fmt).__name__} model makes {fmt.latent_dimensions}-D latents (video or "
                         f"audio); a story needs an image model")
    return int(fmt.latent_channels), int(getattr(fmt, "spacial_downscale_ratio", 8))


def _size(value: object, field: str, story_value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 16 <= value <= MAX_RESOLUTION):
        raise ValueError(f"{field}: expected 0 (the story's) or pixels in [16, {MAX_RESOLUTION}], got {value!r}")
    return value or story_value


def _intermediate_device() -> torch.device:
    try:
        from comfy import model_management
    except ImportError:  # outside ComfyUI
        return torch.device("cpu")
    return model_management.intermediate_device()


class L2S_EmptyStoryLatent:
    NODE_ID = "L2S_EmptyStoryLatent"
    DISPLAY_NAME = "Lay2Story Empty Story Latent"
    CATEGORY = "Lay2Story/sampling"
    DESCRIPTION = (
        "The empty latent of a story for ComfyUI's samplers: one batch element per frame, at the story's size (or "
        "the one given), with the connected model's latent channels (SD1.5 / SDXL / PixArt 4, FLUX 16)."
    )
    FUNCTION = "generate"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Zeros, one batch element per frame (connect to the sampler's latent_image).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story": ("L2S_STORY", {"tooltip": "The story: one latent per frame."}),
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                                  "tooltip": "Frame width in pixels; 0: the story's."}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                                   "tooltip": "Frame height in pixels; 0: the story's."}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "The model you sample with: its latent channels and scale (without "
                                               "it: 4 channels, 1/8 of the size, as Empty Latent Image)."}),
            },
        }

    def generate(self, story: Story, width: int = 0, height: int = 0, model=None) -> tuple[dict]:
        story = check_story(story)
        width, height = _size(width, "width", story.width), _size(height, "height", story.height)
        channels, down = latent_geometry(model)
        latent = torch.zeros([story.num_frames, channels, height // down, width // down],
                             device=_intermediate_device())
        return ({"samples": latent},)
