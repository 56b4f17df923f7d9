"""Tiny components of the real classes, shared by tests (importable: ``tests`` is on pytest's pythonpath)."""

from __future__ import annotations

import torch

TINY_PIXART = {
    # PixArt-alpha 512 layout at toy size: no micro-conditions
    "alpha512": dict(sample_size=8, num_layers=4, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                     out_channels=8, cross_attention_dim=16, caption_channels=12, patch_size=2),
    # PixArt-alpha 1024-MS: resolution/aspect-ratio conditions need sample_size 128 and a width divisible by 3
    "alpha1024ms": dict(sample_size=128, num_layers=4, num_attention_heads=2, attention_head_dim=12, in_channels=4,
                        out_channels=8, cross_attention_dim=24, caption_channels=12, patch_size=2,
                        use_additional_conditions=True),
    # PixArt-Sigma 1024: no micro-conditions, interpolation scale 2
    "sigma": dict(sample_size=128, num_layers=4, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                  out_channels=8, cross_attention_dim=16, caption_channels=12, patch_size=2,
                  use_additional_conditions=False, interpolation_scale=2),
}


def make_pixart(kind: str = "alpha512", seed: int = 0):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(**TINY_PIXART[kind]).eval()

