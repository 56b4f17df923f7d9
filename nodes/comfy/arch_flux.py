"""FLUX.1 adapter of the story patch: StoryDiffusion's consistent self-attention on FLUX's joint attention, image
tokens only, under ComfyUI's own samplers.

ComfyUI's ``Flux`` (``comfy/ldm/flux/model.py``, dev/schnell layout: ``double_blocks`` then ``single_blocks``) runs
one joint attention per block over ``txt + img`` tokens (text first; a double block with ``flipped_img_txt`` puts
the image first). Its attention sites, in forward order, are every double block then every single block; the story
settings' ``blocks`` pick among them (``second_half``: the second half of all sites).

How the clone is patched (ComfyUI's documented extension points only):

* a ``dit`` block replacement (``set_model_patch_replace(fn, "dit", "double_block" | "single_block", i)``) on each
  active site calls ComfyUI's own block (``extra["original_block"]``) with a shallow copy of its
  ``transformer_options`` that carries an ``optimized_attention_override``. The block's maths (modulation, QK norm,
  RoPE, MLP) stays ComfyUI's; only its attention call changes. A replacement another pack set on the same site is
  chained (called with our options), a previous story's is replaced.
* a ``WrappersMP.DIFFUSION_MODEL`` wrapper (key ``lay2story_story``) records the call's latent size and text length
  into ``transformer_options`` (:data:`LATENT_KEY`): the image tokens' grid (FLUX's 2x2 patches of the latent, as
  ``Flux.process_img`` computes it) and where they sit in the joint sequence. Recording beats deriving: a token count
  alone does not give the aspect ratio, and Kontext reference tokens follow the image tokens.

In the override (called by ComfyUI's ``wrap_attn`` with ``q/k/v (B, H, L, d)`` after RoPE): only the image tokens
are candidates for sharing (restricted to the characters' boxes when the story has boxes); the core's
:func:`~lay2story_core.consistency.consistent_self_attention` (THE implementation) computes the image queries' story
attention, and the text (and any reference) queries keep their plain joint attention: the rows of ComfyUI's own
attention function's call, bit for bit the plain model's (one extra plain attention per sharing site and step). When
nothing is shared (rate 0, the first step, an inactive site) the plain attention function is called unchanged: a
rate-0 story is bit-for-bit the plain model.

An attention ``mask`` (FLUX conditioning with an attention mask) is not combined with the story mask: such calls
use plain attention and the first one is logged.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

import comfy.patcher_extension
import torch

from lay2story_core.consistency import StoryConsistencyContext, consistent_self_attention

from .story_patch import PATCH_KEY, StoryPatch, diffusion_model_of

logger = logging.getLogger(__name__)

__all__ = ["LATENT_KEY", "apply", "attention_sites", "image_token_grid"]

LATENT_KEY = "lay2story_flux_latent"  # transformer_options: the call's latent height, width, patch size, text length


def attention_sites(diffusion_model) -> list[tuple[str, int]]:
    """FLUX's attention sites in forward order: ``("double_block", i)`` then ``("single_block", i)``."""
    return ([("double_block", i) for i in range(len(diffusion_model.double_blocks))]
            + [("single_block", i) for i in range(len(diffusion_model.single_blocks))])


