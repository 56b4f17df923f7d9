"""Scripts that train the tiny frozen ShapeStory components shipped in ``lay2story_core/assets/shapestory/``."""
