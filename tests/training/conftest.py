"""Fixtures of the trainer tests: a tiny random PixArt pipeline folder and synthetic story sets (no network)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """``{"model", "train", "two", "val", "story", "root"}``: a tiny pipeline folder, JSONL sets of 6, 2 and 2
    stories (32 px) and one story file."""
    import json

    from training.tiny_assets import make_tiny_model, write_story_set

    root = tmp_path_factory.mktemp("trainer_assets")
    model = make_tiny_model(str(root / "model"), seed=0)
    data = root / "data"
    train = write_story_set(str(data), "train", 6, size=32, seed=0)
    two = write_story_set(str(data), "two", 2, size=32, seed=3)
    val = write_story_set(str(data), "val", 2, size=32, seed=7)
    with open(val, encoding="utf-8") as handle:
        story = json.loads(handle.readline())
    for frame in story["frames"]:
        frame["image"] = str(data / frame["image"])
    for character in story["characters"]:
        character["reference"]["image"] = str(data / character["reference"]["image"])
    story_path = data / "story.json"
    story_path.write_text(json.dumps(story), encoding="utf-8")
    return {"root": root, "model": model, "train": train, "two": two, "val": val, "story": str(story_path)}


@pytest.fixture
def make_args(tiny_assets, tmp_path):
    """``make_args(*argv, **options)``: trainer args on the tiny assets (stage 2, CPU, no trackers, quick)."""
    from training.train import parse_args

    def build(*argv: str, **options):
        base = {"stage": 2, "pretrained_model_name_or_path": tiny_assets["model"], "train_data": tiny_assets["train"],
                "output_dir": str(tmp_path / "out"), "resolution": 32, "max_length": 24, "train_batch_size": 1,
                "max_train_steps": 3, "learning_rate": 1e-3, "max_grad_norm": 1.0, "mixed_precision": "no",
                "report_to": "none", "checkpointing_steps": 100, "dataloader_num_workers": 0}
        base.update(options)
        cli = []
        for key, value in base.items():
            if isinstance(value, bool):
                cli.append(f"--{key}" if value else f"--no-{key}")
            elif isinstance(value, (list, tuple)):
                cli += [f"--{key}", *map(str, value)]
            elif value is not None:
                cli += [f"--{key}", str(value)]
        return parse_args([*cli, *argv])

    return build
