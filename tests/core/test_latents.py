"""LatentNormalization: the one rule between VAE latents and the denoiser's space (diffusers' convention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from lay2story_core.latents import LatentNormalization
from lay2story_core.shapestory import VAE_DIR


def test_scalar_rule_without_statistics():
    norm = LatentNormalization(0.5)
    z = torch.randn(2, 4, 3, 3)
    assert torch.equal(norm.to_model(z), z * 0.5)
    assert torch.allclose(norm.from_model(norm.to_model(z)), z)


def test_per_channel_rule_is_diffusers_sdxl_convention():
    mean, std = (0.1, -0.2, 0.3, 0.0), (1.0, 2.0, 0.5, 4.0)
    norm = LatentNormalization(0.13, mean, std)
    z = torch.randn(3, 4, 5, 6)
    m, s = torch.tensor(mean).view(1, 4, 1, 1), torch.tensor(std).view(1, 4, 1, 1)
    # StableDiffusionXLPipeline: latents = (latents - latents_mean) * scaling_factor / latents_std (encode side)
    assert torch.allclose(norm.to_model(z), (z - m) * 0.13 / s)
    assert torch.allclose(norm.from_model(norm.to_model(z)), z, atol=1e-6)
    # channel_dim for other layouts: (C, h, w) single latents
    assert torch.allclose(norm.to_model(z[0]), norm.to_model(z)[0])


def test_shipped_vae_statistics_make_unit_channels():
    vae = AutoencoderKL.from_pretrained(VAE_DIR)
    norm = LatentNormalization.from_vae(vae)
    assert norm.mean is not None and len(norm.std) == vae.config.latent_channels
    from lay2story_core.shapestory import generate_story, render_story

    images = [im for i in range(12) for im in render_story(generate_story(i))[0]]
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 127.5 - 1
                     for im in images])
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    spread = norm.to_model(z).transpose(0, 1).reshape(4, -1).std(1)
    assert spread.min() > 0.6 and spread.max() < 1.5, spread  # one scalar gave 0.36 .. 1.69


@pytest.mark.parametrize("bad", [dict(scaling_factor=0.0), dict(scaling_factor=1.0, mean=(0.0,)),
                                 dict(scaling_factor=1.0, mean=(0.0,), std=(0.0,)),
                                 dict(scaling_factor=1.0, mean=(0.0, 1.0), std=(1.0,))])
def test_bad_statistics_are_refused(bad):
    with pytest.raises(ValueError):
        LatentNormalization(**bad)


def test_channel_mismatch_names_the_channels():
    norm = LatentNormalization(1.0, (0.0,) * 4, (1.0,) * 4)
    with pytest.raises(ValueError, match="8 channels"):
        norm.to_model(torch.zeros(1, 8, 2, 2))
