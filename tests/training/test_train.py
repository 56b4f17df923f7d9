"""The trainer end to end on tiny models: both stages, overfitting, exact kill-and-resume, bad data, bad config."""

from __future__ import annotations

import glob
import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file

from training.checkpointing import find_checkpoints
from training.dataset import TrainingDataError
from training.tiny_assets import write_story_set, write_tar_shard
from training.train import cli, main


class Crash(RuntimeError):
    pass


def _weights(folder: str) -> dict[str, torch.Tensor]:
    (path,) = glob.glob(os.path.join(folder, "*.safetensors"))
    return load_file(path)


def test_stage1_trains_the_global_branch_and_exports_it(make_args, tiny_assets):
    from lay2story_core.loading import load_pixart_transformer

    args = make_args(stage=1, max_train_steps=3, checkpointing_steps=1, checkpoints_total_limit=2, use_ema=True,
                     ema_decay=0.9)
    summary = main(args)
    assert summary["global_step"] == 3 and len(summary["loss_history"]) == 3
    assert [step for step, _ in find_checkpoints(args.output_dir)] == [2, 3]  # total limit honoured
    trained = load_pixart_transformer(summary["output"])
    ema = load_pixart_transformer(os.path.join(args.output_dir, "transformer_ema"))
    original = load_pixart_transformer(tiny_assets["model"])
    for name, before in original.state_dict().items():
        if name.endswith("proj_out.weight"):
            after = trained.state_dict()[name]
            assert not torch.equal(before, after)
            assert not torch.equal(after, ema.state_dict()[name])  # the EMA lags behind
    assert not os.path.exists(os.path.join(args.output_dir, "subject_branch"))


def test_stage2_trains_the_subject_branch_validates_and_logs(make_args, tiny_assets):
    from lay2story_core.pipelines.loading import load_subject_branch

    args = make_args(max_train_steps=2, validation_steps=2, validation_data=[tiny_assets["val"]],
                     validation_stories=[tiny_assets["story"]], validation_num_inference_steps=2,
                     validation_batches=2, report_to="tensorboard", train_batch_size=2)
    logged = []
    summary = main(args, on_step=lambda state, logs: logged.append(dict(logs)))
    assert summary["global_step"] == 2
    assert {"train/loss", "train/lr", "train/step_time_s", "train/samples_per_s"} <= set(logged[0])
    assert logged[0]["train/samples_per_s"] > 0 and logged[0]["train/lr"] == pytest.approx(1e-3)
    assert set(logged[1]) >= {"val/loss", "val/mse", "val/vb"} and logged[1]["val/loss"] > 0
    frames = glob.glob(os.path.join(args.output_dir, "validation", "step-2", "*.png"))
    assert len(frames) == json.load(open(tiny_assets["story"]))["frames"].__len__() + 1  # frames + contact sheet
    assert glob.glob(os.path.join(args.output_dir, "logs", "**", "events.out.tfevents.*"), recursive=True)
    branch = load_subject_branch(summary["output"])  # the ComfyUI loader's reader
    assert any(block.proj_out.weight.abs().sum() > 0 for block in branch.blocks)  # trained off its zero init
    checkpoint = summary["checkpoint"]
    assert os.path.isdir(os.path.join(checkpoint, "subject_branch"))
    assert not glob.glob(os.path.join(checkpoint, "model*.safetensors"))  # the frozen global branch is not copied
    # stage 2 can start from an exported branch (e.g. to continue on new data)
    again = make_args(subject_branch_path=summary["output"], output_dir=args.output_dir + "-again", max_train_steps=1)
    assert main(again)["global_step"] == 1
    with pytest.raises(ValueError, match="subject_branch_layers: 1 but"):
        main(make_args(subject_branch_path=summary["output"], subject_branch_layers=1))
    # ... and add a box embedding to it (zero-initialised: the first step starts from the exported branch's output)
    boxed = make_args(subject_branch_path=summary["output"], output_dir=args.output_dir + "-boxed", max_train_steps=1,
                      box_embedding=True)
    result = load_subject_branch(main(boxed)["output"])
    assert result.config.box_embedding and result.box_embed.linear_2.weight.abs().sum() > 0  # trained


