"""The model and text-encoder loader nodes on tiny saved models (pipeline folders and ComfyUI-style single files)."""

from __future__ import annotations

import shutil

import pytest
import torch

from nodes import comfy_env, model_files
from nodes.bundles import StoryModel, TextEncoderBundle
from nodes.loaders import L2S_ModelLoader, L2S_TextEncoderLoader, auto_tokenizer_dir

PIPE = "lay2story/tiny_pipeline"
T5_FILE = "text_encoders/t5xxl_fp16.safetensors"


def test_choices_list_what_the_models_folder_holds(comfy_models):
    spec = L2S_ModelLoader.INPUT_TYPES()["required"]
    assert spec["model"][0] == [model_files.EMBEDDED_LABEL, PIPE, "checkpoints/PixArt-XL-2-512x512.pth"]
    assert spec["subject_branch"][0] == ["auto", "none", "lay2story/tiny_branch", PIPE]
    assert spec["vae"][0] == ["auto", "vae/vae-ft-mse-840000-ema-pruned.safetensors"]
    te = L2S_TextEncoderLoader.INPUT_TYPES()["required"]
    assert te["text_encoder"][0] == [model_files.EMBEDDED_LABEL, PIPE, T5_FILE]
    assert te["tokenizer"][0] == ["auto", "text_encoders/t5xxl_fp16_tokenizer"]


def test_embedded_demo_is_listed_only_when_its_folder_exists(comfy_models, monkeypatch, tmp_path):
    monkeypatch.setattr(model_files, "EMBEDDED_MODEL", tmp_path / "missing")
    assert model_files.EMBEDDED_LABEL not in model_files.model_choices()
    with pytest.raises(ValueError, match="model: the embedded ShapeStory demo model is not installed"):
        model_files.resolve_choice(model_files.EMBEDDED_LABEL, "model")


def test_pipeline_folder_with_its_own_branch_and_vae(comfy_models):
    (model,) = L2S_ModelLoader().load(PIPE, "auto", "auto", "fp32", "cpu")
    assert isinstance(model, StoryModel) and model.has_subject_branch
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    assert model.scheduler_config["_class_name"] == "DPMSolverMultistepScheduler"
    assert not model.transformer.training and model.vae.config.latent_channels == 4
    (plain,) = L2S_ModelLoader().load(PIPE, "none", "auto", "bf16", "cpu")
    assert plain.subject_branch is None and plain.transformer.dtype == torch.bfloat16
    (separate,) = L2S_ModelLoader().load(PIPE, "lay2story/tiny_branch", "auto", "fp32", "cpu")
    for a, b in zip(separate.subject_branch.parameters(), model.subject_branch.parameters()):
        assert torch.equal(a, b)


def test_single_files_need_a_vae(comfy_models):
    loader = L2S_ModelLoader()
    with pytest.raises(ValueError, match=r"vae: 'auto' takes the VAE of a pipeline folder, but .*PixArt-XL"):
        loader.load("checkpoints/PixArt-XL-2-512x512.pth", "none", "auto", "fp32", "cpu")
    (model,) = loader.load("checkpoints/PixArt-XL-2-512x512.pth", "none",
                           "vae/vae-ft-mse-840000-ema-pruned.safetensors", "fp16", "cpu")
    assert model.transformer.config.attention_head_dim == 72 and model.transformer.dtype == torch.float16
    assert model.vae.dtype == torch.float32  # the SD VAE stays float32 when float16 is asked for
    assert model.scheduler_config is None and model.max_text_tokens == 120


def test_the_caption_length_is_the_core_loaders(comfy_models):
    """A pipeline folder's caption length as the CLI and the Python API read it (its lay2story.json, else the
    checkpoint's: 300 for PixArt-Sigma, 120 for alpha); the sampler pads and cuts captions to it."""
    import json

    (model,) = L2S_ModelLoader().load(PIPE, "none", "auto", "fp32", "cpu")
    assert model.max_text_tokens == 120
    sigma = comfy_models / "lay2story" / "tiny_sigma"
    shutil.copytree(comfy_models / PIPE, sigma)
    try:
        manifest = json.loads((sigma / "lay2story.json").read_text())
        (sigma / "lay2story.json").write_text(json.dumps({**manifest, "max_sequence_length": 300}))
        (model,) = L2S_ModelLoader().load("lay2story/tiny_sigma", "none", "auto", "fp32", "cpu")
        assert model.max_text_tokens == 300
    finally:
        shutil.rmtree(sigma)


def test_loaded_models_are_reused_until_a_widget_changes(comfy_models):
    loader = L2S_ModelLoader()
    (a,) = loader.load(PIPE, "auto", "auto", "fp32", "cpu")
    (b,) = loader.load(PIPE, "auto", "auto", "fp32", "cpu")
    assert a.transformer is b.transformer and a.vae is b.vae and a.subject_branch is b.subject_branch
    (c,) = loader.load(PIPE, "auto", "vae/vae-ft-mse-840000-ema-pruned.safetensors", "fp32", "cpu")
    assert c.transformer is a.transformer and c.vae is not a.vae
    (d,) = loader.load(PIPE, "none", "auto", "fp32", "cpu")
    assert d.subject_branch is None and d.transformer is a.transformer


