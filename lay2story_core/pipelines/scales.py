"""Layout strength per story and per character: one rule for the sampler node and the CLI."""

from __future__ import annotations

from ..story import Story

__all__ = ["story_scales"]


def story_scales(story: Story, subject_scale: object, character_scales: object, *, field: str = "subject_scale",
                 characters_field: str = "character_scales") -> float | dict[str, float]:
    """The pipeline's ``subject_scale`` from the node's widgets: the story's scale, times a per-character factor
    from ``"id=factor, id=factor"`` (characters not named: 1)."""
    if isinstance(subject_scale, bool) or not isinstance(subject_scale, (int, float)) or not (
            0.0 <= subject_scale <= 100.0):
        raise ValueError(f"{field}: expected a number in [0, 100], got {subject_scale!r}")
    if not isinstance(character_scales, str):
        raise ValueError(f"{characters_field}: expected text like 'hero=1.2, cat=0.8', got {character_scales!r}")
    factors: dict[str, float] = {}
    for part in (p.strip() for p in character_scales.replace(";", ",").split(",")):
        if not part:
            continue
        char_id, sep, value = (x.strip() for x in part.partition("="))
        try:
            factor = float(value) if sep else None
        except ValueError:
            factor = None
        if factor is None or not 0.0 <= factor <= 100.0:
            raise ValueError(f"{characters_field}: expected 'id=number' (number in [0, 100]), got {part!r}")
        if char_id not in {c.id for c in story.characters}:
            raise ValueError(f"{characters_field}: unknown character {char_id!r} in {part!r} (the story has "
                             f"{[c.id for c in story.characters]})")
        factors[char_id] = factor
    if not factors:
        return float(subject_scale)
    return {c.id: float(subject_scale) * factors.get(c.id, 1.0) for c in story.characters}

