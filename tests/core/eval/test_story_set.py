import json

import pytest
from PIL import Image

from lay2story_core.eval import (
    EvalInputError,
    StoryEntry,
    load_generated_frames,
    load_prompt_set,
    load_stories,
    read_generation_stats,
    save_prompt_set,
)
from lay2story_core.eval.plot import Panel, Series, render_panels


def _set(story_dict, **over):
    data = {"format": "lay2story-prompt-set", "version": 1, "name": "t",
            "stories": [{"name": "one", "category": "c", "story": story_dict}]}
    data.update(over)
    return data


def test_prompt_set_round_trip(tmp_path, story_factory):
    entries = (StoryEntry("one", story_factory(4), "animals"), StoryEntry("two", story_factory(5)))
    save_prompt_set(tmp_path / "set.json", entries, name="t")
    loaded = load_prompt_set(tmp_path / "set.json")
    assert [(e.name, e.category, e.story) for e in loaded] == [(e.name, e.category, e.story) for e in entries]
    assert load_stories(tmp_path) == loaded  # a folder of prompt-set files


def test_prompt_set_errors_name_the_field(tmp_path, story_factory):
    story = story_factory(4).to_dict()
    path = tmp_path / "set.json"
    bad_box = json.loads(json.dumps(story))
    bad_box["frames"][2]["subjects"][0]["box"] = [0.1, 0.1, 1.7, 0.5]
    cases = [
        (_set(story, format="other"), "format"),
        (_set(story, version=2), "version"),
        (_set(story, stories=[]), "stories"),
        (_set(bad_box), "stories[0].story.frames[2].subjects[0].box"),
        (_set(story, stories=[{"name": "a b", "story": story}]), "stories[0].name"),
        (_set(story, stories=[{"name": "a", "story": story}, {"name": "a", "story": story}]), "duplicate"),
        (_set(story, stories=[{"name": "a", "story": story, "extra": 1}]), "unknown key"),
    ]
    for data, needle in cases:
        path.write_text(json.dumps(data))
        with pytest.raises(EvalInputError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            load_prompt_set(path)
    path.write_text("{not json")
    with pytest.raises(EvalInputError, match="invalid JSON at line 1"):
        load_prompt_set(path)


def test_load_stories_single_file_and_duplicates(tmp_path, story_factory):
    (tmp_path / "hero.json").write_text(story_factory(4).to_json())
    [entry] = load_stories(tmp_path / "hero.json")
    assert entry.name == "hero" and entry.story.num_frames == 4
    save_prompt_set(tmp_path / "set.json", (StoryEntry("hero", story_factory(4)),), name="t")
    with pytest.raises(EvalInputError, match="duplicate story name 'hero'"):
        load_stories(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .json"):
        load_stories(tmp_path / "empty")


def test_generated_frames_and_stats(tmp_path):
    folder = tmp_path / "gen" / "s"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"frame_{i:03d}.png")
    (folder / "notes.txt").write_text("ignored")
    frames = load_generated_frames(tmp_path / "gen", "s", 3)
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 1, 2]
    with pytest.raises(EvalInputError, match="frame_003"):
        load_generated_frames(tmp_path / "gen", "s", 4)
    with pytest.raises(EvalInputError, match="has 2 frames but the folder has 3"):
        load_generated_frames(tmp_path / "gen", "s", 2)
    Image.new("RGB", (8, 8)).save(folder / "frame_000.jpg")
    with pytest.raises(EvalInputError, match="two files for frame 0"):
        load_generated_frames(tmp_path / "gen", "s", 3)
    assert read_generation_stats(folder) is None
    (folder / "stats.json").write_text(json.dumps({"seconds": 3, "peak_memory_bytes": 10}))
    assert read_generation_stats(folder) == {"seconds": 3.0, "peak_memory_bytes": 10}
    (folder / "stats.json").write_text(json.dumps({"seconds": -1}))
    with pytest.raises(EvalInputError, match="seconds"):
        read_generation_stats(folder)


def test_pil_plot_renders(tmp_path):
    panels = [Panel("t", "frames", "s", (Series("a", (4, 8), (1.0, 2.0)), Series("b", (4, 8), (0.1, 5.0))),
                    log_y=True),
              Panel("m", "frames", "MB", (Series("a", (4,), (3.0,)),))]
    assert render_panels(panels, tmp_path / "p.png", backend="pil") == "pil"
    with Image.open(tmp_path / "p.png") as img:
        assert img.size == (1120, 380)
        colours = {c for _, c in img.getcolors(1 << 20)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # both series drawn
    with pytest.raises(ValueError, match="finite"):
        Series("x", (1,), (float("nan"),))
    with pytest.raises(ValueError, match="panels"):
        render_panels([], tmp_path / "q.png")
