"""``training.shapestory_demo assemble``: the trained parts become one loadable pipeline folder; a replacement VAE is
taken only when it encodes exactly as the one both stages learned on (a decoder fine-tune)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.pipelines.loading import load_story_pipeline, save_story_pipeline
from training.shapestory_demo import assemble, main


@pytest.fixture()
def parts(tmp_path):
    pipe = make_pipeline()
    save_story_pipeline(pipe, tmp_path / "model")
    (tmp_path / "stage1").mkdir()
    shutil.copytree(tmp_path / "model" / "transformer", tmp_path / "stage1" / "transformer_ema")
    (tmp_path / "stage2").mkdir()
    shutil.copytree(tmp_path / "model" / "subject_branch", tmp_path / "stage2" / "subject_branch_ema")
    return pipe, tmp_path


def _vae_variant(pipe, folder, prefix: str):
    vae = type(pipe.vae).from_config(pipe.vae.config)
    vae.load_state_dict(pipe.vae.state_dict())
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.startswith(prefix):
                param.add_(0.01)
    vae.save_pretrained(folder)
    return vae


def test_assemble_with_a_decoder_fine_tune(parts):
    pipe, root = parts
    tuned = _vae_variant(pipe, root / "vae_ft", "decoder.")
    out = assemble(root / "model", root / "stage1", root / "stage2", root / "out", vae=root / "vae_ft")
    loaded = load_story_pipeline(out)
    assert all(torch.equal(a, b) for a, b in zip(loaded.vae.state_dict().values(), tuned.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(loaded.transformer.state_dict().values(),
                                                 pipe.transformer.state_dict().values()))
    assert not list(root.glob("out.tmp"))
    assert not [p for p in out.glob("*/config.json") if "_name_or_path" in p.read_text()]


def test_a_vae_that_encodes_differently_is_refused(parts, capsys):
    pipe, root = parts
    _vae_variant(pipe, root / "vae_bad", "encoder.")
    with pytest.raises(ValueError, match="^vae: .* encodes differently"):
        assemble(root / "model", root / "stage1", root / "stage2", root / "out", vae=root / "vae_bad")
    assert not (root / "out").exists()
    assert main(["assemble", "--model", str(root / "model"), "--stage1", str(root / "stage1"), "--stage2",
                 str(root / "stage2"), "--out", str(root / "out2")]) == 0
    assert load_story_pipeline(root / "out2").subject_branch is not None


def test_assemble_takes_a_joint_fine_tunes_global_branch(parts):
    """A stage-2 run with --train_transformer exports transformer/ too: the assembled folder uses it, not stage 1's."""
    pipe, root = parts
    tuned = type(pipe.transformer).from_config(pipe.transformer.config)
    tuned.load_state_dict({k: v + 0.01 for k, v in pipe.transformer.state_dict().items()})
    tuned.save_pretrained(root / "stage2" / "transformer_ema")
    shutil.copytree(root / "model" / "transformer", root / "stage2" / "transformer")  # the raw weights, unused
    loaded = load_story_pipeline(assemble(root / "model", root / "stage1", root / "stage2", root / "out"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.transformer.state_dict().values(),
                                                 tuned.state_dict().values()))


def test_assemble_writes_the_shipped_manifests_declarations(parts):
    """What the demo's lay2story.json declares (name, sampling, what it was trained for) is what assemble writes."""
    import json

    from lay2story_core.cli import EMBEDDED_MODEL
    from lay2story_core.pipelines.manifest import MANIFEST_FILE
    from training.shapestory_demo import demo_trained_for

    pipe, root = parts
    written = json.loads((assemble(root / "model", root / "stage1", root / "stage2", root / "out") / MANIFEST_FILE)
                         .read_text())
    shipped = json.loads((EMBEDDED_MODEL / MANIFEST_FILE).read_text())
    for key in ("format", "version", "name", "components", "sampling", "trained_for"):
        assert written[key] == shipped[key], key
    assert shipped["trained_for"] == demo_trained_for().to_dict()
    assert load_story_pipeline(root / "out").trained_for == demo_trained_for()


def test_data_draws_lone_characters_at_the_box_sizes_asked_for(tmp_path):
    """``data --min-box/--max-box`` (stage 1e's large lone characters): every box side of the training and validation
    stories lies in the range; a range ShapeStory refuses is one line naming the field, exit code 2, nothing
    written."""
    from lay2story_core.story import Story

    assert main(["data", "--out", str(tmp_path / "big"), "--train", "6", "--val", "2", "--seed", "5",
                 "--second-character", "0", "--min-box", "0.7", "--max-box", "0.9"]) == 0
    sides = []
    for shard in sorted((tmp_path / "big").glob("*/*.jsonl")):
        for line in shard.read_text().splitlines():
            story = Story.from_dict(json.loads(line))
            sides += [s.box[2] - s.box[0] for f in story.frames for s in f.subjects]
    assert len(sides) >= 8 and all(0.7 - 1e-6 <= side <= 0.9 + 1e-6 for side in sides), sides

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--out", str(tmp_path / "bad"), "--train", "2", "--min-box", "0.95", "--max-box", "0.9"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "bad").exists()
