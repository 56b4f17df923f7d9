"""One ``Mode`` object per sampling mode."""

from __future__ import annotations

import pytest

from lay2story_core.pipelines import MODES
from lay2story_core.pipelines.modes import MODE_NAMES, get_mode, resolve_mode


def test_modes_say_what_a_pass_prepares():
    assert MODES == MODE_NAMES == ("lay2story", "training_free", "none")
    lay2story, training_free, none = (get_mode(n) for n in MODE_NAMES)
    assert lay2story.subject_branch and lay2story.references and not lay2story.consistency
    assert training_free.consistency and training_free.plans_slots and not training_free.subject_branch
    assert not (none.uses_layout or none.plans_slots or none.subject_branch or none.consistency)
    assert get_mode(lay2story) is lay2story and str(none) == "none"


def test_auto_and_errors():
    assert resolve_mode("auto", True).name == "lay2story"
    assert resolve_mode(None, False).name == "training_free"
    with pytest.raises(ValueError, match="^mode: 'lay2story' needs a subject branch"):
        resolve_mode("lay2story", False)
    with pytest.raises(ValueError, match="^mode: expected one of"):
        get_mode("magic")
