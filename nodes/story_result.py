"""``L2S_STORY_RESULT``: a finished story as it travels between the Story Sampler and Redo Frames nodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lay2story_core.pipelines.redo import FinishedStory, initial_noise
from lay2story_core.story import Story

__all__ = ["StoryResult", "check_story_result"]


@dataclass(frozen=True)
class StoryResult:
    """What travels on ``L2S_STORY_RESULT``: the finished story (:class:`FinishedStory`, frames as ``(F, 3, H, W)``),
    its mode and sampler, the pipeline settings of the call and, after a redo, the frames it sampled. No models:
    the redo node takes the model inputs again, so ComfyUI alone decides how long models live."""

    record: FinishedStory
    mode: str
    scheduler: str
    settings: dict
    sampled: tuple[int, ...] = ()

    @classmethod
    def of(cls, result, story: Story, images: torch.Tensor, mode, scheduler: str, settings: dict) -> StoryResult:
        """From a pipeline call's output (a redo's carries its own record) and the sampler node's values."""
        record = getattr(result, "record", None)
        if record is None:
            latents = result.latents.detach().float().cpu()
            story = getattr(result, "story", None) or story  # with the boxes auto layout placed
            record = FinishedStory(story, latents, initial_noise(latents.shape, settings["seed"]),
                                   {k: settings.get(k) for k in ("seed", "chunk_size", "identity_frames")},
                                   images.permute(0, 3, 1, 2).contiguous())
        else:
            record.images = images.permute(0, 3, 1, 2).contiguous()
        return cls(record, str(mode), scheduler, dict(settings), tuple(getattr(result, "sampled", ())))


def check_story_result(value: object, field: str = "story_result") -> StoryResult:
    if not isinstance(value, StoryResult):
        raise ValueError(f"{field}: expected an L2S_STORY_RESULT (from Lay2Story Story Sampler or Redo Frames), got "
                         f"{type(value).__name__}")
    return value
