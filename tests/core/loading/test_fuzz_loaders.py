"""Fuzzed weights: random truncations, key renames, dropped keys and reshaped tensors of tiny checkpoints (single
files and model folders). Each load either succeeds (the file was left intact) or raises a ModelLoadError; no other
exception type escapes, and no half-loaded model (meta tensors) is returned."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tiny_models import make_pixart, make_t5, make_vae

from lay2story_core.loading import ModelLoadError, load_pixart_transformer, load_t5_encoder, load_vae
from lay2story_core.models import SubjectBranch
from lay2story_core.pipelines.loading import load_subject_branch

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOADERS = {"transformer": load_pixart_transformer, "vae": load_vae, "text_encoder": load_t5_encoder,
           "subject_branch": load_subject_branch}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One saved model folder per component, and its weights file name."""
    root = tmp_path_factory.mktemp("fuzz_models")
    pixart = make_pixart()
    models = {"transformer": pixart, "vae": make_vae(), "text_encoder": make_t5(pixart.config.caption_channels),
              "subject_branch": SubjectBranch.from_transformer(pixart)}
    out = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        (weights,) = [p.name for p in (root / name).iterdir() if p.suffix == ".safetensors"]
        out[name] = (root / name, weights)
    return out


def _load(name: str, path: Path) -> None:
    try:
        model = LOADERS[name](path)
    except ModelLoadError as err:
        assert str(err) and "\n" not in str(err).strip(), err
        return
    assert not any(p.is_meta for p in model.parameters())


@st.composite
def mutations(draw, keys: list[str]):
    """A list of (kind, key, arg) edits of a state dict."""
    edits = draw(st.lists(st.tuples(st.sampled_from(["rename", "drop", "reshape", "add", "dtype"]),
                                    st.sampled_from(keys), st.text("abcxyz._0123456789", min_size=1, max_size=8)),
                          min_size=1, max_size=4))
    return edits


def _mutate(state: dict[str, torch.Tensor], edits) -> dict[str, torch.Tensor]:
    state = dict(state)
    for kind, key, arg in edits:
        if key not in state:
            continue
        if kind == "rename":
            state[key.replace(".", f".{arg}", 1) if "." in key else arg + key] = state.pop(key)
        elif kind == "drop":
            state.pop(key)
        elif kind == "reshape":
            state[key] = torch.zeros(state[key].numel() + 1)
        elif kind == "add":
            state[f"{key}.{arg}"] = torch.zeros(2)
        else:
            state[key] = state[key].to(torch.int8)
    return state


def _load_mutated(folders, name, data, single_file: bool) -> None:
    """Mutate the weights of ``name``'s folder as hypothesis draws, save them (into a copy of the folder, or as one
    file) and load them: a clean load or a ModelLoadError."""
    folder, weights = folders[name]
    state = load_file(folder / weights)
    edits = data.draw(mutations(sorted(state)))
    with tempfile.TemporaryDirectory() as tmp:
        if single_file:
            target = path = Path(tmp) / f"{name}.safetensors"
        else:
            target = Path(tmp) / name
            shutil.copytree(folder, target)
            path = target / weights
        save_file({k: v.contiguous() for k, v in _mutate(state, edits).items()}, path)
        _load(name, target)


@pytest.mark.parametrize("name", list(LOADERS))
@SETTINGS
@given(data=st.data())
def test_fuzzed_folders_load_or_raise_model_load_errors(folders, name, data):
    _load_mutated(folders, name, data, single_file=False)


@pytest.mark.parametrize("name", list(LOADERS))
@SETTINGS
@given(fraction=st.floats(min_value=0.0, max_value=0.999), garbage=st.binary(max_size=16))
def test_truncated_weight_files_raise_model_load_errors(folders, name, fraction, garbage):
    folder, weights = folders[name]
    data = (folder / weights).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / name
        shutil.copytree(folder, copy)
        (copy / weights).write_bytes(data[: int(len(data) * fraction)] + garbage)
        with pytest.raises(ModelLoadError):
            LOADERS[name](copy)


@pytest.mark.parametrize("name", ["transformer", "vae", "text_encoder"])
@SETTINGS
@given(data=st.data())
def test_fuzzed_single_files_load_or_raise_model_load_errors(folders, name, data):
    _load_mutated(folders, name, data, single_file=True)


@pytest.mark.parametrize("name", list(LOADERS))
@SETTINGS
@given(key=st.sampled_from(["num_layers", "in_channels", "block_out_channels", "d_model", "num_heads",
                            "patch_size", "_class_name", "num_attention_heads", "latent_channels"]),
       value=st.one_of(st.integers(-2, 9), st.none(), st.text(max_size=4), st.lists(st.integers(1, 64), max_size=3)))
def test_fuzzed_configs_load_or_raise_model_load_errors(folders, name, key, value):
    folder, _ = folders[name]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / name
        shutil.copytree(folder, copy)
        config = json.loads((copy / "config.json").read_text())
        config[key] = value
        (copy / "config.json").write_text(json.dumps(config))
        _load(name, copy)
