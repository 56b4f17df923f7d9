"""Token packing for token-sparse masked attention.

Lay2Story's masked attention is ``softmax(QK^T / sqrt(d) + M) V`` with ``M = -inf`` outside the subject. Instead of
materialising ``M`` (``(f*h*w)^2`` for 3D attention), we *gather* the subject tokens into a packed tensor, group them
into segments (a frame's subject, or one character's subject tokens across a whole story), pad the segments to a
common length and run one fused ``scaled_dot_product_attention`` call with a key-padding mask, then scatter back.

Vocabulary used across the package:

* **image**: one latent grid of ``N = gh * gw`` tokens (a story frame, or a reference image in the subject branch);
* **slot**: one subject on one image, given by a boolean token mask ``(N,)``; several slots may share an image
  (several characters in a frame) and may overlap;
* **group**: the 3D-attention group of a slot: all slots of one character in one story (and one CFG half) attend to
  each other, together with that character's reference slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class SubjectSlots:
    """Where the subjects are, on the token grid.

    Attributes:
        masks: ``(S, N)`` bool, slot ``s`` covers token ``n`` of its image. An empty row is allowed (ignored).
        image_index: ``(S,)`` long, the image (batch element) each slot lives on.
        group_index: ``(S,)`` long, the 3D-attention group of each slot (story x character x CFG half).
        boxes: ``(S, 4)`` float, the normalised xyxy box each slot was rasterised from, or ``None`` (slots drawn
            as free masks): the subject branch's box embedding reads it; without it the branch uses the bounding
            box of the slot's tokens.
    """

    masks: torch.Tensor
    image_index: torch.Tensor
    group_index: torch.Tensor
    boxes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.masks.ndim != 2 or self.masks.dtype != torch.bool:
            raise ValueError(f"SubjectSlots.masks: expected a (S, N) bool tensor, got {tuple(self.masks.shape)} "
                             f"{self.masks.dtype}")
        num_slots = self.masks.shape[0]
        for name in ("image_index", "group_index"):
            value = getattr(self, name)
            if value.shape != (num_slots,):
                raise ValueError(f"SubjectSlots.{name}: expected shape ({num_slots},), got {tuple(value.shape)}")
        if self.boxes is not None and (self.boxes.shape != (num_slots, 4) or not self.boxes.is_floating_point()):
            raise ValueError(f"SubjectSlots.boxes: expected a ({num_slots}, 4) float tensor, got "
                             f"{tuple(self.boxes.shape)} {self.boxes.dtype}")

    @property
    def num_slots(self) -> int:
        return self.masks.shape[0]

    @property
    def tokens_per_image(self) -> int:
        return self.masks.shape[1]

    @classmethod
    def one_per_image(cls, masks: torch.Tensor, group_index: torch.Tensor | None = None) -> SubjectSlots:
        """One slot per image (``masks`` is ``(B, N)``); one group unless ``group_index`` says otherwise."""
        num = masks.shape[0]
        device = masks.device
        groups = torch.zeros(num, dtype=torch.long, device=device) if group_index is None else group_index
        return cls(masks.bool(), torch.arange(num, device=device), groups.to(device=device, dtype=torch.long))

    def to(self, device: torch.device | str) -> SubjectSlots:
        boxes = None if self.boxes is None else self.boxes.to(device)
        return SubjectSlots(self.masks.to(device), self.image_index.to(device), self.group_index.to(device), boxes)


def bucket_length(length: int, per_octave: int = 4) -> int:
    """``length`` rounded up to one of ``per_octave`` sizes per power of two (16, 20, 24, 28, 32, 40, ...): at most
    ``1 / per_octave`` padding, and few distinct shapes for ``torch.compile``."""
    if length <= 16:
        return 16
    step = 1 << max(0, (length - 1).bit_length() - 1 - (per_octave.bit_length() - 1))
    return -(-length // step) * step


@dataclass(frozen=True)
class Segments:
    """A partition of ``T`` packed tokens into ``G`` non-empty segments, padded to ``(G, L)``.

    ``pad(x)`` maps ``(T, ...) -> (G, L, ...)`` (padding rows are zero) and ``unpad(y)`` maps back. ``valid`` is the
    ``(G, L)`` key-padding mask, or ``None`` when every segment has the same length (no mask needed). When the
    tokens are already sorted by segment and every segment has the same length (layout off: one full frame per
    slot), ``identity`` is true and ``pad``/``unpad`` are views, not copies.

    ``backend`` names how :func:`~lay2story_core.attention.segment_attention` runs these segments (see
    :mod:`.backends`); ``offsets``/``order`` describe the jagged (unpadded) layout the fused backends use.
    """

    gather_index: torch.Tensor  # (G * L,) index into the packed tokens, T for padding
    unpad_index: torch.Tensor  # (T,) index into the flattened (G * L) padded layout
    valid: torch.Tensor | None  # (G, L) bool or None
    segment_ids: torch.Tensor  # (G,) the original id of each non-empty segment
    num_segments: int
    max_len: int
    order: torch.Tensor | None = None  # (T,) tokens sorted by segment; None when they already are
    offsets: torch.Tensor | None = None  # (G + 1,) start of each segment in the sorted (jagged) layout
    token_segment: torch.Tensor | None = None  # (T,) compact segment [0, G) of each packed token
    identity: bool = False  # sorted and equal lengths: pad/unpad are views
    backend: str = "padded"
    block_mask: object | None = field(default=None, compare=False, repr=False)  # FlexAttention's, when used

    @classmethod
    def from_ids(cls, ids: torch.Tensor, backend: str = "padded", bucket: bool = False) -> Segments:
        """Build the padded layout of packed tokens whose segment ids are ``ids`` (``(T,)`` long, any order).

        ``bucket``: pad the segment length up to :func:`bucket_length` (a few sizes per octave), so compiled code
        sees few distinct shapes; the extra rows are padding like any other (masked keys, dropped queries), and the
        layout always has a mask (one code path for every coverage)."""
        num_tokens = ids.shape[0]
        device = ids.device
        if num_tokens == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return cls(empty, empty, None, empty, 0, 0, None, torch.zeros(1, dtype=torch.long, device=device), empty,
                       True, backend)
        segment_ids, compact = torch.unique(ids, return_inverse=True)  # sorted unique ids, (T,) in [0, G)
        num_segments = segment_ids.shape[0]
        counts = torch.bincount(compact, minlength=num_segments)
        max_len = int(counts.max())
        longest = max_len
        if bucket:
            max_len = bucket_length(max_len)
        order = torch.argsort(compact, stable=True)  # tokens sorted by segment
        starts = torch.cumsum(counts, 0) - counts
        sorted_seg = compact[order]
        position = torch.arange(num_tokens, device=device) - starts[sorted_seg]
        flat = sorted_seg * max_len + position  # (T,) flat padded position of each sorted token
        gather_index = torch.full((num_segments * max_len,), num_tokens, dtype=torch.long, device=device)
        gather_index[flat] = order
        unpad_index = torch.empty(num_tokens, dtype=torch.long, device=device)
        unpad_index[order] = flat
        equal = int(counts.min()) == max_len and longest == max_len and not bucket  # bucketed: always a mask
        valid = None if equal else (gather_index != num_tokens).view(num_segments, max_len)
        is_sorted = bool((order == torch.arange(num_tokens, device=device)).all())
        offsets = torch.cat([starts, counts.sum().view(1)])
        segments = cls(gather_index, unpad_index, valid, segment_ids, num_segments, max_len,
                       None if is_sorted else order, offsets, compact, is_sorted and equal, backend)
        if backend == "flex":
            from .backends import flex_block_mask

            object.__setattr__(segments, "block_mask", flex_block_mask(compact))
        return segments

    def with_backend(self, backend: str) -> Segments:
        """The same layout run by another backend (see :mod:`.backends`)."""
        block_mask = self.block_mask
        if backend == "flex" and block_mask is None and self.num_segments:
            from .backends import flex_block_mask

            block_mask = flex_block_mask(self.token_segment)
        return replace(self, backend=backend, block_mask=block_mask)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, ...) -> (G, L, ...)`` with zero rows for padding (a view when ``identity``)."""
        shape = (self.num_segments, self.max_len, *x.shape[1:])
        if self.identity:
            return x.view(shape)
        out = x.new_zeros((self.num_segments * self.max_len, *x.shape[1:]))
        return out.index_copy_(0, self.unpad_index, x).view(shape)

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        """``(G, L, ...) -> (T, ...)`` (a view when ``identity`` and ``y`` is contiguous)."""
        flat = y.reshape(self.num_segments * self.max_len, *y.shape[2:])
        return flat if self.identity else flat.index_select(0, self.unpad_index)

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, ...)`` in packed order -> sorted by segment (the jagged layout); no copy when already sorted."""
        return x if self.order is None else x.index_select(0, self.order)

    def unsort(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sort`."""
        if self.order is None:
            return x
        return x.new_empty(x.shape).index_copy_(0, self.order, x)


