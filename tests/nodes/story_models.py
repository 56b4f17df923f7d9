"""A ComfyUI ``models/`` folder of random-weight files in the real formats ComfyUI's own loaders detect, for the
story workflows' real-host runs (tests/nodes/test_story_workflows_real.py, tests/nodes/story_server.py)::

    python tests/nodes/story_models.py COMFYUI_DIR OUT_DIR     # prints one JSON line: files, sizes, timings

* ``checkpoints/v1-5-pruned-emaonly-fp16.safetensors``: an SD1.5 single-file checkpoint (``model.diffusion_model``,
  ``cond_stage_model``, ``first_stage_model`` keys, fp16). ComfyUI's detection (``comfy/model_detection.py``) needs
  ``model_channels`` 320 and ``context_dim`` 768 and reads the rest from the keys, so the UNet is SD1.5's at reduced
  depth (channel_mult (1, 1), one res block and one transformer per level); the CLIP-L and the VAE are complete,
  because ComfyUI builds them at full size whatever the file holds (``SD15.clip_target``, ``comfy.sd.VAE``).
* ``text_encoders/clip_l.safetensors``: the same CLIP-L as a text-encoder file (``text_model.*`` keys); loaded with
  CLIPLoader type ``sd3`` it gives 4096-wide conditioning (ComfyUI pads CLIP-L for SD3): "another CLIP".
* ``diffusion_models/sd3_tiny.safetensors``: an SD3 MMDiT with one joint block (64 wide): an architecture the story
  patch does not support, detected by UNETLoader as SD3.

Every tensor's names and shapes come from ComfyUI's own modules built on the ``meta`` device (nothing allocated),
so the files are what ComfyUI expects by construction; values are seeded normals scaled 1 / sqrt(fan-in) (norm
scales 1, biases 0), so activations stay finite. The script checks each file with ComfyUI's own detection.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger("story_models")
SD15_FILE = "v1-5-pruned-emaonly-fp16.safetensors"
CLIP_L_FILE = "clip_l.safetensors"
SD3_FILE = "sd3_tiny.safetensors"
FLUX_FILE = "flux1-dev.safetensors"
FLUX_VAE_FILE = "ae.safetensors"
PIXART_FILE = "PixArt-XL-2-512x512.pth"
SD_VAE_FILE = "vae-ft-mse-840000-ema-pruned.safetensors"
BRANCH_FOLDER = "tiny_branch"
FAMILIES = ("sd15", "flux", "pixart")
# SD1.5 at reduced depth (model_channels 320 and context_dim 768 are what ComfyUI's SD15 detection requires).
SD15_UNET = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [1, 1],
             "channel_mult": [1, 1], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
             "transformer_depth_middle": 1, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
             "use_linear_in_transformer": False, "use_spatial_transformer": True, "attention_resolutions": [1, 2]}
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def random_like(shapes: dict[str, torch.Size], seed: int, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """Seeded random tensors of the given shapes: N(0, 1/fan_in) for matrices and kernels, 1 for vector weights
    (norm scales), 0 for biases and other vectors."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[name] = (torch.randn(shape, generator=gen) / math.sqrt(fan_in)).to(dtype)
        elif name.endswith("weight") or name.endswith("scale"):
            out[name] = torch.ones(shape, dtype=dtype)
        else:
            out[name] = torch.zeros(shape, dtype=dtype)
    return out


def meta_shapes(build, device: str = "meta") -> dict[str, torch.Size]:
    """Names and shapes of the module ``build()`` makes, built on the meta device (where its constructor allows)."""
    with torch.device(device):
        module = build()
    return {k: v.shape for k, v in module.state_dict().items()}


def sd15_shapes() -> tuple[dict, dict, dict]:
    """(UNet, CLIP-L text model, VAE) shapes from ComfyUI's own classes."""
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    ops = comfy.ops.disable_weight_init
    unet = meta_shapes(lambda: UNetModel(**{k: v for k, v in SD15_UNET.items() if k != "attention_resolutions"},
                                         dtype=torch.float16, operations=ops))
    clip = meta_shapes(lambda: comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float16))
    clip = {k[len("transformer."):]: v for k, v in clip.items() if k.startswith("transformer.text_model.")}
    return unet, clip, meta_shapes(lambda: _vae(4))


def sd3_shapes() -> dict:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    context = {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}}
    return meta_shapes(lambda: MMDiT(input_size=None, patch_size=2, in_channels=16, depth=1, out_channels=16,
                                     adm_in_channels=2048, context_embedder_config=context, pos_embed_max_size=16,
                                     num_patches=256, dtype=torch.float16, operations=comfy.ops.disable_weight_init))


