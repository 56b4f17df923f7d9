"""VAE latents <-> the denoiser's latent space: ONE rule for the trainer, the pipeline and the nodes.

diffusers' convention (``StableDiffusionXLPipeline``, Playground v2.5): a VAE config may carry per-channel
``latents_mean`` / ``latents_std``; then ``model = (z - mean) * scaling_factor / std``, else
``model = z * scaling_factor``. Per-channel statistics matter for small VAEs whose channels have very different
spreads: with one scalar the low-variance channels drown in noise long before the others (their signal-to-noise ratio
is lower by the variance ratio at every timestep), so the denoiser learns them last and worst.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["LatentNormalization"]


@dataclass(frozen=True)
class LatentNormalization:
    """``scaling_factor`` and optional per-channel ``mean`` / ``std`` of a VAE's latents (see the module doc)."""

    scaling_factor: float
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor: expected a positive number, got {self.scaling_factor!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("latents_mean/latents_std: give both or neither")
        if self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"latents_mean/latents_std: {len(self.mean)} vs {len(self.std)} channels")
            if any(not s > 0 for s in self.std):
                raise ValueError(f"latents_std: every entry must be positive, got {self.std!r}")

    @classmethod
    def from_config(cls, config: Mapping | object) -> LatentNormalization:
        """From a VAE config (diffusers ``FrozenDict``/mapping or an object with attributes)."""
        def get(name):
            return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)

        mean, std = get("latents_mean"), get("latents_std")
        return cls(float(get("scaling_factor")), None if mean is None else tuple(float(v) for v in mean),
                   None if std is None else tuple(float(v) for v in std))

    @classmethod
    def from_vae(cls, vae) -> LatentNormalization:
        return cls.from_config(vae.config)

    def _stats(self, like: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        if like.shape[channel_dim] != len(self.mean):
            raise ValueError(f"latents: {like.shape[channel_dim]} channels, the normalisation has {len(self.mean)}")
        shape = [1] * like.ndim
        shape[channel_dim] = len(self.mean)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def to_model(self, latents: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """VAE latents ``z`` -> the denoiser's space."""
        if self.mean is None:
            return latents * self.scaling_factor
        mean, std = self._stats(latents, channel_dim)
        return (latents - mean) * self.scaling_factor / std

    def from_model(self, latents: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """The denoiser's latents -> VAE latents ``z`` (what ``vae.decode`` takes)."""
        if self.mean is None:
            return latents / self.scaling_factor
        mean, std = self._stats(latents, channel_dim)
        return latents * std / self.scaling_factor + mean

    def to_dict(self) -> dict:
        return {"scaling_factor": self.scaling_factor, "latents_mean": None if self.mean is None else list(self.mean),
                "latents_std": None if self.std is None else list(self.std)}

    @staticmethod
    def channel_statistics(latents: Sequence[torch.Tensor] | torch.Tensor) -> tuple[tuple[float, ...], ...]:
        """Per-channel mean and std of ``(N, C, h, w)`` latents (to fill a VAE config's latents_mean/std)."""
        z = torch.cat(list(latents)) if not isinstance(latents, torch.Tensor) else latents
        flat = z.double().transpose(0, 1).reshape(z.shape[1], -1)
        return tuple(round(float(v), 5) for v in flat.mean(1)), tuple(round(float(v), 5) for v in flat.std(1))
