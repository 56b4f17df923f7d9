"""Model folders are loaded strictly: wrong weights in a pipeline folder are one clear error naming the component,
the file and the first keys (never diffusers' meta tensors); good folders load to the same weights as
``from_pretrained``; EMA keys in a config are ignored silently."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from tiny_models import make_pipeline
from transformers import T5EncoderModel

from lay2story_core.loading import (
    ModelLoadError,
    ShapeMismatchError,
    StateDictKeysError,
    load_pixart_transformer,
    load_t5_encoder,
    load_vae,
)
from lay2story_core.pipelines.loading import load_story_pipeline, load_subject_branch, save_story_pipeline

WEIGHTS = {"transformer": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
           "subject_branch": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    save_story_pipeline(make_pipeline(), folder)
    return folder


def _copy(saved, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    return folder


def _swap(folder, into: str, source: str) -> None:
    shutil.copy(folder / source / WEIGHTS[source], folder / into / WEIGHTS[into])


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_good_folders_load_the_same_weights_as_from_pretrained(saved):
    assert _same(load_pixart_transformer(saved), PixArtTransformer2DModel.from_pretrained(saved / "transformer"))
    assert _same(load_vae(saved), AutoencoderKL.from_pretrained(saved / "vae"))
    t5 = load_t5_encoder(saved)
    assert _same(t5, T5EncoderModel.from_pretrained(saved / "text_encoder"))
    assert t5.encoder.embed_tokens.weight is t5.shared.weight
    assert not any(p.is_meta for p in t5.parameters())


@pytest.mark.parametrize(("into", "source", "load"), [
    ("transformer", "vae", lambda f: load_pixart_transformer(f)),
    ("vae", "subject_branch", lambda f: load_vae(f)),
    ("text_encoder", "vae", lambda f: load_t5_encoder(f)),
    ("subject_branch", "transformer", lambda f: load_subject_branch(f)),
])
def test_weights_of_another_component_are_one_clear_error(saved, tmp_path, into, source, load):
    folder = _copy(saved, tmp_path)
    _swap(folder, into, source)
    with pytest.raises(StateDictKeysError) as info:
        load(folder)
    message = str(info.value)
    assert "\n" not in message and "meta" not in message
    assert f"{into}/{WEIGHTS[into]}" in message  # the file
    assert "missing key(s)" in message and "unexpected key(s)" in message  # the first keys
    assert info.value.missing and info.value.unexpected


def test_a_config_that_does_not_fit_its_weights_names_the_key(saved, tmp_path):
    import json

    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "vae" / "config.json").read_text())
    config["latent_channels"] = 8
    (folder / "vae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeMismatchError, match=r"vae/diffusion_pytorch_model.safetensors.*encoder.conv_out"):
        load_vae(folder)


def test_story_pipeline_with_swapped_weights_fails_before_any_device_move(saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path)
    _swap(folder, "transformer", "vae")
    moved = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(type(self).__name__) or self)
    with pytest.raises(ModelLoadError, match="transformer/diffusion_pytorch_model.safetensors"):
        load_story_pipeline(folder, device="cpu")
    assert moved == []


def test_ema_keys_in_a_config_are_ignored_without_a_warning(saved, tmp_path, caplog, capsys):
    import json

    folder = _copy(saved, tmp_path)
    for name in ("transformer", "subject_branch"):
        config = json.loads((folder / name / "config.json").read_text())
        config.update(decay=0.995, inv_gamma=1.0, min_decay=0.0, optimization_step=10, power=2 / 3,
                      update_after_step=0, use_ema_warmup=False)
        (folder / name / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.INFO):
        pipe = load_story_pipeline(folder)
    assert pipe.subject_branch is not None
    captured = capsys.readouterr()
    assert "decay" not in caplog.text + captured.err + captured.out


def test_sharded_folder(saved, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path)
    state = load_file(folder / "vae" / WEIGHTS["vae"])
    (folder / "vae" / WEIGHTS["vae"]).unlink()
    keys = sorted(state)
    half = len(keys) // 2
    weight_map = {}
    for n, part in enumerate((keys[:half], keys[half:])):
        name = f"diffusion_pytorch_model-0000{n + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, folder / "vae" / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert _same(load_vae(folder), load_vae(saved))
