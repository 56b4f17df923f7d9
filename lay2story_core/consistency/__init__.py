"""Training-free story consistency (StoryDiffusion-style) for the PixArt global branch."""

from .processors import (
    ConsistencyConfig,
    ConsistentSelfAttnProcessor,
    RegionalCrossAttnProcessor,
    StoryConsistencyContext,
    identity_flags,
    story_consistency_processors,
)

__all__ = [
    "ConsistencyConfig",
    "ConsistentSelfAttnProcessor",
    "RegionalCrossAttnProcessor",
    "StoryConsistencyContext",
    "identity_flags",
    "story_consistency_processors",
]
