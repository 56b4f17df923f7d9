"""The samplers offered by the CLI and the nodes, as diffusers schedulers built from a model's scheduler config."""

from __future__ import annotations

import diffusers

from .story_pipeline import default_scheduler

SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
}


def make_scheduler(name: str, config: dict | None = None):
    """Scheduler ``name`` (a key of :data:`SCHEDULERS`) from ``config`` (default: PixArt's training schedule)."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {tuple(SCHEDULERS)}, got {name!r}")
    class_name, overrides = SCHEDULERS[name]
    base = dict(config) if config else dict(default_scheduler().config)
    return getattr(diffusers, class_name).from_config(base, **overrides)
