"""Training-free story consistency (StoryDiffusion-style): the core attention maths every host calls."""

from .box_control import region_caption, region_captions
from .processors import (
    SECOND_HALF,
    ConsistencyConfig,
    ConsistentSelfAttnProcessor,
    RegionalCrossAttnProcessor,
    StoryConsistencyContext,
    consistent_self_attention,
    dense_consistent_self_attention,
    identity_flags,
    regional_cross_attention,
    sampled_tokens,
    shared_tokens,
    story_consistency_processors,
)
from .story_batch import DEFAULT_IDENTITY_FRAMES, StoryBatch, step_index, token_grid

__all__ = [
    "DEFAULT_IDENTITY_FRAMES",
    "SECOND_HALF",
    "ConsistencyConfig",
    "ConsistentSelfAttnProcessor",
    "RegionalCrossAttnProcessor",
    "StoryBatch",
    "StoryConsistencyContext",
    "consistent_self_attention",
    "dense_consistent_self_attention",
    "identity_flags",
    "region_caption",
    "region_captions",
    "regional_cross_attention",
    "sampled_tokens",
    "shared_tokens",
    "step_index",
    "story_consistency_processors",
    "token_grid",
]