def test_loader_errors_name_the_input(comfy_models, tmp_path, monkeypatch):
    loader = L2S_ModelLoader()
    with pytest.raises(ValueError, match="^model: 'checkpoints/gone.pth' not found"):
        loader.load("checkpoints/gone.pth", "none", "auto", "fp32", "cpu")
    with pytest.raises(ValueError, match="^precision: expected one of"):
        loader.load(PIPE, "auto", "auto", "fp64", "cpu")
    bad = comfy_models / "checkpoints" / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    try:
        with pytest.raises(ValueError, match=r"^model: could not load 'checkpoints/broken.safetensors'"):
            loader.load("checkpoints/broken.safetensors", "none", "vae/vae-ft-mse-840000-ema-pruned.safetensors",
                        "fp32", "cpu")
    finally:
        bad.unlink()


def test_a_branch_for_another_transformer_is_refused(comfy_models):
    with pytest.raises(ValueError, match=r"^subject_branch: 'lay2story/tiny_branch' \(width 16.*does not fit"):
        L2S_ModelLoader().load("checkpoints/PixArt-XL-2-512x512.pth", "lay2story/tiny_branch",
                               "vae/vae-ft-mse-840000-ema-pruned.safetensors", "fp32", "cpu")


def test_text_encoder_from_pipeline_and_from_a_comfyui_file(comfy_models):
    (from_pipe,) = L2S_TextEncoderLoader().load(PIPE, "auto", "fp32", "cpu", False)
    assert isinstance(from_pipe, TextEncoderBundle) and from_pipe.device == torch.device("cpu")
    assert not from_pipe.offload and from_pipe.encoder.dtype == torch.float32
    (from_file,) = L2S_TextEncoderLoader().load(T5_FILE, "auto", "auto", "auto", True)
    assert from_file.device is None and from_file.offload  # encodes on the sampler's device
    ids = from_file.tokenizer("the red fox", return_tensors="pt").input_ids
    assert ids.shape[1] > 1 and int(ids.max()) < from_file.encoder.config.vocab_size
    with torch.no_grad():
        out = from_file.encoder(ids).last_hidden_state
    assert out.shape[-1] == 12 and torch.isfinite(out).all()
    (explicit,) = L2S_TextEncoderLoader().load(T5_FILE, "text_encoders/t5xxl_fp16_tokenizer", "fp32", "cpu", True)
    assert explicit.tokenizer.get_vocab() == from_file.tokenizer.get_vocab()


def test_auto_tokenizer_search_order(comfy_models, tmp_path):
    assert auto_tokenizer_dir(str(comfy_models / "lay2story" / "tiny_pipeline")).endswith("tiny_pipeline/tokenizer")
    assert auto_tokenizer_dir(str(comfy_models / "text_encoders" / "t5xxl_fp16.safetensors")).endswith(
        "t5xxl_fp16_tokenizer")
    shutil.copy(comfy_models / "text_encoders" / "t5xxl_fp16.safetensors", tmp_path / "lonely.safetensors")
    assert auto_tokenizer_dir(str(tmp_path / "lonely.safetensors")) is None  # no ComfyUI bundled one here
    shutil.copytree(comfy_models / "lay2story" / "tiny_pipeline" / "tokenizer", tmp_path / "tokenizer")
    assert auto_tokenizer_dir(str(tmp_path / "lonely.safetensors")) == str(tmp_path / "tokenizer")


def test_text_encoder_errors(comfy_models, monkeypatch):
    shutil.copy(comfy_models / "text_encoders" / "t5xxl_fp16.safetensors",
                comfy_models / "text_encoders" / "lonely.safetensors")
    try:
        with pytest.raises(ValueError, match=r"^tokenizer: 'auto' found no tokenizer for 'text_encoders/lonely"):
            L2S_TextEncoderLoader().load("text_encoders/lonely.safetensors", "auto", "fp32", "cpu", True)
    finally:
        (comfy_models / "text_encoders" / "lonely.safetensors").unlink()
    with pytest.raises(ValueError, match="^tokenizer: .*only available inside ComfyUI"):
        L2S_TextEncoderLoader().load(T5_FILE, model_files.COMFY_T5_TOKENIZER, "fp32", "cpu", True)
    with pytest.raises(ValueError, match="^offload: expected true or false"):
        L2S_TextEncoderLoader().load(T5_FILE, "auto", "fp32", "cpu", "yes")


def test_a_tokenizer_larger_than_the_encoder_vocabulary_is_refused(comfy_models, tmp_path):
    from transformers import T5Tokenizer

    big = comfy_models / "text_encoders" / "big_tokenizer"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581w{i}", -1.0) for i in range(300)]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(big)
    try:
        with pytest.raises(ValueError, match=r"^tokenizer: 'text_encoders/big_tokenizer' .* has 303 tokens but "
                                             r"'text_encoders/t5xxl_fp16.safetensors' knows only \d+"):
            L2S_TextEncoderLoader().load(T5_FILE, "text_encoders/big_tokenizer", "fp32", "cpu", True)
    finally:
        shutil.rmtree(big)


def test_room_is_made_only_when_a_model_is_actually_loaded(comfy_models, monkeypatch):
    asked = []
    monkeypatch.setattr(comfy_env, "free_memory", lambda num_bytes, device: asked.append((num_bytes, device)))
    loader = L2S_ModelLoader()
    loader.load(PIPE, "auto", "auto", "fp32", "cpu")
    assert len(asked) == 3 and all(n > 0 and d == torch.device("cpu") for n, d in asked)  # transformer, branch, VAE
    loader.load(PIPE, "auto", "auto", "fp32", "cpu")
    assert len(asked) == 3  # all cached
    L2S_TextEncoderLoader().load(T5_FILE, "auto", "fp32", "cpu", False)
    assert len(asked) == 4
