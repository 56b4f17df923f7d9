"""Training-free story consistency for the PixArt global branch (users with only public PixArt weights).

* :class:`ConsistentSelfAttnProcessor`: StoryDiffusion's *consistent self-attention* (Zhou et al. 2024, "Story-
  Diffusion", Sec. 3.1 and the public ``HVision-NKU/StoryDiffusion`` code, adapted to a DiT): each frame's
  self-attention also sees a random sample (``rate``) of the tokens of the story's other *identity* frames,
  resampled every step, on a configurable set of blocks and steps; optionally only the subjects' tokens are shared.
  Long stories use StoryDiffusion's write/read scheme: identity frames write their sampled keys/values to a bank,
  later frames read them.
* :class:`RegionalCrossAttnProcessor`: tokens inside a captioned character's box attend to that character's region
  caption (:func:`~.box_control.region_caption`: its identity and the frame prompt, the other characters left out;
  token-sparse, :func:`~lay2story_core.attention.segment_cross_attention`); the others keep the global caption.
* Training-free box control (``ConsistencyConfig.box_strength``, :mod:`.box_control`): the first steps' prediction
  composed box by box; the pipeline runs it, these processors run inside each of its calls.

The state of one model call travels as ``cross_attention_kwargs={"story_consistency": StoryConsistencyContext}``
(diffusers forwards only keys named in a processor's ``__call__`` signature; every attention module of the
transformer gets one of these processors while installed, so no processor sees an unexpected key).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attention import TokenPacking, segment_cross_attention
from .box_control import BOX_STRENGTH, check_box_strength

SECOND_HALF = "second_half"  # the user's name for blocks=None (StoryDiffusion's decoder half)


@dataclass(frozen=True)
class ConsistencyConfig:
    """Settings of training-free consistency.

    Args:
        rate: share of each identity frame's (candidate) tokens added to the other frames' keys (StoryDiffusion: 0.5).
        blocks: indices of the global blocks that use consistent self-attention (``None``: the second half, as
            StoryDiffusion uses the decoder half of the UNet; ``"all"``: every block, which a shallow model needs).
        start_step: steps before this one use plain attention (StoryDiffusion: the first step is plain).
        plain_share: share of later (step, block) calls that still use plain attention, drawn deterministically.
        subject_only: when boxes are given, share only the identity frames' subject tokens.
        regional_captions: route the tokens of each captioned box to its character's region caption (identity +
            frame prompt) in cross-attention.
        seed: makes the sampling deterministic.
        box_strength: training-free box control (:mod:`.box_control`), the share of the first steps whose
            prediction is composed box by box; 0 = none (the behaviour before box control, bit for bit).
    """

    rate: float = 0.5
    blocks: tuple[int, ...] | str | None = None
    start_step: int = 1
    plain_share: float = 0.0
    subject_only: bool = True
    regional_captions: bool = True
    seed: int = 0
    box_strength: float = BOX_STRENGTH
    # the user's name for ``blocks`` in errors (``from_user``: the CLI option or node input it came from)
    blocks_field: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate: expected a value in [0, 1], got {self.rate!r}")
        if not 0.0 <= self.plain_share <= 1.0:
            raise ValueError(f"plain_share: expected a value in [0, 1], got {self.plain_share!r}")
        if isinstance(self.blocks, str) and self.blocks != "all":
            raise ValueError(f"blocks: expected block indices, None or 'all', got {self.blocks!r}")
        check_box_strength(self.box_strength)

    @classmethod
    def from_user(cls, rate: float = 0.5, blocks: str = SECOND_HALF, box_strength: float = BOX_STRENGTH, *,
                  rate_field: str = "rate", blocks_field: str = "blocks",
                  box_strength_field: str = "box_strength") -> ConsistencyConfig:
        """The settings a user types (CLI, node): ``rate`` in [0, 1], ``blocks`` as ``"second_half"``
        (StoryDiffusion), ``"all"`` or block indices ``"0,2,5"``, and the box-control strength in [0, 1]. Errors
        name the user's field."""
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"{rate_field}: expected a number in [0, 1], got {rate!r}")
        return cls(rate=float(rate), blocks=cls.parse_blocks(blocks, field=blocks_field),
                   box_strength=check_box_strength(box_strength, box_strength_field), blocks_field=blocks_field)

    @staticmethod
    def parse_blocks(text: str, field: str = "blocks") -> tuple[int, ...] | str | None:
        """``"second_half"`` -> ``None``, ``"all"`` -> ``"all"``, ``"0, 2,5"`` -> ``(0, 2, 5)``."""
        if not isinstance(text, str):
            raise ValueError(f"{field}: expected 'second_half', 'all' or block indices like '0,2,5', got {text!r}")
        value = text.strip().lower()
        if value in ("", SECOND_HALF):
            return None
        if value == "all":
            return "all"
        parts = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"{field}: expected 'second_half', 'all' or block indices like '0,2,5', got {text!r}")
        return tuple(sorted({int(p) for p in parts}))

    def active_blocks(self, num_blocks: int, field: str | None = None) -> tuple[int, ...]:
        """The block indices in use; out-of-range ones raise naming ``field`` (default: :attr:`blocks_field`)."""
        if self.blocks is None:
            return tuple(range(num_blocks // 2, num_blocks))
        if self.blocks == "all":
            return tuple(range(num_blocks))
        bad = [b for b in self.blocks if not 0 <= b < num_blocks]
        if bad:
            raise ValueError(f"{field or self.blocks_field or 'blocks'}: {bad} out of range for a transformer with "
                             f"{num_blocks} blocks")
        return tuple(self.blocks)


@dataclass
class StoryConsistencyContext:
    """Per-call state: which frames are identity frames, how frames group into stories, the step, and the bank.

    Attributes:
        config: the settings.
        step: the denoising step index (sampling is re-drawn per step).
        group: ``(B,)`` story x CFG-half id of each frame; tokens are shared only within a group.
        identity: ``(B,)`` bool, frames whose tokens are shared (the identity frames of a write pass).
        subject_masks: ``(B, N)`` bool candidate tokens per frame (subjects), or ``None`` for all tokens.
        mode: ``"joint"`` (identity frames share among themselves in one call), ``"write"`` (as joint, and store),
            ``"read"`` (frames attend to stored identity tokens of their group).
        bank: stored ``(k, v, group)`` per (step, block) for write/read.
        regional: packing over the conditional frames' subject slots, and the projected subject captions
            ``(S, L, D)`` with their padding mask, for regional cross-attention; or ``None``.
        readers: ``(B, N)`` bool, the tokens that attend to the shared tokens (box control: the frame's boxes, so
            a character's tokens carry to the character and not to the background), or ``None`` for all.
        bank_key: added to the bank's ``(step, block)`` keys, so calls of one step keep apart entries (box control:
            one per character), or ``None``.
    """

    config: ConsistencyConfig
    group: torch.Tensor
    identity: torch.Tensor
    step: int = 0
    subject_masks: torch.Tensor | None = None
    mode: str = "joint"
    bank: dict = field(default_factory=dict)
    regional: tuple[TokenPacking, torch.Tensor, torch.Tensor | None] | None = None
    readers: torch.Tensor | None = None
    bank_key: str | None = None

    def uses_consistency(self, block: int, num_blocks: int, active: tuple[int, ...] | None = None) -> bool:
        """Whether attention site ``block`` of ``num_blocks`` shares tokens in this call (start step, the active
        blocks, ``plain_share``). ``active``: the host's own active sites (a UNet adapter maps "second_half" to its
        decoder), else :meth:`ConsistencyConfig.active_blocks`."""
        cfg = self.config
        if active is None:
            active = cfg.active_blocks(num_blocks)
        if self.step < cfg.start_step or block not in active:
            return False
        if cfg.plain_share > 0:
            return random.Random(hash((cfg.seed, self.step, block))).random() >= cfg.plain_share
        return True

    def generator(self, block: int, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        gen.manual_seed((self.config.seed * 1_000_003 + self.step * 997 + block) % (2**63 - 1))
        return gen


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    return x.view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads)


def _finish(attn, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    out = attn.to_out[1](attn.to_out[0](out.flatten(2).to(residual.dtype)))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class ConsistentSelfAttnProcessor:
    """Self-attention (``attn1``) of global block ``block``: plain, or StoryDiffusion's consistent self-attention."""

    def __init__(self, block: int, num_blocks: int, original) -> None:
        self.block, self.num_blocks, self.original = block, num_blocks, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 story_consistency: StoryConsistencyContext | None = None):
        ctx = story_consistency
        if ctx is None or not ctx.uses_consistency(self.block, self.num_blocks):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        # 1. projections (B, N, H, d)
        q, k, v = (_heads(attn, f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        # 2. the story attention (None: no token to share, plain attention)
        out = consistent_self_attention(q, k, v, ctx, self.block)
        if out is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return _finish(attn, out, hidden_states)


def shared_tokens(ctx: StoryConsistencyContext, k: torch.Tensor, v: torch.Tensor, block: int):
    """The keys/values frames share in this call, ``(k (E, H, d), v (E, H, d), group (E,), owner (E,))``: a fresh
    random sample (``rate``) of the identity frames' (subject) tokens, or the bank's (read); all ``None`` when there
    are none. A write pass stores what it samples."""
    key = (ctx.step, block) if ctx.bank_key is None else (ctx.step, block, ctx.bank_key)
    if ctx.mode == "read":
        return ctx.bank.get(key, (None,) * 4)
    picks = [(frame, idx.to(k.device)) for frame, idx in sampled_tokens(ctx, k.shape[1], block)]
    if not picks:
        return None, None, None, None
    shared_k = torch.cat([k[f, idx] for f, idx in picks])
    shared_v = torch.cat([v[f, idx] for f, idx in picks])
    owner = torch.cat([torch.full((idx.numel(),), f, dtype=torch.long, device=k.device) for f, idx in picks])
    shared = (shared_k, shared_v, ctx.group.to(k.device)[owner], owner)
    if ctx.mode == "write":
        ctx.bank[key] = (shared_k.detach(), shared_v.detach(), shared[2], owner)
    return shared


def sampled_tokens(ctx: StoryConsistencyContext, num_tokens: int, block: int) -> list[tuple[int, torch.Tensor]]:
    """``(frame, sorted token indices)`` each identity frame shares in this (step, block): a ``rate`` share of its
    candidates (its subjects' box tokens with ``subject_only``, else all ``num_tokens``), drawn by the context's
    generator. THE sampling rule: :func:`shared_tokens` and the dense reference both use it."""
    gen = ctx.generator(block, "cpu")
    picks = []
    for frame in ctx.identity.nonzero().flatten().tolist():
        candidates = (ctx.subject_masks[frame].nonzero().flatten().cpu() if ctx.subject_masks is not None
                      and ctx.config.subject_only else torch.arange(num_tokens))
        count = round(ctx.config.rate * candidates.numel())
        if count:
            picks.append((frame, candidates[torch.randperm(candidates.numel(), generator=gen)[:count]].sort().values))
    return picks


def consistent_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: StoryConsistencyContext,
                              block: int) -> torch.Tensor | None:
    """StoryDiffusion's consistent self-attention on any architecture's projected ``q/k/v (B, N, H, d)`` (after
    any normalisation or rotary embedding the host applies): frame ``b`` attends to its own ``N`` tokens plus the
    shared tokens of its group that are not its own. Returns ``(B, N, H, d)``, or ``None`` when nothing is shared
    (the caller runs its plain attention). THE implementation: the diffusers processors, the ComfyUI-native PixArt
    and the SD / SDXL / FLUX patches all call it; :func:`dense_consistent_self_attention` is its reference."""
    batch, tokens = q.shape[:2]
    # 1. the shared tokens (E, H, d) of this step and block
    shared_k, shared_v, shared_group, shared_owner = shared_tokens(ctx, k, v, block)
    if shared_k is None or shared_k.shape[0] == 0:
        return None
    shared_k, shared_v = shared_k.to(k), shared_v.to(v)
    shared_group, shared_owner = shared_group.to(q.device), shared_owner.to(q.device)
    # 2. each frame sees its own tokens + the shared tokens of its group that are not its own: (B, N + E)
    frame_ids = torch.arange(batch, device=q.device)
    allowed = (ctx.group.to(q.device)[:, None] == shared_group[None]) & (frame_ids[:, None] != shared_owner[None])
    if ctx.mode == "read":
        allowed = ctx.group.to(q.device)[:, None] == shared_group[None]
    keys = torch.cat([k, shared_k[None].expand(batch, -1, -1, -1)], dim=1)
    values = torch.cat([v, shared_v[None].expand(batch, -1, -1, -1)], dim=1)
    mask = torch.cat([allowed.new_ones(batch, tokens), allowed], dim=1)[:, None, None, :]
    if ctx.readers is not None:  # box control: only the subjects' own tokens read the shared ones (B, 1, N, N + E)
        readers = ctx.readers.to(q.device)[:, None, :, None]
        mask = torch.cat([mask[..., :tokens].expand(-1, -1, tokens, -1), mask[..., tokens:] & readers], dim=-1)
    # 3. attention (B, H, N, d) -> (B, N, H, d)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)


def dense_consistent_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                    ctx: StoryConsistencyContext, block: int) -> torch.Tensor | None:
    """Reference of :func:`consistent_self_attention` for joint calls: one dense ``(B*N, B*N)`` mask over every
    token of every frame of the batch (a query of frame ``b`` may see all of ``b``'s tokens and the sampled tokens
    of the other identity frames of its group), softmax over the flattened batch. Same samples (same generator)."""
    batch, tokens, heads, dim = q.shape
    picks = sampled_tokens(ctx, tokens, block)
    if not picks:
        return None
    sampled = torch.zeros(batch, tokens, dtype=torch.bool, device=q.device)
    for frame, idx in picks:
        sampled[frame, idx.to(q.device)] = True
    group = ctx.group.to(q.device)
    frame_of = torch.arange(batch, device=q.device).repeat_interleave(tokens)  # (B*N,)
    same_frame = frame_of[:, None] == frame_of[None, :]
    shared = (group[frame_of][:, None] == group[frame_of][None, :]) & sampled.flatten()[None, :] & ~same_frame
    if ctx.readers is not None:
        shared = shared & ctx.readers.to(q.device).flatten()[:, None]
    allowed = same_frame | shared
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
    flat = [x.reshape(batch * tokens, heads, dim).transpose(0, 1) for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*flat, attn_mask=bias)
    return out.transpose(0, 1).reshape(batch, tokens, heads, dim)


class RegionalCrossAttnProcessor:
    """Cross-attention (``attn2``): global caption everywhere, each captioned box's region caption inside it."""

    def __init__(self, original) -> None:
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 story_consistency: StoryConsistencyContext | None = None):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ctx = story_consistency
        if ctx is None or ctx.regional is None or not ctx.config.regional_captions:
            return out
        packing, caption, caption_valid = ctx.regional
        if packing.num_tokens == 0:
            return out
        # 1. box tokens attend to their slot's region caption (S, L, H, d)
        q = _heads(attn, attn.to_q(hidden_states))
        k, v = _heads(attn, attn.to_k(caption.to(q.dtype))), _heads(attn, attn.to_v(caption.to(q.dtype)))
        regional, covered = regional_cross_attention(q, k, v, packing, caption_valid)
        regional = _finish(attn, regional, hidden_states[: packing.num_images])
        # 2. replace the box tokens of the conditional frames
        out = out.clone()
        out[: packing.num_images] = torch.where(covered[..., None], regional, out[: packing.num_images])
        return out


def regional_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packing: TokenPacking,
                             caption_valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Box tokens attend to their region caption: ``q (B, N, H, d)`` of the frames (the first
    ``packing.num_images`` rows are the packed ones), ``k/v (S, L, H, d)`` one caption per slot. Returns
    ``(out (num_images, N, H, d), covered (num_images, N) bool)``: overlapping boxes averaged, tokens outside every
    box zero and not covered (the caller keeps its global-caption attention there). Every host calls this."""
    regional = segment_cross_attention(packing.gather(q), k, v, packing.slot_segments, caption_valid)
    regional = packing.scatter(regional, num_images=packing.num_images)
    return regional, packing.coverage.view(packing.num_images, -1) > 0


@contextmanager
def story_consistency_processors(transformer) -> Iterator[None]:
    """Install the story processors on every attention module of a ``PixArtTransformer2DModel``; restore after.

    Inside the context, pass ``cross_attention_kwargs={"story_consistency": ctx}`` to the model (``ctx=None`` or no
    kwargs: plain PixArt attention).
    """
    originals = dict(transformer.attn_processors)
    num_blocks = len(transformer.transformer_blocks)
    processors = {}
    for name, proc in originals.items():
        block = int(name.split(".")[1])
        if ".attn1." in name:
            processors[name] = ConsistentSelfAttnProcessor(block, num_blocks, proc)
        else:
            processors[name] = RegionalCrossAttnProcessor(proc)
    transformer.set_attn_processor(processors)
    try:
        yield
    finally:
        transformer.set_attn_processor(originals)


def identity_flags(num_frames: int, identity_frames: Sequence[int]) -> torch.Tensor:
    flags = torch.zeros(num_frames, dtype=torch.bool)
    flags[list(identity_frames)] = True
    return flags
