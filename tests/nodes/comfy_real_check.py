"""Peer check against a real ComfyUI checkout, in its own process (``test_comfy_real_host.py`` runs it):

    python tests/nodes/comfy_real_check.py COMFYUI_DIR  ->  one JSON line of measured relative errors

ComfyUI's own classes throughout: ``PixArtMS`` (alpha and 1024-MS layouts, tiny widths) inside a ``BaseModel`` from
``supported_models.PixArtAlpha`` and a ``ModelPatcher``; ``comfy.sd.CLIP`` with ComfyUI's PixArt tokenizer and a
tiny-config ComfyUI T5; ``comfy.sd.VAE`` (TAESD layout); ``comfy.model_management`` on the CPU. The same weights go
to our diffusers path (loader + ``StoryPipeline``), so the two hosts are compared on one checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from real_comfy import boot, tiny_t5_clip, tiny_taesd_vae


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main(comfy_dir: str) -> dict:
    boot(comfy_dir)  # ComfyUI on the CPU; the pack as ComfyUI imports it, ``lay2story_pack`` (its ``nodes`` clash)
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch
    from comfy_standin import PixArtMS as StandInPixArt
    from lay2story_pack.nodes.comfy import ComfyPixArt, ComfyStoryPipeline, managed

    from lay2story_core.consistency import ConsistencyConfig
    from lay2story_core.loading import load_pixart_transformer, load_t5_tokenizer
    from lay2story_core.models import SubjectBranch
    from lay2story_core.pipelines import StoryPipeline, make_scheduler
    from lay2story_core.story import Story

    out: dict = {}
    workdir = tempfile.TemporaryDirectory()  # removed when the check returns (its weights are 12 MB a run)
    tmp = workdir.name
    cpu = torch.device("cpu")

    def comfy_model(micro: bool, seed: int):
        torch.manual_seed(seed)
        weights = StandInPixArt(hidden_size=144, depth=4, num_heads=2, caption_channels=12,
                                micro_condition=micro).state_dict()
        unet = {"image_model": "pixart_alpha", "hidden_size": 144, "depth": 4, "num_heads": 2, "patch_size": 2,
                "in_channels": 4, "caption_channels": 12, "micro_condition": micro, "pred_sigma": True}
        config = comfy.supported_models.PixArtAlpha(unet)
        config.set_inference_dtype(torch.float32, None)
        base = config.get_model({})
        missing, unexpected = base.diffusion_model.load_state_dict(weights, strict=False)
        assert not unexpected and all("y_embedding" in k for k in missing), (missing, unexpected)
        path = os.path.join(tmp, f"pixart_{'ms' if micro else 'alpha'}.pth")
        torch.save(weights, path)
        return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu), path

    # 1. the denoiser: ComfyPixArt vs ComfyUI's PixArtMS.forward vs our loader + diffusers
    with torch.no_grad():
        for micro, sizes in ((False, [(64, 64), (96, 64)]), (True, [(64, 64), (96, 64), (128, 128)])):
            patcher, path = comfy_model(micro, 0)
            mm.load_models_gpu([patcher])
            dm = patcher.model.diffusion_model
            ours_model = load_pixart_transformer(path, sample_size=128 if micro else 64)
            for h, w in sizes:
                torch.manual_seed(1)
                x, t, ctx = torch.randn(2, 4, h, w), torch.tensor([900.0, 10.0]), torch.randn(2, 8, 12)
                added = None
                kwargs = {}
                if micro:
                    added = {"resolution": torch.tensor([[h * 8.0, w * 8.0]]).repeat(2, 1),
                             "aspect_ratio": torch.tensor([[h / w]]).repeat(2, 1)}
                    kwargs = {"c_size": added["resolution"], "c_ar": added["aspect_ratio"]}
                mine = ComfyPixArt(dm, None, torch.float32, cpu)(x, ctx, t, added).sample
                theirs = dm(x, t, ctx, **kwargs)
                diffusers = ours_model(x, timestep=t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
                key = f"{'ms' if micro else 'alpha'}_{h}x{w}"
                out[f"denoiser_vs_comfyui_{key}"] = rel(mine[:, :4], theirs)
                out[f"denoiser_vs_diffusers_{key}"] = rel(mine, diffusers)
            # a LoRA-style weight patch applied by ComfyUI's ModelPatcher at load (it replaces the parameter)
            lora = patcher.clone()
            lora.add_patches({"diffusion_model.blocks.0.attn.qkv.weight": ("diff", (torch.randn(432, 144) * 0.3,))})
            mm.load_models_gpu([lora])
            patched = lora.model.diffusion_model
            mine_lora = ComfyPixArt(patched, None, torch.float32, cpu)(x, ctx, t, added).sample[:, :4]
            out[f"lora_vs_comfyui_{'ms' if micro else 'alpha'}"] = rel(mine_lora, patched(x, t, ctx, **kwargs))
            out[f"lora_changed_{'ms' if micro else 'alpha'}"] = rel(patched(x, t, ctx, **kwargs), theirs)
            mm.unload_all_models()
            mm.load_models_gpu([patcher])
            # low VRAM on the real ModelPatcher: every module cast per call
            patcher.unpatch_model()
            patcher.load(cpu, lowvram_model_memory=1)
            low = ComfyPixArt(dm, None, torch.float32, cpu)(x, ctx, t, added).sample
            out[f"lowvram_vs_full_{'ms' if micro else 'alpha'}"] = rel(low, mine)
            patcher.unpatch_model()
            mm.unload_all_models()

    # 2. the whole story: ComfyUI MODEL + CLIP (its PixArt tokenizer, a tiny ComfyUI T5) + VAE vs our pipeline
    clip, hf_t5 = tiny_t5_clip(seed=2)
    vae = tiny_taesd_vae(seed=3)
    patcher, path = comfy_model(False, 4)
    tokenizer = load_t5_tokenizer(os.path.join(comfy_dir, "comfy", "text_encoders", "t5_tokenizer"))
    from diffusers import AutoencoderKL

    diffusers_vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, layers_per_block=1)
    own = StoryPipeline(tokenizer, hf_t5, diffusers_vae, load_pixart_transformer(path, sample_size=64))
    story = Story.from_dict({
        "version": 1, "width": 512, "height": 512, "negative_prompt": "blurry",
        "characters": [{"id": "hero", "identity": "a red fox"}, {"id": "cat", "identity": "a small grey cat"}],
        "frames": [{"prompt": "in the grass", "subjects": [
            {"character": "hero", "box": [0, 0, 0.5, 0.5], "caption": "the fox sitting"},
            {"character": "cat", "box": [0.5, 0.5, 1, 1]}]},
                   {"prompt": "on a bridge over a river"}]})
    settings = {"num_inference_steps": 2, "seed": 7, "output_type": "latent"}
    native = ComfyStoryPipeline(patcher, clip, vae, make_scheduler("dpmsolver++"))
    for mode in ("none", "training_free"):
        a = native(story, mode=mode, **settings).latents
        b = own(story, mode=mode, **settings).latents
        out[f"story_native_vs_pack_{mode}"] = rel(a, b)
    rate0 = native(story, mode="training_free", consistency=ConsistencyConfig(rate=0.0, regional_captions=False),
                   **settings)
    out["training_free_rate0_vs_plain"] = rel(rate0.latents, native(story, mode="none", **settings).latents)
    branch = SubjectBranch.from_transformer(own.transformer).eval()
    with torch.no_grad():
        for block in branch.blocks:
            block.proj_out.weight.normal_(0, 0.05)
    with_branch = ComfyStoryPipeline(patcher, clip, vae, make_scheduler("dpmsolver++"), branch, managed(branch))
    own.subject_branch = branch
    a = with_branch(story, mode="lay2story", **settings).latents
    out["story_native_vs_pack_lay2story"] = rel(a, own(story, mode="lay2story", **settings).latents)
    frames = with_branch.decode_latents(a)
    out["decoded_frames_shape"] = list(frames.shape)
    out["loaded_models_after"] = len(mm.current_loaded_models)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
