"""The bench's comparison picture: one block per story, a row for the ground truth and one per labelled sample."""

from __future__ import annotations

import pytest

from lay2story_core.shapestory import render_story
from lay2story_core.shapestory.picture import comparison_grid
from lay2story_core.shapestory.protocol import stories_with_characters


def test_grid_has_a_row_per_labelled_sample_and_pastes_the_frames():
    stories = stories_with_characters(2, 1, 5, "test")
    truths = [render_story(s)[0] for s in stories]
    rows = [(stories[0], [("layout on", truths[0]), ("layout off", truths[0]), ("training-free", truths[0])]),
            (stories[1], [("layout on", truths[1])])]
    sheet = comparison_grid(rows, scale=2)
    cell = stories[0].width * 2
    one_block = (1 + 3) * (cell + 4)
    assert sheet.height > one_block and sheet.width > cell * (max(s.num_frames for s in stories) + 1)
    two = comparison_grid(rows[:1], scale=2)
    assert sheet.height - two.height == comparison_grid(rows[1:], scale=2).height  # blocks stack by their rows
    with pytest.raises(ValueError, match="rows: need at least one story"):
        comparison_grid([])
