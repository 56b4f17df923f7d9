"""``python -m lay2story_core generate --from OUT --redo ...`` on a tiny pipeline folder: kept frames byte for byte,
the redone frame new, added frames, and errors as one line with exit status 2 before any model is loaded."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from tiny_models import make_pipeline

from lay2story_core.cli import main
from lay2story_core.pipelines.loading import save_story_pipeline
from lay2story_core.story import load_story

ARGS = ["--steps", "2", "--height", "16", "--width", "16", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny model folder and a 4-frame story generated with it (seed 5)."""
    root = tmp_path_factory.mktemp("redo")
    save_story_pipeline(make_pipeline(), root / "pipe")
    assert main(["generate", "--story", "stories/story.json", "--out", str(root / "out"), "--model",
                 str(root / "pipe"), "--seed", "5", *ARGS]) == 0
    return root


def frame_bytes(folder) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("frame_*.png"))]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_generate_writes_what_a_redo_needs(finished):
    tensors = load_file(finished / "out" / "latents.safetensors")
    assert set(tensors) == {"latents", "noise"} and tuple(tensors["latents"].shape) == (4, 4, 8, 8)
    settings = json.loads((finished / "out" / "settings.json").read_text())
    assert settings["seed"] == 5 and "identity_frames" in settings


def test_redo_keeps_every_other_frame_byte_for_byte(finished, tmp_path, capsys):
    out = tmp_path / "redone"
    assert main(["generate", "--from", str(finished / "out"), "--redo", "2", "--out", str(out), "--quiet"]) == 0, (
        capsys.readouterr().err)
    before, after = frame_bytes(finished / "out"), frame_bytes(out)
    assert len(after) == 4 and [a == b for a, b in zip(before, after)] == [True, True, False, True]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["frame_seeds"] == [5, 5, 6, 5] and settings["seed"] == 5  # default: one more than used
    old, new = (load_file(f / "latents.safetensors") for f in (finished / "out", out))
    assert old["latents"][[0, 1, 3]].equal(new["latents"][[0, 1, 3]]) and not old["latents"][2].equal(
        new["latents"][2])
    assert (out / "contact_sheet.png").is_file() and load_story(out / "story.json") == load_story(
        finished / "out" / "story.json")
    # again, in place (--out defaults to --from), chained on the redone story, with a chosen seed
    assert main(["generate", "--from", str(out), "--redo", "0", "--seed", "9", "--quiet"]) == 0
    again = frame_bytes(out)
    assert again[1:] == after[1:] and again[0] != after[0]
    assert json.loads((out / "settings.json").read_text())["frame_seeds"] == [9, 5, 6, 5]


def test_insert_and_append_new_frames_from_an_edited_story(finished, tmp_path):
    data = json.loads((finished / "out" / "story.json").read_text())
    extra = {**data["frames"][1], "prompt": "sitting under the tree"}
    data["frames"] = [data["frames"][0], extra, *data["frames"][1:], extra]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    out = tmp_path / "longer"
    assert main(["generate", "--from", str(finished / "out"), "--story", str(edited), "--insert", "1",
                 "--append", "1", "--out", str(out), "--quiet"]) == 0
    before, after = frame_bytes(finished / "out"), frame_bytes(out)
    assert len(after) == 6 and [after[0], *after[2:5]] == before
    assert load_file(out / "latents.safetensors")["latents"].shape[0] == 6


@pytest.fixture
def never_load(monkeypatch):
    """Fail the test if a model is loaded (errors must come first)."""
    import lay2story_core.pipelines.loading as loading

    monkeypatch.setattr(loading, "load_story_pipeline", lambda *a, **k: pytest.fail("loaded before the error"))


@pytest.mark.parametrize(("extra", "needle"), [
    (["--redo", "4"], "--redo: frame 4 is out of range for a story of 4 frames (0..3)"),
    (["--redo", "two"], "--redo: expected frame indices like '2,5'"),
    ([], "--from: name frames to sample again with --redo"),
    (["--redo", "1", "--steps", "3"], "--steps: not used with --from"),
    (["--redo", "1", "--mode", "none"], "--mode: not used with --from"),
    (["--append", "1"], "--append: give the story with the new frames in --story"),
    (["--insert", "x", "--story", "stories/story.json"], "--insert: expected frame numbers like 3 or 3,3"),
    (["--append", "1", "--story", "stories/story.json"], "--story: has 4 frames, expected 5"),
    (["--redo", "1", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
])
def test_errors_are_one_line_before_loading(finished, tmp_path, capsys, never_load, extra, needle):
    assert main(["generate", "--from", str(finished / "out"), "--out", str(tmp_path / "o"), *extra]) == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_folder_without_latents_and_flags_without_from(finished, tmp_path, capsys, never_load):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("story.json", "settings.json", "frame_000.png"):
        (old / name).write_bytes((finished / "out" / name).read_bytes())
    assert main(["generate", "--from", str(old), "--redo", "0"]) == 2
    assert "--from: " in (line := one_error_line(capsys)) and "has no latents.safetensors" in line
    assert main(["generate", "--story", "stories/story.json", "--out", str(tmp_path / "o"), "--redo", "1"]) == 2
    assert "--redo: only with --from" in one_error_line(capsys)
    assert main(["generate", "--out", str(tmp_path / "o")]) == 2
    assert "--story: required (unless --from)" in one_error_line(capsys)
