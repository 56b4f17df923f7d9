"""The safe reader: formats, wrappers, and every way a weights file can be bad (each error names the file)."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from lay2story_core.loading import (
    CorruptFileError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedFormatError,
    load_pixart_transformer,
    load_t5_encoder,
    load_vae,
    read_state_dict,
)
from lay2story_core.loading.state_dict import cast_state_dict, find_prefix, select_prefix

TENSORS = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.ones(4, dtype=torch.float16)}


def assert_tensors(loaded):
    assert set(loaded) == set(TENSORS)
    for key, value in TENSORS.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("plain.safetensors", None),
        ("plain.pth", TENSORS),
        ("wrapped.ckpt", {"state_dict": TENSORS, "global_step": 7, "optimizer": {"lr": 1e-4}}),
        ("model.pt", {"model": TENSORS, "args": {"depth": 28}}),
        ("nested.bin", {"module": {"state_dict": TENSORS}}),
        ("with_meta.pth", dict(TENSORS, epoch=3)),
    ],
)
def test_reads_formats_and_unwraps(tmp_path, name, payload):
    path = tmp_path / name
    if payload is None:
        save_file(TENSORS, str(path))
    else:
        torch.save(payload, path)
    assert_tensors(read_state_dict(path))


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "PixArt-XL-2-512x512.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"PixArt-XL-2-512x512\.safetensors: .*truncated or corrupt"):
        read_state_dict(path)
    path.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        read_state_dict(path)


def test_garbage_and_truncated_pth(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\n" * 40)
    with pytest.raises(CorruptFileError, match=r"garbage\.pth: not a readable PyTorch checkpoint"):
        read_state_dict(garbage)
    cut = tmp_path / "cut.pth"
    torch.save(TENSORS, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=r"cut\.pth"):
        read_state_dict(cut)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": TENSORS, "hparams": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CorruptFileError, match=r"lightning\.ckpt: holds pickled Python objects.*safetensors"):
        read_state_dict(path)


def test_missing_unsupported_and_empty(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"nope\.safetensors: no such file"):
        read_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(ModelNotFoundError, match="is a folder"):
        read_state_dict(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UnsupportedFormatError, match="GGUF"):
        read_state_dict(tmp_path / "m.gguf")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(UnsupportedFormatError, match=r"m\.txt: unknown weights file type '\.txt'"):
        read_state_dict(tmp_path / "m.txt")
    torch.save({"epoch": 1, "note": "no weights"}, tmp_path / "meta.pth")
    with pytest.raises(CorruptFileError, match="holds no tensors"):
        read_state_dict(tmp_path / "meta.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(CorruptFileError, match="holds a list"):
        read_state_dict(tmp_path / "list.pth")


@pytest.mark.parametrize("loader", [load_pixart_transformer, load_t5_encoder, load_vae])
def test_loaders_name_missing_and_corrupt_paths(tmp_path, loader):
    with pytest.raises(ModelNotFoundError, match=r"missing_dir.*no such file or folder.*does not exist either"):
        loader(tmp_path / "missing_dir" / "model.safetensors")
    with pytest.raises(ModelNotFoundError, match=r"weights\.safetensors: no such file or folder"):
        loader(tmp_path / "weights.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CorruptFileError, match=r"bad\.safetensors"):
        loader(tmp_path / "bad.safetensors")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "w.safetensors").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match=r"folder: is neither a model folder.*w\.safetensors"):
        loader(tmp_path / "folder")
    with pytest.raises(ModelLoadError, match="no path given"):
        loader("  ")


def test_prefix_helpers():
    keys = ["model.diffusion_model.x_embedder.proj.weight", "first_stage_model.decoder.conv_in.weight"]
    assert find_prefix(keys, ("x_embedder.proj.weight",)) == "model.diffusion_model."
    assert find_prefix(keys, ("decoder.conv_in.weight",)) == "first_stage_model."
    assert find_prefix(["x_embedder.proj.weight", "ema.x_embedder.proj.weight"], ("x_embedder.proj.weight",)) == ""
    assert find_prefix(["mix_embedder.proj.weight"], ("x_embedder.proj.weight",)) is None
    assert select_prefix({"p.a": 1, "q.b": 2}, "p.") == {"a": 1}


def test_cast_keeps_named_modules_in_fp32():
    sd = {"block.wo.weight": torch.ones(2), "block.wi.weight": torch.ones(2), "ids": torch.ones(2, dtype=torch.long)}
    cast_state_dict(sd, torch.float16, keep_fp32=("wo",))
    assert [sd[k].dtype for k in sd] == [torch.float32, torch.float16, torch.long]


def test_error_messages():
    assert str(ModelNotFoundError("/m/x.pth", "no such file")) == "/m/x.pth: no such file"
    assert str(ModelLoadError("subject branch: no config.json")) == "subject branch: no config.json"
    assert isinstance(CorruptFileError("a", "b"), ValueError)