@dataclass(frozen=True)
class TokenPacking:
    """The gather/scatter plan between full token tensors ``(I, N, ...)`` and packed subject tokens ``(T, ...)``.

    Built once per forward pass from :class:`SubjectSlots` and reused by every block and every attention kind.
    """

    token_index: torch.Tensor  # (T,) flat index image * N + n into (I * N)
    token_slot: torch.Tensor  # (T,) slot of each packed token
    token_image: torch.Tensor  # (T,) image of each packed token
    token_group: torch.Tensor  # (T,) 3D group of each packed token
    coverage: torch.Tensor  # (I * N,) how many slots cover each full token (for averaging overlaps)
    num_images: int
    tokens_per_image: int
    slot_segments: Segments  # segments = slots (masked self- and cross-attention)
    group_segments: Segments  # segments = groups (masked 3D self-attention)
    prefix: bool = False  # the packed tokens are the first T full tokens, in order (whole images): no gathers
    token_box: torch.Tensor | None = None  # (T, 4) the box of each packed token's slot (None: slots had no boxes)

    @classmethod
    def build(cls, slots: SubjectSlots, num_images: int, backend: str = "auto", chooser=None,
              bucket: bool = False) -> TokenPacking:
        """Plan the packing of ``slots`` over ``num_images`` images of ``slots.tokens_per_image`` tokens each.

        ``backend`` is the attention backend of both segmentations (``"auto"``: ``"padded"`` on CPU, the
        ``chooser``'s measured pick on CUDA; see :mod:`.backends`). Build it once per denoising pass and pass it in
        (``SubjectInputs.packing``): the slots do not change between steps. ``bucket``: segment lengths padded to
        :func:`bucket_length` (for compiled blocks: a story with similar coverage reuses the compiled code).
        """
        from .backends import resolve_backend

        num_tokens_per_image = slots.tokens_per_image
        if slots.num_slots and int(slots.image_index.max()) >= num_images:
            raise ValueError(f"SubjectSlots.image_index: {int(slots.image_index.max())} >= number of images "
                             f"{num_images}")
        backend = resolve_backend(backend, slots.masks.device, chooser)
        slot_of, token_of = slots.masks.nonzero(as_tuple=True)  # (T,), (T,) sorted by slot then token
        token_image = slots.image_index[slot_of]
        token_index = token_image * num_tokens_per_image + token_of
        coverage = torch.bincount(token_index, minlength=num_images * num_tokens_per_image)
        token_group = slots.group_index[slot_of]
        num_packed = token_index.shape[0]
        prefix = bool((token_index == torch.arange(num_packed, device=token_index.device)).all())
        return cls(
            token_index=token_index,
            token_slot=slot_of,
            token_image=token_image,
            token_group=token_group,
            coverage=coverage,
            num_images=num_images,
            tokens_per_image=num_tokens_per_image,
            slot_segments=Segments.from_ids(slot_of, backend, bucket),
            group_segments=Segments.from_ids(token_group, backend, bucket),
            prefix=prefix,
            token_box=None if slots.boxes is None else slots.boxes.to(slot_of.device).index_select(0, slot_of),
        )

    @property
    def num_tokens(self) -> int:
        return self.token_index.shape[0]

    def box_positions(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """``(T, 4)``: where each packed token sits in its slot's box, ``(u, v, box width, box height)``.

        ``u, v`` are the token centre's coordinates relative to the box (0 at its left/top edge, 1 at its
        right/bottom edge); width and height are the box's, normalised to the image. The box is the slot's own
        (:attr:`SubjectSlots.boxes`) or, for free masks, the bounding box of its tokens' cells.
        """
        token = self.token_index - self.token_image * self.tokens_per_image
        col = (token % grid_width).to(torch.float32)
        row = torch.div(token, grid_width, rounding_mode="floor").to(torch.float32)
        x, y = (col + 0.5) / grid_width, (row + 0.5) / grid_height
        if self.token_box is not None:
            box = self.token_box.to(torch.float32)
        else:  # the cells' bounding box, per slot
            num_slots = int(self.token_slot.max()) + 1 if self.num_tokens else 0
            box = x.new_empty(num_slots, 4)
            cells = torch.stack([col / grid_width, row / grid_height, (col + 1) / grid_width,
                                 (row + 1) / grid_height], dim=1)
            for k, reduce in enumerate(("amin", "amin", "amax", "amax")):
                box[:, k] = box[:, k].scatter_reduce(0, self.token_slot, cells[:, k], reduce, include_self=False)
            box = box.index_select(0, self.token_slot)
        size = box[:, 2:] - box[:, :2]
        # a box smaller than a cell still gets its centre's cell (the rasteriser's rule): measure it as one cell,
        # so its token sits inside it instead of hundreds of box widths away
        cell = size.new_tensor([1.0 / grid_width, 1.0 / grid_height])
        low = torch.minimum(box[:, :2], (box[:, :2] + box[:, 2:]) / 2 - cell / 2)
        size = torch.maximum(size, cell)
        relative = (torch.stack([x, y], dim=1) - low) / size
        return torch.cat([relative, size], dim=1)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``(I, N, ...) -> (T, ...)``: the subject tokens (a token covered by k slots appears k times)."""
        flat = x.reshape(-1, *x.shape[2:])
        return flat[: self.num_tokens] if self.prefix else flat.index_select(0, self.token_index)

    def scatter(self, packed: torch.Tensor, num_images: int | None = None, average: bool = True) -> torch.Tensor:
        """``(T, ...) -> (I', N, ...)``: zeros outside every subject; overlapping slots are averaged (or summed).

        ``num_images`` may be smaller than the packing's image count: packed tokens of images beyond it (reference
        images of the subject branch) are dropped.
        """
        num_out = self.num_images if num_images is None else num_images
        limit = num_out * self.tokens_per_image
        shape = (num_out, self.tokens_per_image, *packed.shape[1:])
        out = packed.new_zeros((self.num_images * self.tokens_per_image, *packed.shape[1:]))
        if self.prefix:  # whole images, one slot per token: a copy, nothing to add or average
            out[: self.num_tokens] = packed
            return out[:limit].view(shape)
        out.index_add_(0, self.token_index, packed)  # no host sync: rows beyond ``limit`` are dropped below
        out = out[:limit]
        if average:
            cover = self.coverage[:limit].clamp(min=1).to(packed.dtype)
            out = out / cover.view(-1, *([1] * (packed.ndim - 1)))
        return out.view(shape)

    def add_into(self, target: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """``target (I', N, ...) += scatter(packed)`` in place, without a full-size temporary when ``prefix``
        (images beyond ``I'`` are dropped, overlaps averaged). Returns ``target``."""
        num_out = target.shape[0]
        flat = target.view(-1, *target.shape[2:])
        if self.prefix:
            rows = min(self.num_tokens, flat.shape[0])
            flat[:rows] += packed[:rows].to(flat.dtype)
            return target
        return target.add_(self.scatter(packed, num_images=num_out).to(target.dtype))
