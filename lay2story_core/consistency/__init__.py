"""Training-free story consistency (StoryDiffusion-style) for the PixArt global branch."""

from .processors import (
    SECOND_HALF,
    ConsistencyConfig,
    ConsistentSelfAttnProcessor,
    RegionalCrossAttnProcessor,
    StoryConsistencyContext,
    identity_flags,
    story_consistency_processors,
)

__all__ = [
    "SECOND_HALF",
    "ConsistencyConfig",
    "ConsistentSelfAttnProcessor",
    "RegionalCrossAttnProcessor",
    "StoryConsistencyContext",
    "identity_flags",
    "story_consistency_processors",
]
