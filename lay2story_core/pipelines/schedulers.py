"""The samplers offered by the CLI and the nodes, as diffusers schedulers built from a model's scheduler config."""

from __future__ import annotations

import inspect

import diffusers

from .story_pipeline import default_scheduler

# Overrides on top of the model's scheduler config. DDIM and DDPM clip their x_0 estimate to [-1, 1] unless told not
# to (``clip_sample`` defaults to True, and PixArt's DPM-Solver config does not mention it): right for pixel-space
# models, ruinous for latents, whose scaled values run past 1 (measured on the demo: DDIM at 16 steps put 0 of 92
# characters in their boxes, scenes 0.48). DDPM samples with the fixed posterior variance: the pipeline drops the
# learned-sigma channels before the scheduler step.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small"}),
}


def scheduler_name(scheduler) -> str | None:
    """The :data:`SCHEDULERS` name of a scheduler (an instance, or a saved ``scheduler_config.json`` as a dict), or
    ``None`` for a sampler not offered here. A model folder's own scheduler is its default sampler (the CLI without
    ``--scheduler``, the bench); this names it for settings metadata and example workflows."""
    if isinstance(scheduler, dict):
        class_name, config = scheduler.get("_class_name"), scheduler
    else:
        class_name, config = type(scheduler).__name__, scheduler.config
    for name, (expected, overrides) in SCHEDULERS.items():
        variant = overrides.get("algorithm_type")  # DPM-Solver's variants share a class
        if class_name == expected and (variant is None or config.get("algorithm_type") == variant):
            return name
    return None


def scheduler_label(scheduler) -> str:
    """What to call a scheduler instance in settings metadata and report titles: its :func:`scheduler_name`, or its
    class name for a sampler not offered here."""
    return scheduler_name(scheduler) or type(scheduler).__name__


def make_scheduler(name: str, config: dict | None = None):
    """Scheduler ``name`` (a key of :data:`SCHEDULERS`) from ``config`` (default: PixArt's training schedule)."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {tuple(SCHEDULERS)}, got {name!r}")
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    base = dict(config) if config else dict(default_scheduler().config)
    # keep what this class takes: another sampler's settings (DPM-Solver's solver_order, ...) would otherwise ride
    # along in its config and in every folder it is saved to
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls.from_config({k: v for k, v in base.items() if k in accepted}, **overrides)