def test_tiny_model_overfits_two_stories(make_args, tiny_assets):
    """Stage 1 on two stories: the training loss falls clearly and the validation loss on them (fixed noise and
    timesteps) falls at every evaluation."""
    args = make_args(stage=1, train_data=[tiny_assets["two"]], train_batch_size=2, max_train_steps=60,
                     learning_rate=3e-3, caption_dropout=0.0, lr_scheduler="constant", validation_steps=10,
                     validation_data=[tiny_assets["two"]])
    val = []
    history = main(args, on_step=lambda state, logs: val.append(logs["val/loss"]) if "val/loss" in logs else None)
    history = history["loss_history"]
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert len(val) == 6 and all(b < a for a, b in zip(val, val[1:])), val
    assert val[-1] < 0.7 * val[0], val


def _resume_args(make_args, tmp_path, name):
    return make_args(output_dir=str(tmp_path / name), max_train_steps=6, checkpointing_steps=2,
                     gradient_accumulation_steps=2, use_ema=True, ema_decay=0.9, lr_scheduler="linear",
                     lr_warmup_steps=2, caption_dropout=0.3)


def test_killed_run_resumes_exactly(make_args, tmp_path, monkeypatch):
    """6 steps of 2 micro-batches over 6 stories (2 epochs): crash after step 5, or while saving checkpoint 4; each
    resumed run ends with the same weights, EMA and losses as an uninterrupted one."""
    import training.checkpointing as checkpointing

    reference = main(_resume_args(make_args, tmp_path, "straight"))
    want = _weights(reference["output"])
    want_ema = _weights(os.path.join(tmp_path, "straight", "subject_branch_ema"))

    def crash_at(step):
        def on_step(state, logs):
            if state.global_step == step:
                raise Crash(f"killed after step {step}")
        return on_step

    # a. killed after step 5: the last checkpoint is 4, one step is lost and redone
    with pytest.raises(Crash):
        main(_resume_args(make_args, tmp_path, "killed"), on_step=crash_at(5))
    assert [s for s, _ in find_checkpoints(str(tmp_path / "killed"))] == [2, 4]
    args = _resume_args(make_args, tmp_path, "killed")
    args.resume_from_checkpoint = "latest"
    resumed = main(args)
    assert resumed["loss_history"] == reference["loss_history"][4:]
    got = _weights(resumed["output"])
    assert all(torch.equal(got[k], want[k]) for k in want)
    got_ema = _weights(os.path.join(tmp_path, "killed", "subject_branch_ema"))
    assert all(torch.equal(got_ema[k], want_ema[k]) for k in want_ema)

    # b. killed while writing checkpoint 4: the half-written folder is ignored, the run resumes from checkpoint 2
    real_save = checkpointing.save_file

    def dying_save(tensors, path, *a, **k):
        if ".checkpoint-4.tmp" in path:
            raise Crash("killed while saving")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(checkpointing, "save_file", dying_save)
    with pytest.raises(Crash):
        main(_resume_args(make_args, tmp_path, "torn"))
    monkeypatch.setattr(checkpointing, "save_file", real_save)
    assert [s for s, _ in find_checkpoints(str(tmp_path / "torn"))] == [2]
    assert os.path.isdir(tmp_path / "torn" / ".checkpoint-4.tmp")
    args = _resume_args(make_args, tmp_path, "torn")
    args.resume_from_checkpoint = "latest"
    resumed = main(args)
    assert resumed["loss_history"] == reference["loss_history"][2:]
    got = _weights(resumed["output"])
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not os.path.exists(tmp_path / "torn" / ".checkpoint-4.tmp")


def _broken_set(tmp_path, broken: int, total: int = 4) -> str:
    """A story set whose first ``broken`` stories have a corrupt or missing frame."""
    data = tmp_path / "data"
    path = write_story_set(str(data), "bad", total, size=32, seed=5)
    stories = [json.loads(line) for line in open(path, encoding="utf-8")]
    for k in range(broken):
        image = data / stories[k]["frames"][0]["image"]
        if k % 2:
            os.unlink(image)
        else:
            image.write_bytes(b"\x89PNG truncated")
    return path


