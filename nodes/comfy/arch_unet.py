"""The story adapter of ComfyUI's ``UNetModel`` (SD1.x, SD2, SDXL): StoryDiffusion's own bases.

:func:`apply` patches a ``ModelPatcher`` clone through ComfyUI's ``patches_replace`` attention patches only
(``set_model_attn1_replace`` / ``set_model_attn2_replace``), keyed ``(block_name, block_id, transformer_index)`` as
``BasicTransformerBlock.forward`` looks them up; ComfyUI's classes and weights are never touched, so LoRA weight
patches, low-VRAM weight casting and the other packs' patches keep working.

* ``attn1`` (self-attention) of the active sites: StoryDiffusion's consistent self-attention across the story's
  frames (:func:`lay2story_core.consistency.consistent_self_attention`, restricted to the characters' boxes when the
  story has a layout). The sites are every self-attention of the UNet in forward order; ``blocks="second_half"``
  (StoryDiffusion's choice) means the decoder, i.e. every ``output`` site; ``"all"`` or indices into that list.
* ``attn2`` (cross-attention) of every site, when the story has subject captions in boxes: the global caption's
  attention as ComfyUI computes it, then the box tokens of the conditional frames replaced by their region
  caption's attention (:func:`lay2story_core.consistency.region_caption`: the character's identity and the frame
  prompt) (:func:`lay2story_core.consistency.regional_cross_attention`), with the caption projected by
  that layer's own ``to_k`` / ``to_v``.

When a site shares nothing (rate 0, the first step, an inactive site) it runs exactly what ComfyUI's
``CrossAttention`` would have run (``optimized_attention`` with the same arguments, or the replace patch that was
there before), so a story at rate 0 without regional captions is the plain model bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import comfy.ldm.modules.attention as comfy_attention
import torch

from lay2story_core.attention import SubjectSlots, TokenPacking
from lay2story_core.consistency import consistent_self_attention, regional_cross_attention, token_grid

from .story_patch import StoryPatch, diffusion_model_of

logger = logging.getLogger(__name__)

__all__ = ["apply", "attention_sites"]

SiteKey = tuple[str, int, int]  # (block_name, block_id, transformer_index), ComfyUI's patches_replace key


def attention_sites(diffusion_model) -> list[tuple[SiteKey, torch.nn.Module]]:
    """Every ``BasicTransformerBlock`` of a ``UNetModel`` in forward order, with its ``patches_replace`` key."""
    groups = [("input", i, blk) for i, blk in enumerate(diffusion_model.input_blocks)]
    if diffusion_model.middle_block is not None:
        groups.append(("middle", 0, diffusion_model.middle_block))
    groups += [("output", i, blk) for i, blk in enumerate(diffusion_model.output_blocks)]
    sites = []
    for name, number, sequence in groups:
        for layer in sequence:
            if isinstance(layer, comfy_attention.SpatialTransformer):
                sites += [((name, number, t), block) for t, block in enumerate(layer.transformer_blocks)]
    return sites


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict, previous=None):
    """What ComfyUI runs at a site without this patch: the replace patch that was there, else ``CrossAttention``'s
    own ``optimized_attention`` call (looked up at call time, as ``CrossAttention.forward`` does)."""
    if previous is not None:
        return previous(q, k, v, extra_options)
    return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"],
                                               attn_precision=extra_options.get("attn_precision"),
                                               transformer_options=extra_options)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(x.shape[0], x.shape[1], heads, x.shape[-1] // heads)


@dataclass
class _Regional:
    """One patched model's regional-caption state: the region captions (padded, on the CPU) and the token packing
    of each (token grid, conditional rows, device), built once and reused by every layer and step."""

    patch: StoryPatch
    texts: list[str]
    captions: torch.Tensor  # (U, L, C) the region captions' context, zero-padded to the longest
    valid: torch.Tensor | None  # (U, L) bool, or None when every caption has the same length
    plans: dict = field(default_factory=dict)
    moved: dict = field(default_factory=dict)

    @classmethod
    def build(cls, patch: StoryPatch) -> _Regional | None:
        texts = patch.batch.region_captions()
        if not texts:
            return None
        conds = [patch.caption_conds[t].reshape(-1, patch.caption_conds[t].shape[-1]) for t in texts]
        length = max(c.shape[0] for c in conds)
        captions = conds[0].new_zeros(len(conds), length, conds[0].shape[-1])
        valid = torch.zeros(len(conds), length, dtype=torch.bool)
        for i, c in enumerate(conds):
            captions[i, : c.shape[0]] = c
            valid[i, : c.shape[0]] = True
        return cls(patch, texts, captions, None if bool(valid.all()) else valid)

    def plan(self, extra_options: dict, rows: int, grid: tuple[int, int], device: torch.device):
        """``(packing, conditional rows, slot -> caption index)`` of a call, or ``None`` when no conditional frame
        has a captioned box at this grid."""
        cond = self.patch.cond_rows(extra_options, rows)
        key = (grid, tuple(cond), str(device))
        if key not in self.plans:
            frames, index = self.patch.num_frames, {t: i for i, t in enumerate(self.texts)}
            regions = self.patch.batch.caption_regions(grid)
            masks, images, slot_caption = [], [], []
            for image, row in enumerate(cond):
                for text, mask in regions[row % frames]:
                    if bool(mask.any()):
                        masks.append(mask)
                        images.append(image)
                        slot_caption.append(index[text])
            plan = None
            if masks:
                slots = SubjectSlots(torch.stack(masks).to(device), torch.tensor(images, device=device),
                                     torch.zeros(len(masks), dtype=torch.long, device=device))
                plan = (TokenPacking.build(slots, len(cond)), torch.tensor(cond, device=device),
                        torch.tensor(slot_caption, device=device))
            self.plans[key] = plan
        return self.plans[key]

    def context(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (str(device), dtype)
        if key not in self.moved:
            self.moved[key] = (self.captions.to(device=device, dtype=dtype),
                               None if self.valid is None else self.valid.to(device))
        return self.moved[key]


def _self_attention_fn(patch: StoryPatch, site: int, num_sites: int, active: tuple[int, ...], previous):
    def attn1(q, k, v, extra_options):
        batch, tokens = q.shape[:2]
        grid = token_grid(*extra_options["original_shape"][-2:], tokens)
        ctx = patch.context(extra_options, batch, grid, q.device)
        if ctx.uses_consistency(site, num_sites, active):
            heads = extra_options["n_heads"]
            precision = comfy_attention.get_attn_precision(extra_options.get("attn_precision"), q.dtype)
            dtype = precision if precision is not None and precision != q.dtype else q.dtype
            out = consistent_self_attention(*(_heads(x.to(dtype), heads) for x in (q, k, v)), ctx, site)
            if out is not None:
                return out.reshape(batch, tokens, -1).to(q.dtype)
        return plain_attention(q, k, v, extra_options, previous)

    return attn1


def _cross_attention_fn(regional: _Regional, attn2: torch.nn.Module, previous):
    def attn2_replace(q, k, v, extra_options):
        out = plain_attention(q, k, v, extra_options, previous)
        batch, tokens = q.shape[:2]
        regional.patch.batch.chunks_of(batch, "latent_image")
        grid = token_grid(*extra_options["original_shape"][-2:], tokens)
        plan = regional.plan(extra_options, batch, grid, q.device)
        if plan is None:
            return out
        packing, rows, slot_caption = plan
        heads = extra_options["n_heads"]
        # 1. the subject captions through THIS layer's projections (ComfyUI's Linear: LoRA / low-VRAM casts apply)
        captions, valid = regional.context(q.device, q.dtype)
        keys = _heads(attn2.to_k(captions), heads).index_select(0, slot_caption)
        values = _heads(attn2.to_v(captions), heads).index_select(0, slot_caption)
        caption_valid = None if valid is None else valid.index_select(0, slot_caption)
        # 2. box tokens of the conditional frames attend to their subject caption; the others keep the global one
        boxed, covered = regional_cross_attention(_heads(q.index_select(0, rows), heads), keys, values, packing,
                                                  caption_valid)
        out = out.clone()
        out[rows] = torch.where(covered[..., None], boxed.reshape(len(rows), tokens, -1).to(out.dtype), out[rows])
        return out

    return attn2_replace


def _previous(clone, kind: str, key: SiteKey):
    """The replace patch another node installed at a site (ComfyUI looks up the 3-tuple key, then the block)."""
    replace = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})
    return replace.get(key, replace.get(key[:2]))


def _check_captions(patch: StoryPatch, sites) -> None:
    texts = patch.batch.region_captions()
    missing = [t for t in texts if t not in patch.caption_conds]
    if missing:
        raise ValueError(f"clip: the region captions {missing} have no encoded conditioning (encode every region "
                         f"caption of the story, StoryBatch.region_captions(), with the model's CLIP)")
    widths = {int(block.attn2.to_k.in_features) for _, block in sites if block.attn2 is not None}
    for text in texts:
        width = int(patch.caption_conds[text].shape[-1])
        if widths and width not in widths:
            raise ValueError(f"clip: the subject caption {text!r} was encoded to width {width}, but this model's "
                             f"cross-attention takes {sorted(widths)} (conditioning from another CLIP?)")


def apply(clone, patch: StoryPatch) -> None:
    """Patch a ``ModelPatcher`` clone of a ``UNetModel`` in place; ``ValueError`` (naming the node input) before
    anything is patched when the story's settings do not fit this model."""
    sites = attention_sites(diffusion_model_of(clone))
    self_sites = [(key, block) for key, block in sites if not block.disable_self_attn]
    if not self_sites:
        raise ValueError("model: this UNet has no self-attention layer to share story tokens in")
    num_sites = len(self_sites)
    config = patch.batch.config
    if config.blocks is None:  # StoryDiffusion's choice: the decoder
        active = tuple(i for i, (key, _) in enumerate(self_sites) if key[0] == "output")
    else:
        active = config.active_blocks(num_sites)
    regional = None
    if patch.caption_conds is not None and config.regional_captions:
        _check_captions(patch, sites)
        regional = _Regional.build(patch)
    # nothing above patched anything; from here on the clone is patched
    for i in active:
        key = self_sites[i][0]
        clone.set_model_attn1_replace(_self_attention_fn(patch, i, num_sites, active, _previous(clone, "attn1", key)),
                                      *key)
    cross = 0
    if regional is not None:
        for key, block in sites:
            if block.attn2 is not None and not block.switch_temporal_ca_to_sa:
                clone.set_model_attn2_replace(_cross_attention_fn(regional, block.attn2,
                                                                  _previous(clone, "attn2", key)), *key)
                cross += 1
    logger.info("Lay2Story UNet: story attention on %d of %d self-attention sites, regional captions on %d sites",
                len(active), num_sites, cross)