def flux_shapes() -> dict:
    """FLUX.1-dev's layout (hidden 3072, 24 heads: what ComfyUI's detection fixes) with one double and one single
    block."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    params = {"in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072,
              "mlp_ratio": 4.0, "num_heads": 24, "depth": 1, "depth_single_blocks": 1, "axes_dim": [16, 56, 56],
              "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
    return meta_shapes(lambda: Flux(dtype=torch.float16, operations=comfy.ops.disable_weight_init, **params))


def pixart_shapes() -> dict:
    """PixArt-XL-2-512x512's layout (hidden 1152, 16 heads, T5 captions; no micro-conditions) with two blocks."""
    import comfy.ops
    from comfy.ldm.pixart.pixartms import PixArtMS

    return meta_shapes(lambda: PixArtMS(input_size=64, depth=2, micro_condition=False, caption_channels=4096,
                                        model_max_length=120, dtype=torch.float16,
                                        operations=comfy.ops.disable_weight_init), device="cpu")  # calls .item()


def save_subject_branch(path: Path) -> None:
    """A random Lay2Story subject branch for the two-block PixArt-XL above (one subject block, 1152 wide)."""
    from lay2story_core.models import SubjectBranch

    torch.manual_seed(5)
    branch = SubjectBranch(num_layers=1, num_attention_heads=16, attention_head_dim=72, sample_size=64,
                           global_num_layers=2)
    with torch.no_grad():  # the zero-initialised output projections get small values: the branch acts
        for name, param in branch.named_parameters():
            if param.dim() >= 2 and not param.any() and "input_conv" not in name:
                param.normal_(0.0, 0.02)
    branch.save_pretrained(path)


def _detected(state_dict: dict, prefix: str = "") -> str | None:
    import comfy.model_detection

    config = comfy.model_detection.model_config_from_unet(state_dict, prefix)
    return type(config).__name__ if config is not None else None


def build(out: Path, families: tuple[str, ...] = FAMILIES) -> dict:
    """Writes the files of ``families`` under ``out`` (a ComfyUI models folder); returns sizes, timings and what
    ComfyUI's detection makes of each diffusion model."""
    from safetensors.torch import save_file

    start = time.monotonic()
    figures: dict = {"detected": {}}
    for sub in ("checkpoints", "text_encoders", "diffusion_models", "vae", "lay2story"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    unet_shapes, clip_shapes, vae_shapes = sd15_shapes()
    clip, vae = random_like(clip_shapes, 2), random_like(vae_shapes, 3)
    save_file(clip, str(out / "text_encoders" / CLIP_L_FILE))
    if "sd15" in families:
        unet = random_like(unet_shapes, 1)
        checkpoint = ({f"model.diffusion_model.{k}": v for k, v in unet.items()}
                      | {f"cond_stage_model.transformer.{k}": v for k, v in clip.items()}
                      | {f"first_stage_model.{k}": v for k, v in vae.items()})
        save_file(checkpoint, str(out / "checkpoints" / SD15_FILE))
        figures["detected"][SD15_FILE] = _detected(checkpoint, "model.diffusion_model.")
        del checkpoint, unet
        sd3 = random_like(sd3_shapes(), 4)
        save_file(sd3, str(out / "diffusion_models" / SD3_FILE))
        figures["detected"][SD3_FILE] = _detected(sd3)
    if "pixart" in families:
        save_file(vae, str(out / "vae" / SD_VAE_FILE))
        pixart = random_like(pixart_shapes(), 6)
        # PixArt's releases carry their 32 x 32 position-embedding table (ComfyUI's detection reads the native size
        # from it; ComfyUI's model recomputes the table and ignores the tensor)
        pixart["pos_embed"] = torch.zeros(1, 32 * 32, 1152, dtype=torch.float16)
        torch.save(pixart, out / "diffusion_models" / PIXART_FILE)  # a .pth, as PixArt's own releases
        figures["detected"][PIXART_FILE] = _detected(pixart)
        save_subject_branch(out / "lay2story" / BRANCH_FOLDER)
    del vae
    if "flux" in families:
        flux_vae = {k: v for k, v in random_like(meta_shapes(lambda: _vae(16)), 7).items() if "quant_conv" not in k}
        save_file(flux_vae, str(out / "vae" / FLUX_VAE_FILE))
        flux = random_like(flux_shapes(), 8)
        save_file(flux, str(out / "diffusion_models" / FLUX_FILE))
        figures["detected"][FLUX_FILE] = _detected(flux)
    figures["files_mib"] = {str(p.relative_to(out)): round(p.stat().st_size / 2**20, 1)
                            for p in sorted(out.rglob("*")) if p.is_file()}
    figures["build_s"] = round(time.monotonic() - start, 2)
    return figures


def _vae(latent_channels: int):
    from comfy.ldm.models.autoencoder import AutoencoderKL

    return AutoencoderKL(ddconfig={**SD_VAE, "z_channels": latent_channels}, embed_dim=latent_channels)


def main() -> None:
    comfy_dir, out = sys.argv[1], Path(sys.argv[2])
    families = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else FAMILIES
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_comfy import boot, emit

    boot(comfy_dir)
    emit(build(out, families))


if __name__ == "__main__":
    main()