def test_corrupt_and_missing_samples_are_skipped_and_counted(make_args, tmp_path, caplog, capsys):
    path = _broken_set(tmp_path, 2)
    args = make_args(train_data=[path], num_train_epochs=1, max_train_steps=None, max_skip_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        summary = main(args)
    assert summary["skipped"] == 2 and summary["global_step"] == 2  # 4 batches of 1 story, 2 unreadable
    assert caplog.text.count("skipping story") == 2
    # the CLI's last line reports steps and skips
    argv = ["--stage", "2", "--pretrained_model_name_or_path", args.pretrained_model_name_or_path,
            "--train_data", path, "--output_dir", str(tmp_path / "cli"), "--resolution", "32", "--max_length", "24",
            "--num_train_epochs", "1", "--mixed_precision", "no", "--report_to", "none", "--max_skip_fraction", "0.5"]
    assert cli(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("trained 2 steps, skipped 2 of 4 stories (50%)"), last


def test_too_many_bad_samples_stop_training_and_export_nothing(make_args, tmp_path, capsys):
    path = _broken_set(tmp_path, 2)
    args = make_args(train_data=[path], num_train_epochs=1, max_train_steps=None)  # default max_skip_fraction
    with pytest.raises(TrainingDataError, match=r"max_skip_fraction: 2 of 4 stories .* were skipped") as info:
        main(args)
    assert "bad.jsonl@0" in str(info.value) and "UnidentifiedImageError" in str(info.value)
    assert not os.path.exists(os.path.join(args.output_dir, "subject_branch"))


def test_all_samples_broken_exports_nothing_and_fails_cleanly(make_args, tmp_path, capsys):
    path = _broken_set(tmp_path, 4)
    out = tmp_path / "cli"
    argv = ["--stage", "2", "--pretrained_model_name_or_path", make_args().pretrained_model_name_or_path,
            "--train_data", path, "--output_dir", str(out), "--resolution", "32", "--max_length", "24",
            "--num_train_epochs", "1", "--mixed_precision", "no", "--report_to", "none", "--max_skip_fraction", "1"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no optimisation step ran (4 of 4 stories skipped"), last
    assert "bad.jsonl@0" in last
    assert not (out / "subject_branch").exists() and not (out / ".export.tmp").exists()


def test_a_code_bug_while_loading_is_not_a_skipped_sample(make_args, monkeypatch):
    import training.dataset

    def buggy(*a, **k):
        raise TypeError("a bug, not bad data")

    monkeypatch.setattr(training.dataset, "load_pixels", buggy)
    with pytest.raises(TypeError, match="a bug, not bad data"):
        main(make_args())


def test_streams_tar_shards(make_args, tiny_assets, tmp_path):
    shard = write_tar_shard(tiny_assets["train"], str(tmp_path / "shard-00000.tar"))
    summary = main(make_args(train_data=[shard], max_train_steps=2, train_batch_size=2))
    assert summary["global_step"] == 2 and summary["skipped"] == 0
    with pytest.raises(Exception, match="max_train_steps: required when streaming"):
        main(make_args(train_data=[shard], max_train_steps=None))


def test_bad_config_key_fails_before_any_work(tmp_path, tiny_assets, capsys, monkeypatch):
    import training.train

    monkeypatch.setattr(training.train, "main", lambda *a, **k: pytest.fail("main must not run"))
    config = tmp_path / "bad.yaml"
    out = tmp_path / "never"
    config.write_text(f"stage: 2\npretrained_model_name_or_path: {tiny_assets['model']}\ntrain_data: [x.jsonl]\n"
                      f"output_dir: {out}\ngradient_acumulation_steps: 4\n")
    assert cli(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'gradient_acumulation_steps'" in err and "gradient_accumulation_steps" in err
    assert not out.exists()
