"""VAE loader: LDM/SD single files (also inside full checkpoints), diffusers files and folders, bundled configs."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from lay2story_core.loading import (
    ModelLoadError,
    ShapeMismatchError,
    WrongArchitectureError,
    convert_ldm_vae_to_diffusers,
    infer_vae_config,
    load_vae,
)

TINY = dict(
    block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)  # fmt: skip
ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def make_vae(seed: int = 0, **overrides) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return vae


def to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """diffusers -> LDM names (independent of the loader's conversion; attention as 1x1 convolutions)."""
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        parts = new.split(".")
        if parts[1] == "down_blocks":  # encoder.down_blocks.i.resnets.j / downsamplers.0.conv
            kind = "block." + ".".join(parts[4:]) if parts[3] == "resnets" else "downsample." + ".".join(parts[5:])
            new = f"encoder.down.{parts[2]}.{kind}"
        elif parts[1] == "up_blocks":
            level = levels - 1 - int(parts[2])
            kind = "block." + ".".join(parts[4:]) if parts[3] == "resnets" else "upsample." + ".".join(parts[5:])
            new = f"decoder.up.{level}.{kind}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        elif parts[1] == "mid_block":
            module, param = ".".join(parts[4:-1]), parts[-1]
            new = f"{parts[0]}.mid.attn_1.{ATTN[module]}.{param}"
            if param == "weight" and module != "group_norm":
                value = value[:, :, None, None]
        out[new] = value.clone()
    return out


def roundtrip(loaded: AutoencoderKL, source: AutoencoderKL) -> None:
    assert not loaded.training
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    latent = torch.randn(1, 4, 16, 16, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(image).latent_dist.mean, source.encode(image).latent_dist.mean)
        torch.testing.assert_close(loaded.decode(latent).sample, source.decode(latent).sample)


@pytest.fixture(scope="module")
def vae():
    return make_vae()


def test_conversion_matches_diffusers_reference(vae):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ldm = to_ldm(vae)
    ours = convert_ldm_vae_to_diffusers(dict(ldm))
    reference = convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config))
    assert set(ours) == set(reference) == set(vae.state_dict())
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key


def test_ldm_single_file(vae, tmp_path):
    path = tmp_path / "vae-ft-ema.safetensors"
    save_file(to_ldm(vae), str(path))
    loaded = load_vae(path)
    roundtrip(loaded, vae)
    assert loaded.config.scaling_factor == pytest.approx(0.18215)
    assert list(loaded.config.block_out_channels) == [32, 64] and loaded.config.layers_per_block == 1


def test_vae_inside_full_checkpoint(vae, tmp_path):
    sd = {f"first_stage_model.{k}": v for k, v in to_ldm(vae).items()}
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(8, 4, 3, 3)
    sd["model.diffusion_model.time_embed.0.weight"] = torch.zeros(8, 8)
    sd["cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"] = torch.zeros(8, 8)
    sd["first_stage_model.loss.logvar"] = torch.zeros(())
    torch.save({"state_dict": sd, "global_step": 10}, tmp_path / "v1-5-pruned.ckpt")
    roundtrip(load_vae(tmp_path / "v1-5-pruned.ckpt"), vae)


def test_diffusers_file_folder_and_pipeline(vae, tmp_path):
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "diffusers_vae.safetensors"))
    roundtrip(load_vae(tmp_path / "diffusers_vae.safetensors"), vae)
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    roundtrip(load_vae(tmp_path / "pipe"), vae)
    roundtrip(load_vae(tmp_path / "pipe" / "vae", torch_dtype="fp32"), vae)


def test_bundled_and_explicit_configs(vae, tmp_path):
    ldm = to_ldm(vae)
    save_file(ldm, str(tmp_path / "sdxl_vae.safetensors"))
    assert load_vae(tmp_path / "sdxl_vae.safetensors").config.scaling_factor == pytest.approx(0.13025)
    save_file(ldm, str(tmp_path / "ae.safetensors"))
    assert load_vae(tmp_path / "ae.safetensors", config="sdxl").config.scaling_factor == pytest.approx(0.13025)

    vae.save_pretrained(tmp_path / "cfg")  # a real config folder given explicitly
    roundtrip(load_vae(tmp_path / "ae.safetensors", config=tmp_path / "cfg"), vae)
    assert load_vae(tmp_path / "ae.safetensors", config={"scaling_factor": 0.5}).config.scaling_factor == 0.5

    with pytest.raises(
        ShapeMismatchError, match=r"ae\.safetensors.*'encoder\.down_blocks\.1\.resnets\.0\.conv1"
    ) as err:
        load_vae(tmp_path / "ae.safetensors", config={"block_out_channels": [32, 128]})
    assert err.value.expected == (128, 32, 3, 3) and err.value.found == (64, 32, 3, 3)
    with pytest.raises(ModelLoadError, match=r"ae\.safetensors: cannot build the VAE.*divisible by num_groups"):
        load_vae(tmp_path / "ae.safetensors", config={"block_out_channels": [16, 64]})
    with pytest.raises(ModelLoadError, match=r"sd3: config: neither a bundled VAE config \['sd', 'sdxl'\]"):
        load_vae(tmp_path / "ae.safetensors", config="sd3")


def test_group_count_is_not_in_shapes(tmp_path):
    small = make_vae(seed=1, block_out_channels=(8, 16), norm_num_groups=4)
    save_file(to_ldm(small), str(tmp_path / "small.safetensors"))
    with pytest.raises(ModelLoadError, match=r"small\.safetensors: norm_num_groups 32 does not divide the widths"):
        load_vae(tmp_path / "small.safetensors")
    roundtrip(load_vae(tmp_path / "small.safetensors", config={"norm_num_groups": 4}), small)
    assert infer_vae_config(small.state_dict(), {"norm_num_groups": 4})["block_out_channels"] == [8, 16]


def test_wrong_inputs(tmp_path):
    t5_keys = {"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(2, 2), "shared.weight": torch.zeros(2)}
    save_file(t5_keys, str(tmp_path / "t5.safetensors"))
    with pytest.raises(WrongArchitectureError, match=r"t5\.safetensors: looks like a T5 text encoder, not a VAE"):
        load_vae(tmp_path / "t5.safetensors")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(WrongArchitectureError, match="UNet2DModel, not an AutoencoderKL"):
        load_vae(tmp_path / "unet")


@pytest.mark.parametrize("name", ["sd", "sdxl"])
def test_real_size_bundled_configs(name):
    """The SD/SDXL VAE layout (meta tensors): LDM keys convert and infer back to the bundled config."""
    from lay2story_core.loading.modeling import check_state_dict, empty_model
    from lay2story_core.loading.vae import bundled_vae_config

    config = {k: v for k, v in bundled_vae_config(name).items() if not k.startswith("_")}
    reference = empty_model(lambda: AutoencoderKL(**config), source=name, what="reference")
    converted = convert_ldm_vae_to_diffusers(to_ldm(reference))
    assert infer_vae_config(converted, bundled_vae_config(name)) == bundled_vae_config(name)
    check_state_dict(reference, converted, name, "VAE")
