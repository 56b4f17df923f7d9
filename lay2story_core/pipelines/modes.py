"""The sampling modes, one object each: what a denoising pass prepares and what the model call gets.

Every host (``StoryPipeline`` over diffusers, the ComfyUI sampler over ComfyUI's PixArt), the CLI and the benchmarks
ask a :class:`Mode` instead of comparing mode strings, so a new mode is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AUTO", "MODES", "MODE_NAMES", "Mode", "get_mode", "resolve_mode"]

AUTO = "auto"


@dataclass(frozen=True)
class Mode:
    """One sampling mode.

    Attributes:
        name: the mode's name in the pipeline, CLI and node widgets.
        description: one line for help texts and tooltips.
        uses_layout: boxes and subject captions of the story are resolved (else every frame is its global caption).
        plans_slots: a pass rasterises the subjects to token slots (subject branch or regional captions need them).
        subject_branch: the model call gets :class:`~lay2story_core.models.SubjectInputs` (needs a trained branch).
        references: characters' reference images are encoded and given to the subject branch.
        consistency: the global branch's attention is replaced by the training-free story processors.
    """

    name: str
    description: str
    uses_layout: bool
    plans_slots: bool
    subject_branch: bool
    references: bool
    consistency: bool

    def __str__(self) -> str:
        return self.name


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("lay2story", "trained subject branch: boxes, subject captions, reference images",
             uses_layout=True, plans_slots=True, subject_branch=True, references=True, consistency=False),
        Mode("training_free", "StoryDiffusion-style consistent attention and regional captions on plain PixArt",
             uses_layout=True, plans_slots=True, subject_branch=False, references=False, consistency=True),
        Mode("none", "plain PixArt, frame by frame (the baseline)",
             uses_layout=False, plans_slots=False, subject_branch=False, references=False, consistency=False),
    )
}
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def get_mode(mode: str | Mode, field: str = "mode") -> Mode:
    """The :class:`Mode` named ``mode`` (a ``Mode`` passes through); ``ValueError`` naming ``field`` otherwise."""
    if isinstance(mode, Mode):
        return mode
    found = MODES.get(mode) if isinstance(mode, str) else None
    if found is None:
        raise ValueError(f"{field}: expected one of {MODE_NAMES}, got {mode!r}")
    return found


def resolve_mode(mode: str | Mode | None, has_subject_branch: bool, field: str = "mode") -> Mode:
    """``"auto"``/``None``: ``lay2story`` when a subject branch is there, else ``training_free``. A mode that needs
    a subject branch without one raises ``ValueError`` naming ``field``."""
    if mode is None or mode == AUTO:
        return MODES["lay2story" if has_subject_branch else "training_free"]
    found = get_mode(mode, field)
    if found.subject_branch and not has_subject_branch:
        raise ValueError(f"{field}: {found.name!r} needs a subject branch; load one or use mode='training_free'")
    return found
