"""Data-parallel training on a machine without a GPU: torchrun's processes join one gloo group (not N lone runs)."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) launch")
def test_torchrun_two_processes_train_one_model(tiny_assets, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(ROOT / "training" / "train.py"), "--stage", "2", "--pretrained_model_name_or_path",
            tiny_assets["model"], "--train_data", tiny_assets["train"], "--output_dir", str(out), "--resolution", "32",
            "--max_length", "24", "--train_batch_size", "1", "--max_train_steps", "2", "--mixed_precision", "no",
            "--report_to", "none", "--dataloader_num_workers", "0", "--box_embedding"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stderr  # one data-parallel run of two processes ...
    assert done.stdout.count("trained 2 steps") == 1  # ... that reports once
    assert "skipped 0 of 4 stories" in done.stdout  # 2 steps x 2 processes x batch 1, counted over both ranks
    assert (out / "subject_branch" / "config.json").is_file()
