"""Data-parallel training on a machine without a GPU: torchrun's processes join one gloo group (not N lone runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from training.train import _launched_without_accelerator_device

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env, expected", [({"WORLD_SIZE": "2"}, True), ({"WORLD_SIZE": "1"}, False), ({}, False),
                                           ({"OMPI_COMM_WORLD_SIZE": "4"}, True)])
def test_launcher_world_size_without_a_gpu_means_cpu_data_parallel(monkeypatch, env, expected):
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    has_gpu = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    assert _launched_without_accelerator_device() is (expected and not has_gpu)


# torch's elastic agent logs "worker group successfully finished" once every worker has exited with code 0, then
# waits (up to 300 s) in its exit barrier on its own TCP store; LOGLEVEL=INFO makes it log that line
_GROUP_SUCCEEDED = "worker group successfully finished"


def _launch(argv, env, timeout: float) -> tuple[int | None, str, str]:
    """Run a launcher in its own session: ``(returncode, stdout, stderr)``. On a hang every Python process of the
    session prints its stacks (faulthandler on SIGABRT) into the returned stderr, and the returncode is ``None``."""
    env = {**env, "PYTHONFAULTHANDLER": "1", "LOGLEVEL": "INFO"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return None, out, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) launch")
def test_torchrun_two_processes_train_one_model(tiny_assets, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(ROOT / "training" / "train.py"), "--stage", "2", "--pretrained_model_name_or_path",
            tiny_assets["model"], "--train_data", tiny_assets["train"], "--output_dir", str(out), "--resolution", "32",
            "--max_length", "24", "--train_batch_size", "1", "--max_train_steps", "2", "--mixed_precision", "no",
            "--report_to", "none", "--dataloader_num_workers", "0", "--box_embedding"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    returncode, stdout, stderr = _launch(argv, env, timeout=240)
    if returncode is None:
        # A hang. Once the agent has seen every worker exit with 0, only torch's launcher is left to hang (most likely
        # in its exit barrier on its TCP store, pytorch/pytorch#69520; twice in full CI suites, never in 75 lone
        # launches beside a CPU load), not the trainer: the run's claims below still hold. Anything earlier is the
        # trainer's hang and fails with every process's stacks.
        assert _GROUP_SUCCEEDED in stderr, f"the two-process run hung; stacks and logs:\n{stderr[-6000:]}"
        warnings.warn(f"torchrun hung after its workers succeeded; stacks:\n{stderr[-3000:]}", stacklevel=1)
    else:
        assert returncode == 0, stderr[-3000:]
    assert "2 process(es)" in stderr  # one data-parallel run of two processes ...
    assert stdout.count("trained 2 steps") == 1  # ... that reports once
    assert "skipped 0 of 4 stories" in stdout  # 2 steps x 2 processes x batch 1, counted over both ranks
    assert (out / "subject_branch" / "config.json").is_file()
