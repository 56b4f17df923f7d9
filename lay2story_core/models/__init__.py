"""Lay2Story models: the subject branch and the dual-branch transformer."""

from .lay2story_transformer import Lay2StoryTransformer, SubjectInputs
from .packed_attention import IdentityBank, PackedAttention
from .subject_branch import SubjectBlock, SubjectBranch

__all__ = ["IdentityBank", "Lay2StoryTransformer", "PackedAttention", "SubjectBlock", "SubjectBranch", "SubjectInputs"]
