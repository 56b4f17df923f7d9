"""Architecture sniffing from key names (real tiny models where cheap, real-checkpoint key names otherwise)."""

from __future__ import annotations

import pytest
from diffusers import AutoencoderKL, PixArtTransformer2DModel

from lay2story_core.loading import describe_architecture, sniff_architecture, sniff_components

SDXL_LDM = ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight",
            "model.diffusion_model.time_embed.0.weight", "conditioner.embedders.0.transformer.text_model.encoder."
            "layers.0.self_attn.q_proj.weight", "first_stage_model.encoder.down.0.block.0.conv1.weight",
            "first_stage_model.decoder.conv_in.weight"]  # fmt: skip
SD15_LDM = [
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.time_embed.0.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
    "first_stage_model.encoder.down.0.block.0.conv1.weight",
    "first_stage_model.decoder.conv_in.weight",
]
CASES = {
    "sdxl_unet": SDXL_LDM,
    "sd_unet": SD15_LDM,
    "flux": ["model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "model.diffusion_model.img_in.weight"],
    "pixart": ["module.x_embedder.proj.weight", "module.t_block.1.weight", "module.blocks.0.attn.qkv.weight"],
    "t5": ["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"],
    "clip": ["text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.final_layer_norm.weight"],
    "unknown": ["layers.0.attention.wq.weight", "tok_embeddings.weight"],
}


@pytest.mark.parametrize("expected", sorted(CASES))
def test_named_key_sets(expected):
    assert sniff_architecture(CASES[expected]) == expected
    assert sniff_architecture({k: None for k in CASES[expected]}) == expected


def test_real_tiny_models():
    pixart = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, num_layers=1, sample_size=8,
                                      cross_attention_dim=16, caption_channels=8)  # fmt: skip
    assert sniff_architecture(pixart.state_dict()) == "pixart_diffusers"
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=32)
    assert sniff_architecture(vae.state_dict()) == "vae"
    assert sniff_architecture({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}) == "vae"


def test_full_checkpoints_list_all_components():
    assert sniff_components(SDXL_LDM) == {"sdxl_unet", "clip", "vae"}
    assert sniff_components(SD15_LDM) == {"sd_unet", "clip", "vae"}
    assert describe_architecture("sdxl_unet") == "an SDXL UNet"
