"""Token-sparse masked attention (self, cross, 3D across frames) and its dense reference."""

from .backends import BACKENDS, BackendChooser, resolve_backend
from .dense import (
    dense_masked_3d_attention,
    dense_masked_attention,
    dense_masked_cross_attention,
    dense_masked_self_attention,
)
from .masked import (
    masked_3d_attention,
    masked_cross_attention,
    masked_self_attention,
    segment_attention,
    segment_cross_attention,
)
from .packing import Segments, SubjectSlots, TokenPacking

__all__ = [
    "BACKENDS",
    "BackendChooser",
    "resolve_backend",
    "Segments",
    "SubjectSlots",
    "TokenPacking",
    "dense_masked_3d_attention",
    "dense_masked_attention",
    "dense_masked_cross_attention",
    "dense_masked_self_attention",
    "masked_3d_attention",
    "masked_cross_attention",
    "masked_self_attention",
    "segment_attention",
    "segment_cross_attention",
]