def image_token_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """The image tokens' grid of a ``height x width`` latent (``Flux.process_img``: padded to whole patches)."""
    return (height + patch_size // 2) // patch_size, (width + patch_size // 2) // patch_size


def apply(clone, patch: StoryPatch) -> None:
    """Patch ``clone`` (a ``MODEL`` whose diffusion model is ComfyUI's ``Flux``) in place with ``patch``'s story
    attention. ``ValueError`` naming ``model`` (not a FLUX layout) or ``blocks`` (a site out of range) before
    anything is patched."""
    model = diffusion_model_of(clone)
    if not all(hasattr(model, name) for name in ("double_blocks", "single_blocks", "patch_size")):
        raise ValueError(f"model: a {type(model).__name__} without FLUX's double_blocks / single_blocks cannot carry "
                         f"a story")
    sites = attention_sites(model)
    active = patch.batch.config.active_blocks(len(sites))  # ValueError naming the blocks input
    image_first = {i: bool(getattr(block, "flipped_img_txt", False)) for i, block in enumerate(model.double_blocks)}
    notes: set[str] = set()  # what this story has logged once already

    _drop_previous_story(clone, sites)
    for site in active:
        kind, index = sites[site]
        first = kind == "double_block" and image_first[index]
        replacement = _block_replacement(patch, site, len(sites), first, notes, _replacement_at(clone, kind, index))
        clone.set_model_patch_replace(replacement, "dit", kind, index)
    clone.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, PATCH_KEY)
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, PATCH_KEY,
                               _record_latent(model.patch_size))
    logger.debug("Lay2Story FLUX: story attention on sites %s of %d", list(active), len(sites))


# --------------------------------------------------------------------------------------------- the patches
def _record_latent(patch_size: int):
    """The ``DIFFUSION_MODEL`` wrapper: the call's latent size and text length into a copy of its options."""

    def record(executor, *args, **kwargs):
        bound = inspect.signature(executor.original).bind(*args, **kwargs)
        x, context = bound.arguments["x"], bound.arguments.get("context")
        options = dict(bound.arguments.get("transformer_options") or {})
        options[LATENT_KEY] = {"height": int(x.shape[-2]), "width": int(x.shape[-1]), "patch_size": patch_size,
                               "text_tokens": int(context.shape[1]) if context is not None else 0}
        bound.arguments["transformer_options"] = options
        return executor(*bound.args, **bound.kwargs)

    return record


def _replacement_at(clone, kind: str, index: int):
    dit = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    return dit.get((kind, index))


def _drop_previous_story(clone, sites: list[tuple[str, int]]) -> None:
    """A story applied to a story-patched MODEL replaces the old story: its replacements are unwound to what they
    chained (another pack's replacement, or none)."""
    for kind, index in sites:
        replacement = _replacement_at(clone, kind, index)
        if not getattr(replacement, "lay2story_story", False):
            continue
        previous = replacement.lay2story_previous
        if previous is not None:
            clone.set_model_patch_replace(previous, "dit", kind, index)
            continue
        options = dict(clone.model_options["transformer_options"])  # as ComfyUI's own setter: copy, then assign
        options["patches_replace"] = {**options["patches_replace"]}
        options["patches_replace"]["dit"] = {k: v for k, v in options["patches_replace"]["dit"].items()
                                             if k != (kind, index)}
        clone.model_options["transformer_options"] = options


def _block_replacement(patch: StoryPatch, site: int, num_sites: int, image_first: bool, notes: set, previous):
    """The ``dit`` replacement of one site: the original block (or ``previous``, another pack's replacement) with
    the story's attention override in its ``transformer_options``. A closure, not an object: ``ModelPatcher.clone``
    deep-copies ``model_options``, which keeps functions as they are (the story is not copied per clone)."""

    def replace(args, extra):
        options = dict(args.get("transformer_options") or {})
        text_tokens = int(args["txt"].shape[1]) if "txt" in args else None  # double blocks know it exactly
        options["optimized_attention_override"] = _story_attention(
            patch, site, num_sites, image_first, text_tokens, notes, options.get("optimized_attention_override"))
        args = {**args, "transformer_options": options}
        return previous(args, extra) if previous is not None else extra["original_block"](args)

    replace.lay2story_story, replace.lay2story_previous = True, previous
    return replace


