"""Config files: keys are option names, the command line wins, bad keys/values fail naming them, examples parse."""

from __future__ import annotations

import glob
import os

import pytest

from training.config import ConfigError, build_parser, load_config_file, parse_args

BASE = ["--stage", "2", "--pretrained_model_name_or_path", "m", "--train_data", "d.jsonl", "--output_dir", "o"]


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_values_are_used_and_the_command_line_overrides_them(tmp_path):
    path = _write(tmp_path, "stage: 2\npretrained_model_name_or_path: m\ntrain_data: [a.jsonl, b.jsonl]\n"
                            "output_dir: o\nlearning_rate: 1e-4\ngradient_checkpointing: true\nmax_train_steps: 7\n")
    args = parse_args(["--config", path])
    assert args.train_data == ["a.jsonl", "b.jsonl"] and args.learning_rate == 1e-4  # "1e-4" is a YAML string
    assert args.gradient_checkpointing is True and args.max_train_steps == 7
    args = parse_args(["--config", path, "--learning_rate", "3e-5", "--no-gradient_checkpointing", "--train_data",
                       "c.jsonl"])
    assert args.learning_rate == 3e-5 and args.gradient_checkpointing is False and args.train_data == ["c.jsonl"]


def test_stage_default_learning_rates_follow_the_paper():
    assert parse_args(BASE).learning_rate == 1e-5
    assert parse_args([*BASE, "--stage", "1"]).learning_rate == 2e-5
    assert parse_args(BASE).adam_weight_decay == 0.03 and parse_args(BASE).max_grad_norm == 0.01


def test_unknown_key_fails_naming_it_and_suggesting_the_option(tmp_path):
    path = _write(tmp_path, "stage: 2\nlearning_rat: 1.0e-5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat'.*did you mean 'learning_rate'"):
        parse_args(["--config", path, *BASE])


@pytest.mark.parametrize("text, match", [
    ("max_train_steps: ten\n", "max_train_steps: expected an integer"),
    ("max_train_steps: 1.5\n", "max_train_steps: expected an integer"),
    ("use_ema: 'yes'\n", "use_ema: expected true or false"),
    ("lr_scheduler: cosine_annealing\n", "lr_scheduler: 'cosine_annealing' is not one of"),
    ("train_data: []\n", "train_data: expected a non-empty list"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_values_fail_naming_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        parse_args(["--config", _write(tmp_path, text), *BASE])


@pytest.mark.parametrize("argv, match", [
    (["--mask_dropout", "1.5"], "mask_dropout: expected a probability"),
    (["--resolution", "500"], "resolution: expected a multiple of 16"),
    (["--stage", "1", "--subject_branch_layers", "2"], "subject_branch_layers: only used by stage 2"),
    (["--stage", "1", "--box_embedding"], "box_embedding: only used by stage 2"),
    (["--stage", "1", "--subject_loss_weight", "2"], "subject_loss_weight: only used by stage 2"),
    (["--subject_loss_weight", "0"], "subject_loss_weight: expected a finite number > 0"),
    (["--subject_loss_weight", "nan"], "subject_loss_weight: expected a finite number > 0"),
    (["--stage", "1", "--outline_loss_weight", "1"], "outline_loss_weight: only used by stage 2"),
    (["--outline_loss_weight", "-1"], "outline_loss_weight: expected a finite number >= 0"),
    (["--outline_loss_weight", "inf"], "outline_loss_weight: expected a finite number >= 0"),
    (["--feature_cache", "/nonexistent/cache"], "feature_cache: expected an existing folder"),
    (["--validation_steps", "10"], "validation_steps: needs validation_data"),
    (["--resume_from_checkpoint", "/nonexistent/ckpt"], "resume_from_checkpoint"),
])
def test_semantic_checks_name_the_option(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_args([*BASE, *argv])


@pytest.mark.parametrize("argv", [["--timestep_range", "600", "300"], ["--timestep_range", "-1", "300"],
                                  ["--timestep_range", "0", "1001"], ["--timestep_range", "5", "5"]])
def test_timestep_range_must_lie_in_the_schedule(argv):
    with pytest.raises(ConfigError, match=r"timestep_range: expected \[LO, HI\] with 0 <= LO < HI <= num_timesteps"):
        parse_args([*BASE, *argv])


@pytest.mark.parametrize("argv, message", [
    (["--branch_off_share", "1.5"], r"branch_off_share: .*1\.5"),
    (["--branch_off_timestep_range", "300", "900"], r"branch_off_timestep_range: .*only used with branch_off_share"),
    (["--branch_off_share", "0.25", "--branch_off_timestep_range", "900", "300"],
     r"branch_off_timestep_range: expected \[LO, HI\]"),
    (["--stage", "1", "--branch_off_share", "0.25"], r"branch_off_share: .*only used by stage 2"),
])
def test_branch_off_options_are_checked(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args([*BASE, *argv])
    args = parse_args([*BASE, "--branch_off_share", "0.25", "--branch_off_timestep_range", "300", "900"])
    assert args.branch_off_share == 0.25 and args.branch_off_timestep_range == [300, 900]


def test_timestep_range_from_a_config_file(tmp_path):
    assert parse_args(BASE).timestep_range is None
    path = _write(tmp_path, "timestep_range: [300, 900]\n")
    assert parse_args(["--config", path, *BASE]).timestep_range == [300, 900]
    assert parse_args([*BASE, "--timestep_range", "0", "1000"]).timestep_range == [0, 1000]
    with pytest.raises(ConfigError, match="timestep_range: expected a list of 2 values"):
        parse_args(["--config", _write(tmp_path, "timestep_range: 300\n"), *BASE])
    with pytest.raises(ConfigError, match="timestep_range: expected an integer"):
        parse_args(["--config", _write(tmp_path, "timestep_range: [300, 9.5e2]\n"), *BASE])


def test_required_options_and_missing_file():
    with pytest.raises(ConfigError, match="stage: required"):
        parse_args(["--pretrained_model_name_or_path", "m", "--train_data", "d", "--output_dir", "o"])
    with pytest.raises(ConfigError, match="config: file not found"):
        parse_args(["--config", "/nonexistent.yaml", *BASE])


def test_example_configs_parse():
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs")
    names = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    trainer = [n for n in names if not os.path.basename(n).startswith("accelerate_")]
    assert {"stage1.yaml", "stage2.yaml", "tiny_cpu.yaml"} <= {os.path.basename(n) for n in trainer}
    for name in trainer:
        config = load_config_file(name, build_parser())
        assert config["stage"] in (1, 2), name
        assert config["output_dir"] and config["train_data"], name
