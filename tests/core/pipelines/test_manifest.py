"""``lay2story.json``: a model folder's sampling defaults reach every caller that chooses none (the pipeline, the CLI,
the bench); a caller's own values win; a bad manifest fails naming the file and the field; save/load keeps it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_pipeline

from lay2story_core.cli import EMBEDDED_MODEL, main
from lay2story_core.loading import ModelLoadError
from lay2story_core.pipelines import PipelineManifest, SamplingDefaults
from lay2story_core.pipelines.loading import load_story_pipeline, save_story_pipeline

STORY = "stories/story.json"
SIZE = dict(height=16, width=16, output_type="pt", seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny pipeline folder whose manifest recommends 2 steps without guidance."""
    pipe = make_pipeline()
    pipe.sampling_defaults, pipe.model_name = SamplingDefaults(num_inference_steps=2, guidance_scale=1.0), "tiny"
    path = tmp_path_factory.mktemp("pipe") / "p"
    save_story_pipeline(pipe, path)
    return path


def test_save_and_load_keep_the_name_and_the_sampling_defaults(folder, tmp_path):
    data = json.loads((folder / "lay2story.json").read_text())
    assert data["name"] == "tiny" and data["sampling"] == {"num_inference_steps": 2, "guidance_scale": 1.0}
    assert "transformer" in data["components"]
    pipe = load_story_pipeline(folder)
    assert pipe.sampling_defaults == SamplingDefaults(2, 1.0) and pipe.model_name == "tiny"
    pipe.save_pretrained(tmp_path / "again")  # a round trip keeps them
    assert PipelineManifest.read(tmp_path / "again") == PipelineManifest.read(folder)


def test_a_call_without_settings_samples_exactly_with_the_defaults(folder, monkeypatch):
    pipe = load_story_pipeline(folder)
    steps = []
    original = type(pipe.scheduler).set_timesteps
    monkeypatch.setattr(type(pipe.scheduler), "set_timesteps",
                        lambda self, n, *a, **k: (steps.append(n), original(self, n, *a, **k))[1])
    implicit = pipe(STORY, **SIZE).images
    assert set(steps) == {2}
    assert torch.equal(implicit, pipe(STORY, num_inference_steps=2, guidance_scale=1.0, **SIZE).images)
    steps.clear()
    pipe(STORY, num_inference_steps=3, **SIZE)  # a given value wins
    assert set(steps) == {3}
    pipe.sampling_defaults = SamplingDefaults(num_inference_steps=2, guidance_scale=3.0)
    guided = pipe(STORY, **SIZE).images
    assert torch.equal(guided, pipe(STORY, num_inference_steps=2, guidance_scale=3.0, **SIZE).images)
    assert not torch.equal(guided, implicit)  # the default guidance scale is used, not only the steps


def test_no_manifest_means_pixart_settings(folder, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "lay2story.json").unlink()
    assert load_story_pipeline(bare).sampling_defaults == SamplingDefaults(25, 4.5)
    assert PipelineManifest.read(tmp_path) == PipelineManifest()


@pytest.mark.parametrize(("sampling", "message"), [
    ({"num_inference_steps": 0}, r"sampling\.num_inference_steps: expected an integer in 1\.\.1000, got 0"),
    ({"num_inference_steps": 2.5}, r"sampling\.num_inference_steps: .* got 2\.5"),
    ({"guidance_scale": "high"},
     r"sampling\.guidance_scale: expected a finite number >= 0 \(1 or less: no guidance\), got 'high'"),
    ({"guidance_scale": -1}, r"sampling\.guidance_scale: .* got -1"),
    ({"cfg": 2}, r"sampling: unknown key 'cfg'"),
    ([2, 16], r"sampling: expected an object, got list"),
])
def test_a_bad_manifest_names_the_file_and_the_field(folder, tmp_path, sampling, message):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    data = json.loads((bad / "lay2story.json").read_text())
    (bad / "lay2story.json").write_text(json.dumps({**data, "sampling": sampling}))
    with pytest.raises(ModelLoadError, match=message) as info:
        load_story_pipeline(bad)
    assert "lay2story.json" in str(info.value)


def test_an_unreadable_or_foreign_manifest_is_a_load_error(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "lay2story.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable manifest"):
        load_story_pipeline(bad)
    (bad / "lay2story.json").write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ModelLoadError, match="format: expected 'lay2story-pipeline'"):
        load_story_pipeline(bad)


