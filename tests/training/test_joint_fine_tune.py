"""Stage 2 with ``--train_transformer``: the global branch is fine-tuned with the subject branch (its own learning
rate and EMA), both are exported and checkpointed, and a killed joint run resumes exactly."""

from __future__ import annotations

import glob
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from training.config import ConfigError
from training.modeling import load_components
from training.train import _optimizer, main

PARTS = ("transformer", "transformer_ema", "subject_branch", "subject_branch_ema")


def _weights(folder: str) -> dict[str, torch.Tensor]:
    (path,) = glob.glob(os.path.join(folder, "*.safetensors"))
    return load_file(path)


def _joint(make_args, tmp_path, name: str, **options):
    base = {"output_dir": str(tmp_path / name), "train_transformer": True, "transformer_learning_rate": 1e-4,
            "use_ema": True, "ema_decay": 0.9, "max_train_steps": 4, "checkpointing_steps": 2,
            "lr_scheduler": "linear", "lr_warmup_steps": 1}
    return make_args(**{**base, **options})


def test_joint_run_trains_and_exports_both_branches(make_args, tiny_assets, tmp_path):
    summary = main(_joint(make_args, tmp_path, "joint"))
    out = tmp_path / "joint"
    assert all((out / part).is_dir() for part in PARTS)
    assert all((os.path.isdir(os.path.join(summary["checkpoint"], part))) for part in PARTS)
    start = _weights(os.path.join(tiny_assets["model"], "transformer"))
    tuned, ema = _weights(str(out / "transformer")), _weights(str(out / "transformer_ema"))
    moved = [k for k in start if not torch.equal(start[k], tuned[k])]
    assert len(moved) > len(start) // 2  # the global branch trained, not only a few tensors
    assert any(not torch.equal(tuned[k], ema[k]) for k in moved)  # its EMA lags behind
    # a plain stage-2 run still trains and exports the subject branch only
    plain = make_args(output_dir=str(tmp_path / "plain"), max_train_steps=1)
    main(plain)
    assert not (tmp_path / "plain" / "transformer").exists()


def test_the_global_branch_gets_its_own_learning_rate(make_args):
    args = make_args(train_transformer=True, transformer_learning_rate=1e-4)
    model = load_components(args, torch.device("cpu"), "no", need_text=False, need_vae=False,
                            vae_info=SimpleNamespace(latent_channels=4)).model
    optimizer, _ = _optimizer(args, model, SimpleNamespace(num_processes=1), 10)
    groups = optimizer.param_groups
    assert [g["initial_lr"] for g in groups] == [pytest.approx(1e-3), pytest.approx(1e-4)]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[0] == {id(p) for p in model.subject_branch.parameters()}
    assert ids[1] == {id(p) for p in model.transformer.parameters()}
    frozen = make_args()  # without the flag the global branch is frozen and not in the optimizer
    model = load_components(frozen, torch.device("cpu"), "no", need_text=False, need_vae=False,
                            vae_info=SimpleNamespace(latent_channels=4)).model
    (group,) = _optimizer(frozen, model, SimpleNamespace(num_processes=1), 10)[0].param_groups
    assert not any(p.requires_grad for p in model.transformer.parameters())
    assert {id(p) for p in group["params"]} == {id(p) for p in model.subject_branch.parameters()}


def test_killed_joint_run_resumes_exactly(make_args, tmp_path):
    reference = main(_joint(make_args, tmp_path, "straight"))

    def crash_after_3(state, logs):
        if state.global_step == 3:
            raise RuntimeError("killed after step 3")

    with pytest.raises(RuntimeError, match="killed"):
        main(_joint(make_args, tmp_path, "killed"), on_step=crash_after_3)
    resumed = main(_joint(make_args, tmp_path, "killed", resume_from_checkpoint="latest"))
    assert resumed["loss_history"] == reference["loss_history"][2:]
    for part in PARTS:
        want, got = _weights(str(tmp_path / "straight" / part)), _weights(str(tmp_path / "killed" / part))
        assert all(torch.equal(got[k], want[k]) for k in want), part


def test_resuming_a_checkpoint_of_other_parts_is_one_clear_line(make_args, tmp_path, capsys):
    from training.train import cli

    main(make_args(output_dir=str(tmp_path / "run"), max_train_steps=2, checkpointing_steps=2))
    before = sorted(os.listdir(tmp_path / "run" / "checkpoint-2"))
    args = _joint(make_args, tmp_path, "run", resume_from_checkpoint="latest")
    with pytest.raises(ConfigError, match=r"^resume_from_checkpoint: .* has no transformer/, subject_branch_ema/, "
                                          r"transformer_ema/ "):
        main(args)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoint-2")) == before  # nothing written or removed
    # the CLI: one error line naming the field, exit 2, no traceback
    argv = ["--stage", "2", "--pretrained_model_name_or_path", args.pretrained_model_name_or_path, "--train_data",
            *args.train_data, "--output_dir", str(tmp_path / "run"), "--resolution", "32", "--max_length", "24",
            "--mixed_precision", "no", "--report_to", "none", "--train_transformer", "--use_ema",
            "--resume_from_checkpoint", "latest", "--max_train_steps", "4"]
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: resume_from_checkpoint: "), err
    assert sorted(os.listdir(tmp_path / "run" / "checkpoint-2")) == before

    # the other way round: a joint checkpoint resumed without --train_transformer
    main(_joint(make_args, tmp_path, "joint", max_train_steps=2))
    plain = make_args(output_dir=str(tmp_path / "joint"), use_ema=True, max_train_steps=4,
                      resume_from_checkpoint="latest")
    with pytest.raises(ConfigError, match=r"^resume_from_checkpoint: .* also trained transformer .*train_transformer"):
        main(plain)


@pytest.mark.parametrize("options, field", [
    ({"stage": 1, "train_transformer": True}, "train_transformer"),
    ({"transformer_learning_rate": 1e-4}, "transformer_learning_rate"),
    ({"train_transformer": True, "transformer_learning_rate": -1.0}, "transformer_learning_rate"),
])
def test_joint_options_are_checked(make_args, options, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        make_args(**options)
