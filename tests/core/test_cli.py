"""``python -m lay2story_core generate`` on a tiny pipeline folder: outputs, metadata, errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from tiny_models import make_pipeline

from lay2story_core.cli import main, write_outputs
from lay2story_core.pipelines.loading import save_story_pipeline
from lay2story_core.story import load_story


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    save_story_pipeline(make_pipeline(), folder)
    return folder


def test_generate_writes_frames_sheet_and_story(tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--story", "stories/story.json", "--out", str(out), "--model", str(model_dir),
                 "--steps", "2", "--height", "16", "--width", "16", "--seed", "5", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 4 and (out / "contact_sheet.png").exists()
    with Image.open(frames[1]) as im:
        assert im.size == (16, 16)
        settings = json.loads(im.text["lay2story:settings"])
        assert settings["seed"] == 5 and settings["frame"] == 1 and settings["mode"] == "lay2story"
        assert json.loads(im.text["lay2story:story"])["frames"][1]["prompt"].startswith("walking")
    assert load_story(out / "story.json") == load_story("stories/story.json").with_layout()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_user_errors_are_one_line_with_exit_2(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "characters": [], "frames": []}')
    assert main(["generate", "--story", str(bad), "--out", str(tmp_path / "o"), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "characters" in err and "Traceback" not in err
    assert main(["generate", "--story", "stories/story.json", "--out", str(tmp_path / "o"),
                 "--model", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["generate", "--story", "stories/story.json", "--out", str(tmp_path / "o"), "--model",
                 str(model_dir), "--reference", "fox"]) == 2
    assert "--reference" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("frame_*.png"))


def test_outputs_are_all_or_nothing(tmp_path):
    class Broken:
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    story = load_story("stories/story.json")
    good = Image.new("RGB", (8, 8))
    with pytest.raises(OSError):
        write_outputs(tmp_path, story, [good, Broken()], {"seed": 0})
    assert list(tmp_path.iterdir()) == []


def test_help_documents_every_option():
    text = subprocess.run([sys.executable, "-m", "lay2story_core", "generate", "--help"], capture_output=True,
                          text=True, check=True).stdout
    for option in ("--story", "--out", "--model", "--mode", "--no-layout", "--reference", "--chunk-size", "--seed"):
        assert option in text


ARGS = ["--steps", "2", "--height", "16", "--width", "16", "--quiet"]


def _run(model_dir, out, *extra):
    return main(["generate", "--story", "stories/story.json", "--out", str(out), "--model", str(model_dir), *ARGS,
                 *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def never_sample(monkeypatch):
    """Fail the test if the pipeline is ever called (errors must come before sampling)."""
    from lay2story_core.pipelines import StoryPipeline

    monkeypatch.setattr(StoryPipeline, "__call__", lambda *a, **k: pytest.fail("sampled before the error"))


def test_out_that_is_a_file_fails_before_sampling(tmp_path, model_dir, capsys, never_sample):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert _run(model_dir, out) == 2
    line = _one_error_line(capsys)
    assert "--out" in line and str(out) in line and "not a folder" in line
    assert out.read_text() == "not a folder"


def test_out_under_a_file_fails_before_sampling(tmp_path, model_dir, capsys, never_sample):
    parent = tmp_path / "file"
    parent.write_text("x")
    assert _run(model_dir, parent / "out") == 2
    assert "--out" in _one_error_line(capsys)


def test_out_not_writable_fails_before_sampling(tmp_path, model_dir, capsys, never_sample, monkeypatch):
    import lay2story_core.cli_output as cli  # the module that makes the output folder

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(cli.tempfile, "mkdtemp", denied)  # root ignores chmod, so the OS refusal is simulated
    assert _run(model_dir, tmp_path / "ro" / "out") == 2
    line = _one_error_line(capsys)
    assert "--out" in line and "Permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_out_in_a_read_only_folder(tmp_path, model_dir, capsys, never_sample):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert _run(model_dir, parent / "out") == 2
        assert "--out" in _one_error_line(capsys)
    finally:
        parent.chmod(0o755)


def test_a_second_run_replaces_the_whole_folder(tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    long_story = load_story("stories/story.json")
    long_story = long_story.__class__.from_dict({**long_story.to_dict(),
                                                 "frames": long_story.to_dict()["frames"] * 3})
    path = tmp_path / "long.json"
    path.write_text(long_story.to_json())
    assert main(["generate", "--story", str(path), "--out", str(out), "--model", str(model_dir), *ARGS]) == 0
    assert (out / "frame_009.png").exists()
    assert _run(model_dir, out) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("frame_*.png")) == [f"frame_{i:03d}.png" for i in range(4)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old folder left


def test_a_failed_swap_keeps_the_old_output_intact(tmp_path, model_dir, capsys, monkeypatch):
    import lay2story_core.cli_output as cli  # the module that swaps the output folder in

    out = tmp_path / "out"
    assert _run(model_dir, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append((src, dst))
        if os.fspath(dst) == os.fspath(out) and ".lay2story-" in os.fspath(src):  # the swap, not the restore
            raise IsADirectoryError(21, "Is a directory", os.fspath(dst))
        return real(src, dst)

    monkeypatch.setattr(cli.os, "replace", failing)
    assert _run(model_dir, out, "--seed", "9") == 2
    assert "--out" in _one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_out_with_foreign_files_is_not_replaced(tmp_path, model_dir, capsys, never_sample):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    assert _run(model_dir, out) == 2
    line = _one_error_line(capsys)
    assert "holiday.jpg" in line
    assert (out / "holiday.jpg").read_bytes() == b"precious"


@pytest.mark.parametrize("steps", ["0", "1001", "3000"])
def test_steps_are_bounded_before_loading(tmp_path, capsys, steps, monkeypatch):
    import lay2story_core.pipelines.loading as loading

    monkeypatch.setattr(loading, "load_story_pipeline", lambda *a, **k: pytest.fail("loaded before the error"))
    assert main(["generate", "--story", "stories/story.json", "--out", str(tmp_path / "o"), "--steps", steps]) == 2
    line = _one_error_line(capsys)
    assert "--steps" in line and steps in line and "1000" in line


def test_wrong_component_weights_are_one_line_exit_2(tmp_path, model_dir, capsys):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(model_dir, folder)
    shutil.copy(folder / "vae" / "diffusion_pytorch_model.safetensors",
                folder / "transformer" / "diffusion_pytorch_model.safetensors")
    assert _run(folder, tmp_path / "o") == 2
    line = _one_error_line(capsys)
    assert "transformer/diffusion_pytorch_model.safetensors" in line and "missing key(s)" in line


def test_ema_keys_in_configs_print_nothing(tmp_path, model_dir, capsys):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(model_dir, folder)
    for name in ("transformer", "subject_branch"):
        config = json.loads((folder / name / "config.json").read_text())
        config.update(decay=0.995, inv_gamma=1.0, optimization_step=3, power=0.5, use_ema_warmup=False)
        (folder / name / "config.json").write_text(json.dumps(config))
    assert _run(folder, tmp_path / "o", "--height", "17") == 2
    line = _one_error_line(capsys)
    assert "height" in line and "decay" not in line


def test_subject_scale_option_reaches_the_pipeline_and_bad_values_are_one_line(tmp_path, capsys):
    from lay2story_core.cli import UserError, _subject_scale

    assert _subject_scale([]) == 1.0
    assert _subject_scale(["0.5"]) == 0.5
    assert _subject_scale(["c0=0", "c1=2"]) == {"c0": 0.0, "c1": 2.0}
    for bad in (["x"], ["0.5", "c0=1"], ["c0=abc"]):
        with pytest.raises(UserError, match="--subject-scale"):
            _subject_scale(bad)
    rc = main(["generate", "--story", "stories/shapestory.json", "--out", str(tmp_path / "o"),
               "--subject-scale", "c0=oops"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [err[0]] and "--subject-scale" in err[0]


def test_device_choice_uses_the_one_device_rule(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    rc = main(["generate", "--story", "stories/shapestory.json", "--out", str(tmp_path / "o"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device" in err and "no CUDA" in err


def test_consistency_options_reach_the_pipeline(tmp_path, model_dir, capsys):
    """``--consistency-rate/--consistency-blocks`` sample exactly what the pipeline gives for that config."""
    import numpy as np

    from lay2story_core.consistency import ConsistencyConfig
    from lay2story_core.pipelines import make_scheduler
    from lay2story_core.pipelines.loading import load_story_pipeline

    args = ["generate", "--story", "stories/story.json", "--model", str(model_dir), "--steps", "2", "--height", "16",
            "--width", "16", "--seed", "3", "--quiet", "--mode", "training_free"]
    assert main([*args, "--out", str(tmp_path / "o"), "--consistency-rate", "1", "--consistency-blocks", "all"]) == 0
    pipe = load_story_pipeline(model_dir)
    pipe.scheduler = make_scheduler("dpmsolver++", pipe.scheduler.config)
    story = load_story("stories/story.json")
    frames = [np.asarray(Image.open(tmp_path / "o" / f"frame_{i:03d}.png")) for i in range(story.num_frames)]
    for config, same in ((ConsistencyConfig(rate=1.0, blocks="all"), True), (ConsistencyConfig(), False)):
        expected = pipe(story, mode="training_free", consistency=config, num_inference_steps=2, height=16, width=16,
                        seed=3).images
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(frames, expected)) == same
    assert json.loads((tmp_path / "o" / "settings.json").read_text())["consistency"] == {
        "rate": 1.0, "blocks": "all", "box_strength": ConsistencyConfig().box_strength}

    for flag, value in (("--consistency-rate", "1.5"), ("--consistency-blocks", "1,x"),
                        ("--consistency-blocks", "0,99")):
        assert main([*args, "--out", str(tmp_path / "bad"), flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and value.split(",")[-1] in err[0], err
        assert not (tmp_path / "bad").exists()


def test_a_sigma_model_samples_with_300_token_captions_unless_told(tmp_path, capsys):
    """A PixArt-Sigma model's captions are cut at 300 tokens (as diffusers' Sigma pipeline and the sampler node
    do), not alpha's 120; ``--max-sequence-length`` chooses, recorded in the settings; a bad value is one line."""
    import numpy as np
    from diffusers import PixArtSigmaPipeline
    from tiny_models import make_pixart, make_t5, make_tokenizer, make_vae

    from lay2story_core.pipelines import default_scheduler
    from lay2story_core.pipelines.loading import load_story_pipeline

    sigma = tmp_path / "sigma"
    pixart = make_pixart("sigma")
    PixArtSigmaPipeline(tokenizer=make_tokenizer(), text_encoder=make_t5(pixart.config.caption_channels),
                        vae=make_vae(), transformer=pixart, scheduler=default_scheduler()).save_pretrained(sigma)
    capsys.readouterr()  # the writers' progress bars
    story = tmp_path / "long.json"
    story.write_text(json.dumps({
        "version": 1, "width": 16, "height": 16, "characters": [{"id": "fox", "identity": "a small red fox"}],
        "frames": [{"prompt": " ".join(["reading a book under a big green tree in the grass at night"] * 12)}]}))
    args = ["generate", "--story", str(story), "--model", str(sigma), "--mode", "none", "--steps", "2", "--seed", "1",
            "--quiet"]
    pipe = load_story_pipeline(sigma)
    assert len(pipe.tokenizer(load_story(story).global_caption(0)).input_ids) > 120
    for extra, tokens in (([], 300), (["--max-sequence-length", "120"], 120)):
        out = tmp_path / f"o{tokens}"
        assert main([*args, "--out", str(out), *extra]) == 0, capsys.readouterr().err
        expected = pipe(str(story), mode="none", num_inference_steps=2, seed=1, max_sequence_length=tokens).images[0]
        assert np.array_equal(np.asarray(Image.open(out / "frame_000.png")), np.asarray(expected))
        assert json.loads((out / "settings.json").read_text())["max_sequence_length"] == tokens
    assert pipe.max_sequence_length == 300
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "o300" / "frame_000.png")),
                              np.asarray(Image.open(tmp_path / "o120" / "frame_000.png")))
    for bad in ("0", "5000"):
        assert main([*args, "--out", str(tmp_path / "bad"), "--max-sequence-length", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: --max-sequence-length: expected an integer in 1..1024 (T5 tokens; PixArt-alpha 120, "
                       f"PixArt-Sigma 300), got {bad}"], err
        assert not (tmp_path / "bad").exists()


def test_box_strength_option_and_the_trained_for_warning(tmp_path, model_dir, capsys, caplog):
    """``--box-strength`` is recorded and checked like the other options; a story the model's lay2story.json was
    not trained for samples, with one warning line (the pipeline's log: stderr outside pytest)."""
    import logging
    import shutil

    from lay2story_core.pipelines.manifest import PipelineManifest
    from lay2story_core.pipelines.trained_for import TrainedFor

    declared = tmp_path / "declared"
    shutil.copytree(model_dir, declared)
    manifest = PipelineManifest.read(declared)
    PipelineManifest(manifest.name, manifest.components, manifest.sampling, manifest.max_sequence_length,
                     TrainedFor(16, 16, ("a", "fox"))).write(declared)
    args = ["generate", "--story", "stories/story.json", "--model", str(declared), *ARGS, "--mode", "training_free"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--out", str(tmp_path / "o"), "--box-strength", "0.25"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "was not trained for this story" in lines[0] and "'wearing'" in lines[0], lines
    settings = json.loads((tmp_path / "o" / "settings.json").read_text())
    assert settings["consistency"]["box_strength"] == 0.25
    assert main([*args, "--out", str(tmp_path / "o2"), "--box-strength", "2"]) == 2
    assert "--box-strength" in _one_error_line(capsys)


def test_auto_layout_option_writes_the_placed_boxes_and_a_redo_draws_with_them(tmp_path, model_dir, capsys):
    """``--no-layout --auto-layout on`` (lay2story mode): story.json gets the boxes the model chose and the settings
    say layout on, so the frames equal a layout-on run of that story.json; ``off`` (and the tiny folder's default,
    which declares no auto layout) keeps the story as given."""
    import numpy as np

    assert _run(model_dir, tmp_path / "auto", "--no-layout", "--auto-layout", "on", "--seed", "5") == 0, \
        capsys.readouterr().err
    placed = load_story(tmp_path / "auto" / "story.json")
    assert all(s.box is not None for f in placed.frames for s in f.subjects)
    settings = json.loads((tmp_path / "auto" / "settings.json").read_text())
    assert settings["layout"] is True and settings["auto_layout"] is True
    assert main(["generate", "--story", str(tmp_path / "auto" / "story.json"), "--out", str(tmp_path / "again"),
                 "--model", str(model_dir), *ARGS, "--seed", "5"]) == 0
    for name in ("frame_000.png", "frame_003.png"):
        with Image.open(tmp_path / "auto" / name) as a, Image.open(tmp_path / "again" / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    for choice in ("off", "model"):
        assert _run(model_dir, tmp_path / choice, "--no-layout", "--auto-layout", choice) == 0
        settings = json.loads((tmp_path / choice / "settings.json").read_text())
        assert settings["layout"] is False and "auto_layout" not in settings
    with pytest.raises(SystemExit) as err:
        _run(model_dir, tmp_path / "bad", "--auto-layout", "maybe")
    assert err.value.code == 2 and "--auto-layout" in capsys.readouterr().err
