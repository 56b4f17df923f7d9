"""``L2S_RedoFrames``: sample chosen frames of a finished story again (a new seed, an edited story), or add frames,
keeping every other frame as it is (``lay2story_core.pipelines.redo``).

The sampler's ``story_result`` output (``L2S_STORY_RESULT``) carries what a redo needs: the frames, every frame's
final latents and initial noise, the sampling settings and the model sockets it was sampled with. It is small (the
latents, not the models' keys/values: a redo re-derives those, measured in ``bench/redo.py``) and it lives in
ComfyUI's execution cache like any node output, so ComfyUI frees it when it drops that output.
"""

from __future__ import annotations

import logging

import torch

from lay2story_core.pipelines.redo import parse_frame_list, redo_story

from .model_inputs import model_inputs
from .sampler import L2S_StorySampler, model_sockets
from .story_nodes import check_story
from .story_result import StoryResult, check_story_result

logger = logging.getLogger(__name__)

__all__ = ["L2S_RedoFrames", "StoryResult", "check_story_result"]

MAX_SEED = 0xFFFFFFFFFFFFFFFF
FIELDS = {"frames": "frames", "story": "story", "seed": "seed", "insert": "insert", "append": "append"}
# a redo decides these itself; it draws with the boxes the first run placed (auto layout) and places no others
_NOT_FOR_REDO = ("seed", "height", "width", "chunk_size", "identity_frames", "auto_layout")


def _insert_positions(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()] if isinstance(text, str) else None
    if parts is None or not all(p.isdigit() for p in parts):
        raise ValueError(f"insert: expected frame numbers like '3' or '3,3', got {text!r}")
    return [int(p) for p in parts]


class L2S_RedoFrames:
    NODE_ID = "L2S_RedoFrames"
    DISPLAY_NAME = "Lay2Story Redo Frames"
    CATEGORY = "Lay2Story/sampling"
    DESCRIPTION = (
        "Samples chosen frames of a finished story again with a new seed (or an edited story: new prompt, caption "
        "or box), or adds frames, while every other frame stays exactly as it was; the new frames read the kept "
        "frames' identity (StoryDiffusion's write/read scheme), so the character stays the same."
    )
    FUNCTION = "redo"
    RETURN_TYPES = ("IMAGE", "LATENT", "L2S_STORY_RESULT")
    RETURN_NAMES = ("images", "latent", "story_result")
    OUTPUT_TOOLTIPS = (
        "The story's frames with the redone ones replaced (keep_others), or only the redone and new frames.",
        "Their final latents, in the same order (unscaled VAE latents).",
        "The changed story, for another Redo Frames.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story_result": ("L2S_STORY_RESULT", {"tooltip": "From Lay2Story Story Sampler (or another Redo "
                                                                 "Frames): the finished story."}),
                "frames": ("STRING", {"default": "0", "multiline": False,
                                      "tooltip": "Frames to sample again, numbered from 0: '2,5' or '2-4'; empty "
                                                 "when only adding frames."}),
                "seed": ("INT", {"default": 1, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed of the redone and new frames (frame f gets the noise it would "
                                            "have in a story sampled with this seed)."}),
                "keep_others": ("BOOLEAN", {"default": True,
                                            "tooltip": "On: output every frame of the story, the kept ones exactly "
                                                       "as they were. Off: only the redone and new frames."}),
                "insert": ("STRING", {"default": "", "multiline": False,
                                      "tooltip": "Add a new frame before each of these frames ('3', '3,3'; the frame "
                                                 "count: at the end); the edited story gives its prompt."}),
                "append": ("INT", {"default": 0, "min": 0, "max": 256,
                                   "tooltip": "Add this many new frames at the end; the edited story gives them."}),
            },
            "optional": {
                "story": ("L2S_STORY", {"tooltip": "The edited story (new prompts, captions or boxes; the added "
                                                   "frames). Frames not redone must be unchanged. Default: the "
                                                   "finished story."}),
                **model_inputs(
                    model="The Lay2Story model the story was sampled with (or connect pixart + clip + vae, as on "
                          "the sampler).",
                    text_encoder="The text encoder the story was sampled with.",
                    pixart="The PixArt MODEL the story was sampled with.",
                    clip="The T5 CLIP the story was sampled with.",
                    vae="The VAE the story was sampled with.",
                    subject_branch="The subject branch the story was sampled with (pixart MODEL, lay2story mode).",
                ),
            },
        }

    def redo(self, story_result=None, frames: str = "0", seed: int = 1, keep_others: bool = True, insert: str = "",
             append: int = 0, story=None, model=None, text_encoder=None, pixart=None, clip=None, vae=None,
             subject_branch=None) -> tuple[torch.Tensor, dict, StoryResult]:
        result = check_story_result(story_result)
        models = model_sockets(model, text_encoder, pixart, clip, vae, subject_branch)
        if not isinstance(frames, str):
            raise ValueError(f"frames: expected text like '2,5', got {frames!r}")
        chosen = parse_frame_list(frames, "frames")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed: expected an integer in [0, {MAX_SEED}], got {seed!r}")
        positions = _insert_positions(insert)
        edited = check_story(story) if story is not None else None
        def sample(pipe, _story, kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k not in _NOT_FOR_REDO}
            return redo_story(pipe, result.record, chosen, story=edited, seed=seed, insert=positions, append=append,
                              chunk_size=result.settings.get("chunk_size"), fields=FIELDS, **kwargs)

        images, latent, new_result = L2S_StorySampler().run(models, edited or result.record.story,
                                                            result.mode, result.scheduler, result.settings, sample)
        logger.info("redo: sampled frames %s", list(new_result.sampled))
        if keep_others:
            return images, latent, new_result
        sampled = list(new_result.sampled)
        return images[sampled], {"samples": latent["samples"][sampled]}, new_result

