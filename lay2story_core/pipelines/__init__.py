"""Diffusers-style pipelines: sample whole stories."""

from .images import contact_sheet, to_pil, to_tensor_image
from .manifest import PipelineManifest, SamplingDefaults, check_guidance_scale, check_num_inference_steps
from .redo import FinishedStory, RedoOutput, redo_story
from .redo_identity import IdentityCache
from .schedulers import SCHEDULERS, make_scheduler, scheduler_label, scheduler_name
from .story_pipeline import (
    MODES,
    GenerationCancelled,
    ReferenceImage,
    StoryPipeline,
    StoryPipelineOutput,
    default_scheduler,
)

__all__ = [
    "MODES",
    "SCHEDULERS",
    "FinishedStory",
    "GenerationCancelled",
    "IdentityCache",
    "PipelineManifest",
    "RedoOutput",
    "ReferenceImage",
    "StoryPipeline",
    "SamplingDefaults",
    "StoryPipelineOutput",
    "check_guidance_scale",
    "check_num_inference_steps",
    "contact_sheet",
    "default_scheduler",
    "make_scheduler",
    "redo_story",
    "scheduler_label",
    "scheduler_name",
    "to_pil",
    "to_tensor_image",
]
