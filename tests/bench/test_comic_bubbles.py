"""``bench.comic_bubbles``: the bubble bar on a small ShapeStory sample, and the script's report."""

from __future__ import annotations

import json

from bench.comic_bubbles import BAR, dialogue_story, main, measure


def test_dialogue_stories_have_one_or_two_lines_per_frame():
    story = dialogue_story(3)
    assert story.version == 2 and all(1 <= len(frame.dialogue) <= 2 for frame in story.frames)
    assert dialogue_story(3) == story  # a pure function of the seed


def test_bubbles_keep_off_the_characters_on_a_sample():
    rows = measure(6, "four_panel")
    overall = rows[-1]
    assert overall["characters"] == "all" and overall["bubbles"] >= 30
    assert overall["overlap_character"] <= BAR  # measured 0.002 on 64 stories
    assert overall["overlap_bubble"] == 0 and overall["not_fitted"] == 0
    manga = measure(3, "manga")[-1]
    assert manga["overlap_character"] <= BAR and manga["overlap_bubble"] == 0


def test_the_script_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bubbles.json"
    main(["--quick", "--stories", "2", "--json", str(path)])
    assert "| frames | characters |" in capsys.readouterr().out
    payload = json.loads(path.read_text())
    assert payload["bar"]["passed"] is True and payload["rows"][-1]["overlap_bubble"] == 0