def test_the_cli_uses_the_model_defaults_unless_told(folder, tmp_path, capsys):
    args = ["generate", "--story", STORY, "--model", str(folder), "--height", "16", "--width", "16", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "2", "--cfg", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--cfg", "3"]) == 0

    def read(name):
        with Image.open(tmp_path / name / "frame_000.png") as im:
            return np.asarray(im), json.loads(im.text["lay2story:settings"])

    (a, sa), (b, sb), (c, sc) = read("a"), read("b"), read("c")
    assert (sa["steps"], sa["cfg"]) == (sb["steps"], sb["cfg"]) == (2, 1.0) and np.array_equal(a, b)
    assert (sc["steps"], sc["cfg"]) == (2, 3.0) and not np.array_equal(a, c)


def test_a_bad_cfg_is_one_line_exit_2(folder, tmp_path, capsys):
    rc = main(["generate", "--story", STORY, "--model", str(folder), "--out", str(tmp_path / "o"), "--cfg", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --cfg: expected a finite number >= 0 (1 or less: no guidance), got -1.0"]
    assert not (tmp_path / "o").exists()


def test_the_shipped_demo_recommends_its_measured_settings():
    from training.shapestory_demo import DEMO_SAMPLING

    manifest = PipelineManifest.read(EMBEDDED_MODEL)
    assert manifest.name == "ShapeStory demo" and manifest.sampling == SamplingDefaults.from_dict(DEMO_SAMPLING)


def test_one_steps_rule_names_each_callers_field(folder):
    from lay2story_core.pipelines import check_num_inference_steps

    for field in ("num_inference_steps", "--steps", "steps", "sampling.num_inference_steps"):
        for bad in (0, 1001, 2.5, True, "8"):
            with pytest.raises(ValueError, match=rf"^{field}: expected an integer in 1\.\.1000, got {bad!r}$"):
                check_num_inference_steps(bad, field)
    assert check_num_inference_steps(1000) == 1000
    with pytest.raises(ValueError, match=r"^sampling\.num_inference_steps: expected an integer in 1\.\.1000, got 0$"):
        SamplingDefaults(num_inference_steps=0)


def test_steps_beyond_a_short_schedule_are_one_line_exit_2_and_leave_nothing(folder, tmp_path, capsys):
    short = tmp_path / "short"
    shutil.copytree(folder, short)
    config = json.loads((short / "scheduler" / "scheduler_config.json").read_text())
    (short / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "num_train_timesteps": 50}))
    assert load_story_pipeline(short).max_inference_steps == 50
    rc = main(["generate", "--story", STORY, "--model", str(short), "--out", str(tmp_path / "o"), "--steps", "60",
               "--height", "16", "--width", "16", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --steps: expected an integer in 1..50, got 60"], err
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------------------------------- caption length
def test_the_caption_length_is_saved_and_restored(folder, tmp_path):
    """The manifest records the pipeline's caption length; a load restores it (a folder without the key: the
    checkpoint's, else alpha's 120); a call may still ask for another."""
    assert json.loads((folder / "lay2story.json").read_text())["max_sequence_length"] == 120
    pipe = load_story_pipeline(folder)
    assert pipe.max_sequence_length == 120
    pipe.max_sequence_length = 300
    pipe.save_pretrained(tmp_path / "sigma")
    assert PipelineManifest.read(tmp_path / "sigma").max_sequence_length == 300
    again = load_story_pipeline(tmp_path / "sigma")
    assert again.max_sequence_length == 300
    lengths = []
    encode = again.encode_prompt
    again.encode_prompt = lambda texts, device, max_length: (lengths.append(max_length), encode(texts, device,
                                                                                                 max_length))[1]
    again(STORY, num_inference_steps=1, **SIZE)
    again(STORY, num_inference_steps=1, max_sequence_length=77, **SIZE)
    assert lengths == [300, 77]
    data = json.loads((tmp_path / "sigma" / "lay2story.json").read_text())
    del data["max_sequence_length"]
    (tmp_path / "sigma" / "lay2story.json").write_text(json.dumps(data))
    assert load_story_pipeline(tmp_path / "sigma").max_sequence_length == 120  # a StoryPipeline folder: alpha's


@pytest.mark.parametrize("bad", [0, 1025, 2.5, True, "300"])
def test_a_bad_caption_length_names_the_field(folder, tmp_path, bad):
    broken = tmp_path / "bad"
    shutil.copytree(folder, broken)
    data = json.loads((broken / "lay2story.json").read_text())
    (broken / "lay2story.json").write_text(json.dumps({**data, "max_sequence_length": bad}))
    with pytest.raises(ModelLoadError, match=rf"max_sequence_length: expected an integer in 1\.\.1024 .*got {bad!r}"):
        load_story_pipeline(broken)
    with pytest.raises(ValueError, match=rf"^max_sequence_length: expected an integer in 1\.\.1024 .*got {bad!r}$"):
        load_story_pipeline(folder)(STORY, max_sequence_length=bad, **SIZE)