def _story_attention(patch: StoryPatch, site: int, num_sites: int, image_first: bool, text_tokens: int | None,
                     notes: set, previous):
    """The ``optimized_attention_override`` of one block call (``previous``: an override already in the options,
    which stays the plain attention)."""

    def override(func, *args, **kwargs):
        def plain(*a, **k):
            return previous(func, *a, **k) if previous is not None else func(*a, **k)

        q, k, v, heads = args[:4]
        options = kwargs.get("transformer_options") or {}
        latent = options.get(LATENT_KEY)
        mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
        if mask is not None or latent is None:
            _note(notes, "mask" if mask is not None else "latent",
                  "an attention mask (plain attention on FLUX calls with a mask)" if mask is not None else
                  "no latent size recorded (a FLUX call outside the sampler's diffusion model)")
            return plain(*args, **kwargs)
        skip_reshape = bool(kwargs.get("skip_reshape", False))
        q4, k4, v4 = (_tokens_heads(x, heads, skip_reshape) for x in (q, k, v))
        batch, length = q4.shape[:2]
        grid = image_token_grid(latent["height"], latent["width"], latent["patch_size"])
        start = 0 if image_first else (latent["text_tokens"] if text_tokens is None else text_tokens)
        stop = start + grid[0] * grid[1]
        if stop > length:
            _note(notes, "tokens", f"{length} tokens hold no {grid[0]}x{grid[1]} image grid after {start} text tokens")
            return plain(*args, **kwargs)
        ctx = patch.context(options, batch, grid, q.device)
        if not ctx.uses_consistency(site, num_sites):
            return plain(*args, **kwargs)
        # 1. the image queries: the core's story attention over the joint sequence, image tokens only shared
        out = consistent_self_attention(q4, k4, v4, _joint_context(ctx, length, start, stop), site)
        if out is None:
            return plain(*args, **kwargs)
        # 2. the text (and reference) queries: ComfyUI's own plain joint attention, bit for bit what the plain model
        #    computes (its full call: a call on the text queries alone differs in rounding under chunked kernels)
        rows = torch.cat([torch.arange(0, start), torch.arange(stop, length)]).to(q.device)
        if rows.numel():
            others = _out_tokens_heads(plain(*args, **kwargs), heads, kwargs)
            out = out.index_copy(1, rows, others.index_select(1, rows).to(out.dtype))
        # 3. the layout ComfyUI's attention function returns
        if kwargs.get("skip_output_reshape", False):
            return out.transpose(1, 2)
        return out.reshape(batch, length, -1)

    return override


def _joint_context(ctx: StoryConsistencyContext, length: int, start: int, stop: int) -> StoryConsistencyContext:
    """The call's context over the joint ``length`` tokens (a copy: the cached one is the image grid's): candidates
    are image tokens only (the boxes' tokens when the story has boxes), never text tokens. Readers stay ``None``
    (every query reads the shared tokens: an ``(B, 1, 1, L + E)`` mask, not ``(B, 1, L, L + E)``) since the text
    queries' rows are replaced by plain attention, unless box control restricts the image readers."""
    batch = ctx.group.shape[0]
    candidates = torch.zeros(batch, length, dtype=torch.bool, device=ctx.group.device)
    boxes = ctx.subject_masks is not None and ctx.config.subject_only
    candidates[:, start:stop] = ctx.subject_masks.to(candidates.device) if boxes else True
    readers = None
    if ctx.readers is not None:
        readers = torch.zeros_like(candidates)
        readers[:, start:stop] = ctx.readers.to(readers.device)
    return dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, subject_only=True),
                               subject_masks=candidates, readers=readers)


def _tokens_heads(x: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    """ComfyUI's attention input (``(B, H, L, d)`` with ``skip_reshape``, else ``(B, L, H*d)``) as ``(B, L, H, d)``."""
    if skip_reshape:
        return x.transpose(1, 2)
    return x.unflatten(-1, (heads, -1))


def _out_tokens_heads(x: torch.Tensor, heads: int, kwargs: dict) -> torch.Tensor:
    """ComfyUI's attention output (``(B, H, L, d)`` with ``skip_output_reshape``, else ``(B, L, H*d)``) as
    ``(B, L, H, d)``."""
    if kwargs.get("skip_output_reshape", False):
        return x.transpose(1, 2)
    return x.unflatten(-1, (heads, -1))


def _note(notes: set, key: str, message: str) -> None:
    if key not in notes:
        notes.add(key)
        logger.warning("Lay2Story FLUX: %s", message)
