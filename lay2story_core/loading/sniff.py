"""Tell model families apart from state-dict key names, to turn "missing keys" into errors a user understands.

Every test is a key *suffix*, so wrappers and prefixes (``module.``, ``model.diffusion_model.``,
``first_stage_model.``, ``text_encoders.t5xxl.transformer.``) do not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ARCHITECTURE_NAMES", "describe_architecture", "sniff_architecture", "sniff_components"]

# Suffix groups: a component is present when every suffix of one of its groups ends some key.
_SIGNATURES: dict[str, tuple[tuple[str, ...], ...]] = {
    "flux": (
        ("double_blocks.0.img_attn.qkv.weight",),  # Black Forest Labs layout (ComfyUI)
        ("single_transformer_blocks.0.attn.to_q.weight", "x_embedder.weight"),  # diffusers FluxTransformer2DModel
    ),
    "sdxl_unet": (
        ("input_blocks.0.0.weight", "label_emb.0.0.weight"),  # LDM / ComfyUI
        ("time_embedding.linear_1.weight", "add_embedding.linear_1.weight"),  # diffusers UNet2DConditionModel
    ),
    "sd_unet": (
        ("input_blocks.0.0.weight", "time_embed.0.weight"),
        ("time_embedding.linear_1.weight", "down_blocks.0.resnets.0.conv1.weight"),
    ),
    "pixart": (("x_embedder.proj.weight", "t_block.1.weight"),),
    "pixart_diffusers": (("pos_embed.proj.weight", "adaln_single.linear.weight"),),
    "t5": (("encoder.block.0.layer.0.SelfAttention.q.weight",),),
    "clip": (
        ("text_model.encoder.layers.0.self_attn.q_proj.weight",),  # transformers CLIPTextModel
        ("vision_model.encoder.layers.0.self_attn.q_proj.weight",),  # transformers CLIPVisionModel
        ("transformer.resblocks.0.attn.in_proj_weight",),  # open_clip / OpenAI layout
    ),
    "vae": (
        ("encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight"),  # LDM / ComfyUI
        ("encoder.down_blocks.0.resnets.0.conv1.weight", "decoder.conv_in.weight"),  # diffusers AutoencoderKL
    ),
}
# Priority when a file holds several models: the denoiser of a full checkpoint is what it "is".
ARCHITECTURE_NAMES = ("flux", "sdxl_unet", "sd_unet", "pixart", "pixart_diffusers", "t5", "clip", "vae", "unknown")

_DESCRIPTIONS = {
    "flux": "a FLUX transformer",
    "sdxl_unet": "an SDXL UNet",
    "sd_unet": "a Stable Diffusion 1.x/2.x UNet",
    "pixart": "a PixArt transformer (original key names)",
    "pixart_diffusers": "a PixArt transformer (diffusers key names)",
    "t5": "a T5 text encoder",
    "clip": "a CLIP model",
    "vae": "a VAE (AutoencoderKL)",
    "unknown": "no model family these loaders know",
}


def _keys(state_dict: Mapping[str, object] | Iterable[str]) -> list[str]:
    return [str(k) for k in (state_dict.keys() if isinstance(state_dict, Mapping) else state_dict)]


def sniff_components(state_dict: Mapping[str, object] | Iterable[str]) -> set[str]:
    """Every known model family with its signature keys in ``state_dict`` (a full checkpoint holds several)."""
    keys = _keys(state_dict)
    found = set()
    for name, groups in _SIGNATURES.items():
        for group in groups:
            if all(any(k.endswith(suffix) for k in keys) for suffix in group):
                found.add(name)
                break
    # An SDXL UNet also carries every SD UNet signature key.
    if "sdxl_unet" in found:
        found.discard("sd_unet")
    return found


def sniff_architecture(state_dict: Mapping[str, object] | Iterable[str]) -> str:
    """The main model family of a state dict (or of its key names).

    One of ``"pixart"`` (original PixArt key names), ``"pixart_diffusers"``, ``"sdxl_unet"``, ``"sd_unet"``,
    ``"flux"``, ``"t5"``, ``"vae"``, ``"clip"``, ``"unknown"``. A full checkpoint (UNet + VAE + text encoder) is
    named after its denoiser.
    """
    found = sniff_components(state_dict)
    return next((name for name in ARCHITECTURE_NAMES if name in found), "unknown")


def describe_architecture(name: str) -> str:
    """Human words for a :func:`sniff_architecture` result, e.g. ``"an SDXL UNet"``."""
    return _DESCRIPTIONS.get(name, name)
