"""Path resolution and hub ids: a hub id while offline is an error that says so (never a network access)."""

from __future__ import annotations

import pytest

from lay2story_core.loading import (
    HubUnavailableError,
    ModelNotFoundError,
    load_pixart_transformer,
    load_t5_encoder,
    load_t5_tokenizer,
    load_vae,
)
from lay2story_core.loading.sources import resolve_source


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Force huggingface_hub offline with an empty cache, whatever the environment says."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
@pytest.mark.parametrize("loader", [load_pixart_transformer, load_t5_encoder, load_vae, load_t5_tokenizer])
def test_hub_id_offline(offline, loader):
    with pytest.raises(HubUnavailableError, match=r"^PixArt-alpha/PixArt-XL-2-1024-MS: .*hub id.*offline mode is on"):
        loader("PixArt-alpha/PixArt-XL-2-1024-MS")


def test_resolution(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert resolve_source(tmp_path / "model", "vae").kind == "folder"
    (tmp_path / "pipe" / "vae").mkdir(parents=True)
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"pipe: looks like a pipeline folder but has no vae/config\.json"):
        resolve_source(tmp_path / "pipe", "vae")
    (tmp_path / "pipe" / "vae" / "config.json").write_text("{}")
    source = resolve_source(tmp_path / "pipe", "vae")
    assert (source.kind, source.path, source.pipeline) == (
        "folder",
        str(tmp_path / "pipe" / "vae"),
        str(tmp_path / "pipe"),
    )
    with pytest.raises(ModelNotFoundError, match="has no subfolder 'vae_ema'"):
        resolve_source(tmp_path / "pipe", "vae", subfolder="vae_ema")
    assert resolve_source("org/name", "vae").kind == "hub"
    for local_looking in ("models/pixart.safetensors", "./org/name", str(tmp_path / "absent")):
        with pytest.raises(ModelNotFoundError, match="no such file or folder"):
            resolve_source(local_looking, "transformer")
