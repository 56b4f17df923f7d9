"""PixArt loader: every accepted format round-trips a tiny random PixArtTransformer2DModel exactly."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import PixArtTransformer2DModel
from safetensors.torch import save_file

from lay2story_core.loading import (
    ModelLoadError,
    ShapeMismatchError,
    StateDictKeysError,
    UnsupportedFormatError,
    WrongArchitectureError,
    convert_pixart_original_to_diffusers,
    infer_pixart_config,
    load_pixart_transformer,
    load_pixart_transformer_with_info,
)

HEAD_DIM = 8
# hidden 24 = 3 heads x 8: divisible by 3 as the 1024-MS resolution/aspect-ratio embedders need.
BASE = dict(
    num_attention_heads=3,
    attention_head_dim=HEAD_DIM,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    cross_attention_dim=24,
    caption_channels=16,
    patch_size=2,
)
VARIANTS = {
    "alpha512": dict(sample_size=64, use_additional_conditions=False),
    "alpha1024ms": dict(sample_size=128, use_additional_conditions=True),
    "sigma1024": dict(sample_size=128, use_additional_conditions=False, interpolation_scale=2),
    # position table scale that differs from the default for its size: only the stored table can tell
    "odd_scale": dict(sample_size=64, use_additional_conditions=False, interpolation_scale=2),
}
TEXT_TOKENS = {"alpha512": 120, "alpha1024ms": 120, "sigma1024": 300, "odd_scale": 120}
# diffusers -> original names, written independently of the loader (the inverse of its conversion)
TOP_LEVEL = {
    "pos_embed.proj": "x_embedder.proj",
    "caption_projection.linear_1": "y_embedder.y_proj.fc1",
    "caption_projection.linear_2": "y_embedder.y_proj.fc2",
    "adaln_single.emb.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "adaln_single.emb.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "adaln_single.emb.resolution_embedder.linear_1": "csize_embedder.mlp.0",
    "adaln_single.emb.resolution_embedder.linear_2": "csize_embedder.mlp.2",
    "adaln_single.emb.aspect_ratio_embedder.linear_1": "ar_embedder.mlp.0",
    "adaln_single.emb.aspect_ratio_embedder.linear_2": "ar_embedder.mlp.2",
    "adaln_single.linear": "t_block.1",
    "proj_out": "final_layer.linear",
}
IN_BLOCK = {
    "attn1.to_out.0": "attn.proj",
    "attn2.to_q": "cross_attn.q_linear",
    "attn2.to_out.0": "cross_attn.proj",
    "ff.net.0.proj": "mlp.fc1",
    "ff.net.2": "mlp.fc2",
}


def make_model(kind: str, seed: int = 0) -> PixArtTransformer2DModel:
    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**BASE, **VARIANTS[kind]).eval()
    with torch.no_grad():  # diffusers zero-initialises some layers; random values make the comparison meaningful
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def to_original(model: PixArtTransformer2DModel, tokens: int) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {"final_layer.scale_shift_table": sd.pop("scale_shift_table")}
    for depth in range(model.config.num_layers):
        src, dst = f"transformer_blocks.{depth}.", f"blocks.{depth}."
        out[dst + "scale_shift_table"] = sd.pop(src + "scale_shift_table")
        for param in ("weight", "bias"):
            out[f"{dst}attn.qkv.{param}"] = torch.cat([sd.pop(f"{src}attn1.to_{x}.{param}") for x in "qkv"])
            out[f"{dst}cross_attn.kv_linear.{param}"] = torch.cat([sd.pop(f"{src}attn2.to_{x}.{param}") for x in "kv"])
            for new, old in IN_BLOCK.items():
                out[f"{dst}{old}.{param}"] = sd.pop(f"{src}{new}.{param}")
    for key in list(sd):
        module, _, param = key.rpartition(".")
        out[f"{TOP_LEVEL[module]}.{param}"] = sd.pop(key)
    out["pos_embed"] = model.pos_embed.pos_embed.clone()
    out["y_embedder.y_embedding"] = torch.randn(tokens, model.config.caption_channels)
    return out


def forward(model, kind: str, size: int | None = None, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    size = size or model.config.sample_size
    x = torch.randn(2, 4, size, size, generator=gen, dtype=dtype)
    text = torch.randn(2, 7, BASE["caption_channels"], generator=gen, dtype=dtype)
    cond = {"resolution": None, "aspect_ratio": None}
    if VARIANTS[kind]["use_additional_conditions"]:
        cond = {"resolution": torch.tensor([[1024.0, 1024.0]] * 2), "aspect_ratio": torch.tensor([[1.0]] * 2)}
    with torch.no_grad():
        return model(x, encoder_hidden_states=text, timestep=torch.tensor([10, 500]), added_cond_kwargs=cond).sample


@pytest.fixture(scope="module")
def models():
    return {kind: make_model(kind, seed=i) for i, kind in enumerate(VARIANTS)}


def assert_same_model(loaded, source, kind):
    assert not loaded.training
    assert set(loaded.state_dict()) == set(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.pos_embed.pos_embed, source.pos_embed.pos_embed)
    # native size for 512 models; smaller latents (pos table recomputed with the scale) for 1024 ones, for speed
    size = None if source.config.sample_size <= 64 else 32
    torch.testing.assert_close(forward(loaded, kind, size), forward(source, kind, size), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "fmt", "filename"),
    [
        ("alpha512", "pth_state_dict", "PixArt-XL-2-512x512.pth"),
        ("alpha512", "safetensors_module_prefix", "pixart_alpha.safetensors"),
        ("alpha1024ms", "pth_model_prefix", "PixArt-XL-2-1024-MS.pth"),
        ("sigma1024", "safetensors", "PixArt-Sigma-XL-2-1024-MS.safetensors"),
        ("odd_scale", "pt_plain", "odd.pt"),
    ],
)
def test_original_single_file_roundtrip(models, tmp_path, kind, fmt, filename):
    source = models[kind]
    sd = to_original(source, TEXT_TOKENS[kind])
    path = tmp_path / filename
    if fmt == "pth_state_dict":
        torch.save({"state_dict": sd, "epoch": 3}, path)
    elif fmt == "safetensors_module_prefix":
        save_file({f"module.{k}": v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "pth_model_prefix":
        torch.save({"model": {f"model.{k}": v for k, v in sd.items()}}, path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)

    loaded, info = load_pixart_transformer_with_info(path, attention_head_dim=HEAD_DIM)
    assert_same_model(loaded, source, kind)
    assert info.source_format == "original"
    assert info.sample_size == VARIANTS[kind]["sample_size"]
    assert info.use_additional_conditions == VARIANTS[kind]["use_additional_conditions"]
    assert info.max_text_tokens == TEXT_TOKENS[kind]
    assert info.variant == ("sigma" if kind.startswith("sigma") else "alpha")
    assert info.num_layers == 2 and info.hidden_size == 24 and info.num_attention_heads == 3
    assert info.caption_channels == 16 and info.out_channels == 8 and info.patch_size == 2
    assert info.interpolation_scale == pytest.approx(source.pos_embed.interpolation_scale)


def test_conversion_keeps_extras_and_splits_qkv(models):
    source = models["alpha512"]
    converted, extras = convert_pixart_original_to_diffusers(to_original(source, 120))
    assert set(converted) == set(source.state_dict())
    assert extras["y_embedding"].shape == (120, 16) and extras["pos_embed"].shape == (1, 1024, 24)
    q = converted["transformer_blocks.1.attn1.to_q.weight"]
    assert torch.equal(q, source.transformer_blocks[1].attn1.to_q.weight)
    # split pieces own their memory, so save_pretrained (safetensors) never sees shared tensors
    assert (
        q.untyped_storage().data_ptr()
        != converted["transformer_blocks.1.attn1.to_k.weight"].untyped_storage().data_ptr()
    )


def test_diffusers_folder_and_pipeline_folder(models, tmp_path):
    source = models["sigma1024"]
    source.save_pretrained(tmp_path / "model")
    assert_same_model(load_pixart_transformer(tmp_path / "model"), source, "sigma1024")

    pipe = tmp_path / "pipe"
    source.save_pretrained(pipe / "transformer")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "PixArtSigmaPipeline"}))
    loaded, info = load_pixart_transformer_with_info(str(pipe))
    assert_same_model(loaded, source, "sigma1024")
    assert info.variant == "sigma" and info.max_text_tokens == 300 and info.source_format == "folder"
    assert info.interpolation_scale == 2.0 and info.sample_size == 128

    source.save_pretrained(pipe / "transformer_ema")
    assert_same_model(load_pixart_transformer(pipe, subfolder="transformer_ema"), source, "sigma1024")


def test_diffusers_key_single_file(models, tmp_path):
    source = models["alpha512"]
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    hinted = tmp_path / "tiny-pixart-512.safetensors"  # "512" in the name -> sample_size 64
    save_file(sd, str(hinted))
    loaded, info = load_pixart_transformer_with_info(hinted, attention_head_dim=HEAD_DIM)
    assert_same_model(loaded, source, "alpha512")
    assert info.source_format == "diffusers" and info.variant == "unknown" and info.max_text_tokens is None

    plain = tmp_path / "diffusion_pytorch_model.bin"
    torch.save(sd, plain)
    with pytest.raises(ModelLoadError, match=r"diffusion_pytorch_model\.bin.*sample_size="):
        load_pixart_transformer(plain, attention_head_dim=HEAD_DIM)
    assert_same_model(load_pixart_transformer(plain, attention_head_dim=HEAD_DIM, sample_size=64), source, "alpha512")


def test_ms_file_without_table_defaults_to_1024(models, tmp_path):
    source = models["alpha1024ms"]
    path = tmp_path / "lay2story_global.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded, info = load_pixart_transformer_with_info(path, attention_head_dim=HEAD_DIM)
    assert info.sample_size == 128 and info.use_additional_conditions and info.interpolation_scale == 2.0
    assert_same_model(loaded, source, "alpha1024ms")


def test_dtype_and_device(models, tmp_path):
    source = models["alpha512"]
    path = tmp_path / "a.pth"
    torch.save({"state_dict": to_original(source, 120)}, path)
    loaded = load_pixart_transformer(path, attention_head_dim=HEAD_DIM, torch_dtype="bf16", device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.pos_embed.pos_embed.dtype == torch.bfloat16
    out = forward(loaded, "alpha512", size=16, dtype=torch.bfloat16).float()
    torch.testing.assert_close(out, forward(source, "alpha512", size=16), rtol=0.1, atol=0.1)
    with pytest.raises(ValueError, match="torch_dtype.*int8"):
        load_pixart_transformer(path, torch_dtype="int8")


def test_head_dim_assumption_is_checked(models, tmp_path):
    path = tmp_path / "a.pth"
    torch.save(to_original(models["alpha512"], 120), path)
    with pytest.raises(ModelLoadError, match=r"a\.pth.*attention_head_dim 72 does not divide the hidden size 24"):
        load_pixart_transformer(path)


def test_strict_keys_and_shapes(models, tmp_path):
    sd = to_original(models["alpha512"], 120)
    extra = dict(sd, **{"blocks.0.attn.rotary.freqs": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(StateDictKeysError, match=r"extra\.pth.*unexpected key.*blocks\.0\.attn\.rotary\.freqs") as err:
        load_pixart_transformer(tmp_path / "extra.pth", attention_head_dim=HEAD_DIM)
    assert err.value.unexpected == ["blocks.0.attn.rotary.freqs"] and err.value.missing == []

    missing = {k: v for k, v in sd.items() if k != "blocks.1.cross_attn.proj.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(StateDictKeysError, match="missing key.*transformer_blocks.1.attn2.to_out.0.bias"):
        load_pixart_transformer(tmp_path / "missing.pth", attention_head_dim=HEAD_DIM)

    bad = dict(sd)
    bad["blocks.1.mlp.fc1.weight"] = bad["blocks.1.mlp.fc1.weight"][:40]
    bad["blocks.1.mlp.fc1.bias"] = bad["blocks.1.mlp.fc1.bias"][:40]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        ShapeMismatchError, match=r"bad\.pth.*'transformer_blocks\.1\.ff\.net\.0\.proj\.weight'"
    ) as err:
        load_pixart_transformer(tmp_path / "bad.pth", attention_head_dim=HEAD_DIM)
    assert err.value.found == (40, 24) and err.value.expected == (96, 24)


def test_qk_norm_is_refused(models, tmp_path):
    sd = to_original(models["alpha512"], 300)
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(HEAD_DIM)
    torch.save(sd, tmp_path / "qknorm.pth")
    with pytest.raises(UnsupportedFormatError, match=r"qknorm\.pth.*qk-norm"):
        load_pixart_transformer(tmp_path / "qknorm.pth", attention_head_dim=HEAD_DIM)


def test_wrong_architecture_is_named(tmp_path):
    sdxl = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": torch.zeros(4, 8),
        "model.diffusion_model.time_embed.0.weight": torch.zeros(4, 4),
    }
    save_file(sdxl, str(tmp_path / "sd_xl_base_1.0.safetensors"))
    with pytest.raises(
        WrongArchitectureError, match=r"sd_xl_base_1\.0\.safetensors: looks like an SDXL UNet, not a PixArt"
    ):
        load_pixart_transformer(tmp_path / "sd_xl_base_1.0.safetensors")

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(WrongArchitectureError, match="UNet2DConditionModel, not a PixArt transformer"):
        load_pixart_transformer(tmp_path / "unet")


@pytest.mark.parametrize(
    ("config", "tokens", "variant"),
    [
        (dict(sample_size=64), 120, "alpha"),  # PixArt-XL-2-512x512
        (dict(sample_size=128), 120, "alpha"),  # PixArt-XL-2-1024-MS (micro-conditions from sample_size 128)
        (dict(sample_size=128, use_additional_conditions=False, interpolation_scale=2), 300, "sigma"),
    ],
)
def test_real_size_configs_are_inferred(config, tokens, variant):
    """Released PixArt-XL/2 shapes (meta tensors, no memory): the inferred config rebuilds the same model."""
    from lay2story_core.loading.modeling import check_state_dict, empty_model

    xl = dict(num_attention_heads=16, attention_head_dim=72, num_layers=28, caption_channels=4096, **config)
    reference = empty_model(lambda: PixArtTransformer2DModel(**xl), source="xl", what="reference")
    converted, extras = convert_pixart_original_to_diffusers(to_original(reference, tokens))
    info = infer_pixart_config(converted, extras, source_format="original")
    assert (info.num_layers, info.hidden_size, info.num_attention_heads, info.caption_channels) == (28, 1152, 16, 4096)
    assert info.sample_size == config["sample_size"] and info.variant == variant and info.max_text_tokens == tokens
    assert info.use_additional_conditions == reference.use_additional_conditions
    assert info.interpolation_scale == reference.pos_embed.interpolation_scale
    rebuilt = empty_model(lambda: PixArtTransformer2DModel(**info.to_diffusers_config()), source="xl", what="rebuilt")
    check_state_dict(rebuilt, converted, "xl", "PixArt transformer")
