"""Give a trained PixArt global branch a smaller patch (finer tokens) and keep what it learned, to fine-tune from.

    python -m training.resize_patch --transformer DIR --out DIR [--patch-size 1]

A PixArt token covers ``p x p`` latent cells. Halving ``p`` quadruples the tokens of a frame (the ShapeStory demo: 64
-> 256 tokens for a 64 px frame), so detail finer than a token becomes something a token can hold. Training such a
model from nothing repeats every stage; instead the trained one is resized so that, on latents that are constant over
each old patch, it computes what it computed before, averaged over each old patch (FlexiViT's resize, Beyer et al.
2023, in its simplest case):

1. patch embedding ``Conv2d(C, D, p, stride p)`` -> ``Conv2d(C, D, q, stride q)``: a new patch of the old patch's
   constant input must embed the same, so each new kernel cell sums the old cells it covers;
2. position embedding: PixArt's sin-cos table over the token grid, recomputed by the new config, whose
   ``interpolation_scale`` is multiplied by ``p / q`` so that a new token's position is its old token's, in old
   token units (old token ``i`` covers new positions ``i, i + q/p, ...``);
3. transformer blocks, time and caption embeddings: unchanged (a token's width ``D`` does not change);
4. final projection ``Linear(D, p*p*C_out)`` -> ``Linear(D, q*q*C_out)``: each new output cell takes the mean of the
   old cells it covers (diffusers' unpatchify orders a token's outputs as ``(p, p, C_out)``).

Self-attention over ``(p/q)^2`` copies of each old token (equal up to their position embedding) averages as the old
attention did, so without the position embeddings the resized model's output on such latents is exactly the old
model's, averaged over each old patch (``tests/training/test_resize_patch.py``); with them it starts close (the
ShapeStory demo's global branch, resized to patch 1 and not trained: colour 0.96-1.00, shape 0.47 | 0.44 against 0.61 |
0.61, held-out | train) for fine-tuning at the finer grid (what an hour of it bought:
``training/shapestory/README.md``, "Finer tokens"). Only ``q`` dividing ``p``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel

__all__ = ["main", "parse_args", "resize_patch"]

logger = logging.getLogger(__name__)


def _interpolation_scale(config) -> float:
    """The scale PixArt's constructor uses when the config names none (``max(sample_size // 64, 1)``)."""
    if config.interpolation_scale is not None:
        return float(config.interpolation_scale)
    return float(max(config.sample_size // 64, 1))


@torch.no_grad()
def resize_patch(transformer: PixArtTransformer2DModel, patch_size: int) -> PixArtTransformer2DModel:
    """A copy of ``transformer`` with tokens of ``patch_size`` latent cells (dividing its own), weights carried over
    as the module docstring says. ``ValueError`` naming the field for a size that does not divide."""
    old = int(transformer.config.patch_size)
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1 or old % patch_size:
        raise ValueError(f"patch_size: expected a positive divisor of the model's patch size {old}, "
                         f"got {patch_size!r}")
    factor = old // patch_size
    config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
    config.update(patch_size=patch_size, interpolation_scale=_interpolation_scale(transformer.config) * factor)
    resized = PixArtTransformer2DModel.from_config(config).to(transformer.dtype)
    state = transformer.state_dict()
    # 1. patch embedding (D, C, p, p) -> (D, C, q, q): each new cell sums the factor x factor old cells it covers
    weight = state["pos_embed.proj.weight"]
    d, c = weight.shape[:2]
    state["pos_embed.proj.weight"] = weight.reshape(d, c, patch_size, factor, patch_size, factor).sum((3, 5))
    # 2. position embedding: a buffer the new config recomputes (not in the state dict, persistent=False)
    # 4. final projection (p*p*C_out, D) -> (q*q*C_out, D): each new cell is the mean of the old cells it covers
    out_channels = resized.out_channels
    for name in ("proj_out.weight", "proj_out.bias"):
        value = state[name]
        cells = value.reshape(patch_size, factor, patch_size, factor, out_channels, *value.shape[1:])
        state[name] = cells.mean((1, 3)).reshape(patch_size * patch_size * out_channels, *value.shape[1:])
    missing, unexpected = resized.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "pos_embed.pos_embed"]:
        raise RuntimeError(f"resize_patch: state dict mismatch (missing {missing}, unexpected {unexpected})")
    return resized


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", required=True, help="a PixArtTransformer2DModel save_pretrained folder")
    parser.add_argument("--out", required=True, help="where the resized model is saved (a new folder)")
    parser.add_argument("--patch-size", type=int, default=1,
                        help="the new patch size, dividing the model's (default 1)")
    return parser.parse_args(argv)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)  # noqa: T201 - CLI output: one line naming the option and the value
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        return _fail(f"--out: expected a new or empty folder, got {str(out)!r} (not empty)")
    try:
        transformer = PixArtTransformer2DModel.from_pretrained(args.transformer)
    except (OSError, ValueError) as err:
        return _fail(f"--transformer: cannot load {args.transformer!r} ({type(err).__name__}: {err})")
    try:
        resized = resize_patch(transformer, args.patch_size)
    except ValueError as err:
        return _fail(f"--{err}".replace("patch_size", "patch-size", 1))
    # written beside --out and moved into place whole: an interrupted run leaves no half-written model folder
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        resized.save_pretrained(staging)
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved %s: patch %d -> %d", out, transformer.config.patch_size, args.patch_size)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
