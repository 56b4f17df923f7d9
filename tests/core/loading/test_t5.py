"""T5 encoder loader: transformers folders and ComfyUI-style single files (fp16, prefixed, fp8) load exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel

from lay2story_core.loading import (
    UnsupportedFormatError,
    WrongArchitectureError,
    infer_t5_config,
    load_t5_encoder,
)

FP8 = torch.float8_e4m3fn


def make_t5(gated: bool = True, seed: int = 0) -> T5EncoderModel:
    config = T5Config(
        vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()


def encode(model, dtype=torch.float32):
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state.float()


def with_weights(model: T5EncoderModel, state_dict: dict) -> T5EncoderModel:
    clone = make_t5(gated=model.config.is_gated_act)
    clone.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=False)
    return clone


@pytest.fixture(scope="module")
def t5():
    return make_t5()


def comfy_file_dict(model, dtype=torch.float16):
    """As ComfyUI keeps t5xxl_fp16.safetensors: transformers names, shared.weight only."""
    sd = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    del sd["encoder.embed_tokens.weight"]
    return sd


def test_folder_and_pipeline_folder(t5, tmp_path):
    t5.save_pretrained(tmp_path / "te")
    torch.testing.assert_close(encode(load_t5_encoder(tmp_path / "te")), encode(t5))
    t5.save_pretrained(tmp_path / "pipe" / "text_encoder")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    loaded = load_t5_encoder(str(tmp_path / "pipe"))
    assert not loaded.training
    torch.testing.assert_close(encode(loaded), encode(t5))


def test_comfy_fp16_single_file(t5, tmp_path):
    sd = comfy_file_dict(t5)
    path = tmp_path / "t5xxl_fp16.safetensors"
    save_file(sd, str(path))
    loaded = load_t5_encoder(path)
    cfg = loaded.config
    assert (cfg.d_model, cfg.d_kv, cfg.num_heads, cfg.num_layers, cfg.d_ff, cfg.vocab_size) == (16, 4, 4, 2, 24, 64)
    assert cfg.is_gated_act and cfg.relative_attention_num_buckets == 8
    assert loaded.shared.weight is loaded.encoder.embed_tokens.weight
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    torch.testing.assert_close(encode(loaded), encode(with_weights(t5, sd)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encode(loaded), encode(t5), rtol=1e-2, atol=1e-2)  # fp16 rounding only


def test_half_precision_keeps_wo_in_fp32(t5, tmp_path):
    path = tmp_path / "t5.safetensors"
    save_file(comfy_file_dict(t5), str(path))
    loaded = load_t5_encoder(path, torch_dtype=torch.float16)
    assert loaded.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert loaded.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16
    torch.testing.assert_close(encode(loaded), encode(t5), rtol=2e-2, atol=2e-2)


def test_prefixed_full_t5_checkpoint(tmp_path):
    source = make_t5(seed=1)
    sd = {f"text_encoders.t5xxl.transformer.{k}": v for k, v in source.state_dict().items()}
    sd["text_encoders.t5xxl.transformer.decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(16, 16)
    sd["text_encoders.t5xxl.transformer.lm_head.weight"] = torch.zeros(64, 16)
    sd["text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"] = torch.zeros(8)
    torch.save({"state_dict": sd}, tmp_path / "sd3_text_encoders.pth")
    torch.testing.assert_close(encode(load_t5_encoder(tmp_path / "sd3_text_encoders.pth")), encode(source))


def test_relu_t5_v1_0_with_embed_tokens_only(tmp_path):
    source = make_t5(gated=False, seed=2)
    sd = {k: v for k, v in source.state_dict().items() if k != "shared.weight"}
    save_file(sd, str(tmp_path / "t5_base_encoder.safetensors"))
    loaded = load_t5_encoder(tmp_path / "t5_base_encoder.safetensors")
    assert loaded.config.feed_forward_proj == "relu" and not loaded.config.is_gated_act
    torch.testing.assert_close(encode(loaded), encode(source))


@pytest.mark.parametrize("scaled", [True, False])
def test_comfy_fp8_files(t5, tmp_path, scaled):
    sd = comfy_file_dict(t5)
    reference = dict(sd)
    for key in [k for k in sd if k.endswith(".weight") and (".SelfAttention." in k or ".DenseReluDense." in k)]:
        if "relative_attention_bias" in key:
            continue
        weight = sd[key].float()
        scale = weight.abs().max() / 448.0 if scaled else torch.tensor(1.0)
        quantised = (weight / scale).to(FP8)
        sd[key] = quantised
        reference[key] = quantised.float() * scale
        if scaled:
            sd[key.removesuffix("weight") + "scale_weight"] = scale.reshape(())
            sd[key.removesuffix("weight") + "scale_input"] = torch.ones(())
    if scaled:
        sd["scaled_fp8"] = torch.empty(0, dtype=FP8)
    path = tmp_path / ("t5xxl_fp8_e4m3fn_scaled.safetensors" if scaled else "t5xxl_fp8_e4m3fn.safetensors")
    save_file(sd, str(path))
    loaded = load_t5_encoder(path)
    torch.testing.assert_close(encode(loaded), encode(with_weights(t5, reference)), rtol=1e-5, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(encode(loaded).flatten(), encode(t5).flatten(), dim=0)
    assert cosine > 0.99  # fp8 keeps the encoder recognisable


def test_umt5_and_wrong_files_are_refused(t5, tmp_path):
    sd = comfy_file_dict(t5, torch.float32)
    sd["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = torch.zeros(8, 4)
    save_file(sd, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(UnsupportedFormatError, match=r"umt5\.safetensors.*UMT5"):
        load_t5_encoder(tmp_path / "umt5.safetensors")

    vae_keys = {"encoder.down.0.block.0.conv1.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)}
    save_file(vae_keys, str(tmp_path / "ae.safetensors"))
    with pytest.raises(WrongArchitectureError, match=r"ae\.safetensors: looks like a VAE .*not a T5 encoder"):
        load_t5_encoder(tmp_path / "ae.safetensors")

    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip_text_model"}))
    with pytest.raises(WrongArchitectureError, match="clip_text_model, not a T5 encoder"):
        load_t5_encoder(tmp_path / "clip")


def test_infer_config_reads_shapes(t5):
    config = infer_t5_config(dict(t5.state_dict()))
    for field in (
        "vocab_size",
        "d_model",
        "d_kv",
        "d_ff",
        "num_layers",
        "num_heads",
        "relative_attention_num_buckets",
    ):
        assert getattr(config, field) == getattr(t5.config, field), field


def test_real_size_t5_xxl_config_is_inferred():
    """T5-v1.1-XXL shapes as in t5xxl_fp16.safetensors (meta tensors, no memory)."""
    from lay2story_core.loading.modeling import check_state_dict, empty_model

    xxl = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                   feed_forward_proj="gated-gelu")  # fmt: skip
    sd = dict(empty_model(lambda: T5EncoderModel(xxl), source="xxl", what="reference").state_dict())
    config = infer_t5_config(sd)
    for field in (
        "vocab_size",
        "d_model",
        "d_kv",
        "d_ff",
        "num_layers",
        "num_heads",
        "relative_attention_num_buckets",
    ):
        assert getattr(config, field) == getattr(xxl, field), field
    assert config.is_gated_act and config.dense_act_fn == "gelu_new"
    check_state_dict(empty_model(lambda: T5EncoderModel(config), source="xxl", what="T5"), sd, "xxl", "T5 encoder")
