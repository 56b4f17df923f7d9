"""``lay2story_core.devices``: the one device/dtype rule (ComfyUI's node passes its own answers in)."""

from __future__ import annotations

import pytest
import torch

from lay2story_core.devices import pick_device, pick_dtype


def test_auto_prefers_the_hosts_device():
    assert pick_device("auto", preferred="cpu") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_names_the_field():
    with pytest.raises(ValueError, match="^device: 'cuda' was chosen but torch sees no CUDA device"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="^gpu: expected 'auto', 'cpu' or 'cuda"):
        pick_device("tpu", field="gpu")


def test_dtypes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_dtype("auto", cpu) is torch.float32
    assert pick_dtype("auto", cuda, bf16_supported=True) is torch.bfloat16
    assert pick_dtype("auto", cuda, bf16_supported=False) is torch.float16
    assert pick_dtype("bf16", cpu) is torch.bfloat16 and pick_dtype("float16", cpu) is torch.float16
    with pytest.raises(ValueError, match="^precision: expected one of"):
        pick_dtype("int8", cpu)
