"""The three nodes that let ComfyUI's own samplers draw a story (Apply Story, Story Conditioning, Empty Story
Latent) against the real ComfyUI, in its own process:

    python tests/nodes/check_story_nodes.py COMFYUI_DIR  ->  one JSON line of figures (``test_story_apply_nodes.py``)

ComfyUI's own classes throughout: a tiny random-weight SD1.5 ``UNetModel`` from ``supported_models.SD15`` in a
``ModelPatcher``; ``comfy.sd.CLIP`` over ComfyUI's SD1 tokenizer and a tiny ``SDClipModel`` text model (32 wide,
two layers), and over ComfyUI's PixArt T5 tokenizer (unpadded) and a tiny ComfyUI T5;
ComfyUI's ``nodes.py`` loaded by file path (``KSampler``, ``KSamplerAdvanced``, ``CLIPTextEncode``: the classes its
server runs). Figures are equivalences (``torch.equal``, relative errors) with their controls, error lines, shapes.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch
from real_comfy import TINY_T5, boot, emit, randomize, tiny_t5_clip, tiny_taesd_vae

FRAMES = 4
LATENT = 16  # 128 px frames
STEPS = 4
LONG_PROMPT = "walking slowly along a long winding forest path " * 9  # more than 75 tokens: two CLIP chunks
TINY_CLIP = {"hidden_act": "quick_gelu", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
             "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
             "projection_dim": 32, "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def comfy_nodes(comfy_dir: str):
    """ComfyUI's own ``nodes.py`` as a module of another name (the pack's package owns ``nodes`` here)."""
    spec = importlib.util.spec_from_file_location("comfy_core_nodes", os.path.join(comfy_dir, "nodes.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_story(boxes: bool = True, prompts=None, size: int = 8 * LATENT):
    from lay2story_core.story import Story

    subjects = {0: [{"character": "hero", "box": [0.05, 0.1, 0.5, 0.9], "caption": "the fox sitting"},
                    {"character": "cat", "box": [0.55, 0.5, 0.95, 0.95], "caption": "the cat asleep"}],
                1: [{"character": "hero", "box": [0.3, 0.2, 0.8, 0.9]}]}
    prompts = prompts or ["in the grass", LONG_PROMPT, "in the snow", "at night"]
    return Story.from_dict({
        "version": 1, "width": size, "height": size, "negative_prompt": "blurry, low quality",
        "characters": [{"id": "hero", "identity": "a red fox"}, {"id": "cat", "identity": "a small grey cat"}],
        "frames": [{"prompt": p, **({"subjects": subjects[i]} if boxes and i in subjects else {})}
                   for i, p in enumerate(prompts)]})


def sd15(seed: int = 0):
    import comfy.model_patcher
    import comfy.supported_models

    unet = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
            "transformer_depth": [1, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1,
            "use_linear_in_transformer": False, "context_dim": 32, "transformer_depth_output": [1, 1, 1, 1],
            "use_temporal_resblock": False, "use_temporal_attention": False}
    config = comfy.supported_models.SD15(unet)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # ComfyUI's ops leave weights uninitialised
        for p in base.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def pixart(seed: int = 3):
    """A tiny random-weight PixArt-alpha (``supported_models.PixArtAlpha``) taking the tiny T5's 12-wide states."""
    import comfy.model_patcher
    import comfy.supported_models

    unet = {"image_model": "pixart_alpha", "hidden_size": 72, "depth": 2, "num_heads": 1, "patch_size": 2,
            "in_channels": 4, "caption_channels": TINY_T5["d_model"], "micro_condition": False, "pred_sigma": True}
    config = comfy.supported_models.PixArtAlpha(unet)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in base.diffusion_model.named_parameters():
            if "y_embedding" in name or p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / max(p.shape[-1], 1) ** 0.5)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def other_model(kind: str):
    """Never run: a tiny FLUX (16-channel latents) or SD3 (an architecture the story patch does not support)."""
    import comfy.model_patcher
    import comfy.supported_models

    if kind == "flux":
        unet = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 16, "context_in_dim": 32,
                "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
        config = comfy.supported_models.Flux(unet)
    else:
        context = {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}}
        unet = {"in_channels": 16, "pos_embed_scaling_factor": None, "input_size": None, "patch_size": 2, "depth": 1,
                "out_channels": 16, "adm_in_channels": 2048, "context_embedder_config": context,
                "pos_embed_max_size": 16, "num_patches": 256}
        config = comfy.supported_models.SD3(unet)
    config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=cpu, offload_device=cpu)


def cpu_float32() -> dict:
    """``comfy.sd.CLIP``'s model options for a float32 text encoder on the CPU (ComfyUI's CPU default: float16)."""
    return {"load_device": torch.device("cpu"), "offload_device": torch.device("cpu"), "dtype": torch.float32}


def tiny_clip(seed: int = 1):
    """``comfy.sd.CLIP`` with ComfyUI's SD1 tokenizer (77-token chunks) over a tiny random CLIP text model."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    class TinyL(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
            super().__init__(device=device, dtype=dtype, textmodel_json_config=dict(TINY_CLIP),
                             return_projected_pooled=False, model_options=model_options)

    class TinyClip(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=TinyL)

    clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinyClip),
                         model_options=cpu_float32())
    randomize(clip.cond_stage_model, seed)
    return clip


def tiny_t5(seed: int = 2):
    """``comfy.sd.CLIP`` as ComfyUI builds PixArt's (``real_comfy.tiny_t5_clip``: its unpadded T5 tokenizer over a
    tiny ComfyUI T5), float32, seeded random weights."""
    return tiny_t5_clip(seed, weights="random", model_options=cpu_float32())[0]


def error_of(call) -> str:
    try:
        call()
    except Exception as err:  # noqa: BLE001 (the figure is the message, whatever the class)
        return f"{type(err).__name__}: {err}"
    return "no error"


def main(comfy_dir: str) -> dict:
    boot(comfy_dir)
    import comfy.model_management as mm
    import comfy.patcher_extension
    import comfy.sample
    from lay2story_pack.nodes.bundles import SubjectBranchBundle
    from lay2story_pack.nodes.story_apply import MEMORY_KEY, L2S_ApplyStory
    from lay2story_pack.nodes.story_conditioning import L2S_EmptyStoryLatent, L2S_StoryConditioning

    from lay2story_core.pipelines import ReferenceImage
    from lay2story_core.story import Layout, Subject

    core = comfy_nodes(comfy_dir)
    out: dict = {}
    model, clip, story = sd15(), tiny_clip(), make_story()
    apply, conditioning, empty = L2S_ApplyStory(), L2S_StoryConditioning(), L2S_EmptyStoryLatent()

    # 1. Story Conditioning: one row per frame, each equal to its caption encoded alone
    positive, negative = conditioning.encode(clip, story)
    cond, extra = positive[0]
    neg_cond, neg_extra = negative[0]
    out["positive_shape"], out["negative_shape"] = list(cond.shape), list(neg_cond.shape)
    out["pooled_shape"] = list(extra["pooled_output"].shape)
    single = [clip.encode_from_tokens(clip.tokenize(story.global_caption(i)), return_pooled=True, return_dict=True)
              for i in range(FRAMES)]
    out["single_lengths"] = [int(s["cond"].shape[1]) for s in single]
    out["rows_equal_single"] = [
        bool(torch.equal(cond[i:i + 1], s["cond"].repeat(1, cond.shape[1] // s["cond"].shape[1], 1)))
        for i, s in enumerate(single)]
    out["pooled_rows_equal_single"] = [bool(torch.equal(extra["pooled_output"][i], s["pooled_output"][0]))
                                       for i, s in enumerate(single)]
    neg_single = clip.encode_from_tokens(clip.tokenize(story.negative_prompt), return_pooled=True, return_dict=True)
    out["negative_rows_equal_single"] = [bool(torch.equal(neg_cond[i], neg_single["cond"][0])) for i in range(FRAMES)]
    out["rows_differ_between_frames"] = rel(cond[0], cond[2])  # control: the frames' captions are not one caption
    # through ComfyUI's unpadded T5 tokenizer (PixArt): 15 and 25 tokens repeat to 75 (exact); 15 and 27 would
    # need 135 (> 4 x 27): padded to 27 with T5's pad token
    t5 = tiny_t5()
    for name, long in (("t5_repeat", "on a long wooden bridge over the wide river at dawn"),
                       ("t5_padded", "on a long wooden bridge over the wide river at dawn in spring")):
        t5_story = make_story(boxes=False, prompts=["x", long, "y", "z"])
        rows = conditioning.encode(t5, t5_story)[0][0][0]
        texts = [t5_story.global_caption(i) for i in range(FRAMES)]
        lengths = [int(t5.encode_from_tokens(t5.tokenize(t)).shape[1]) for t in texts]
        if name == "t5_padded":
            options = {"t5xxl_min_length": max(lengths)}
            expected = [t5.encode_from_tokens(t5.tokenize(t, tokenizer_options=options)) for t in texts]
        else:
            expected = [t5.encode_from_tokens(t5.tokenize(t)) for t in texts]
            expected = [e.repeat(1, rows.shape[1] // e.shape[1], 1) for e in expected]
        out[f"{name}_lengths"], out[f"{name}_rows_shape"] = lengths, list(rows.shape)
        out[f"{name}_rows_equal"] = [bool(torch.equal(rows[i:i + 1], expected[i])) for i in range(FRAMES)]

    # 2. Empty Story Latent: one zero latent per frame, the model's channels
    out["latent_default"] = list(empty.generate(story)[0]["samples"].shape)
    out["latent_sd15"] = list(empty.generate(story, 64, 0, model)[0]["samples"].shape)
    out["latent_flux"] = list(empty.generate(story, 0, 96, other_model("flux"))[0]["samples"].shape)
    latent = empty.generate(story, 0, 0, model)[0]

    # 3. KSampler on the story: rate 0 is the plain model bit for bit; the input MODEL is never changed
    ksampler, advanced = core.KSampler(), core.KSamplerAdvanced()

    def run(m, lat=latent, pos=positive):
        return ksampler.sample(m, 7, STEPS, 5.0, "euler", "normal", pos, negative, lat)[0]["samples"]

    plain = run(model)
    out["plain_finite"] = bool(torch.isfinite(plain).all())
    plain_story = make_story(boxes=True, prompts=["in the grass", "on a bridge", "in the snow", "at night"])
    zero = apply.apply(model, plain_story, rate=0.0)[0]
    out["rate0_equals_plain"] = bool(torch.equal(run(zero), plain))
    args = (7, STEPS, 5.0, "euler", "normal", positive, negative, latent, 0, STEPS, "disable")
    plain_adv = advanced.sample(model, "enable", *args)[0]["samples"]
    out["rate0_equals_plain_advanced"] = bool(torch.equal(advanced.sample(zero, "enable", *args)[0]["samples"],
                                                          plain_adv))
    story_model = apply.apply(model, story, rate=0.5, blocks="all", clip=clip)[0]
    shared = run(story_model)
    out["story_finite"] = bool(torch.isfinite(shared).all())
    out["story_vs_plain"] = rel(shared, plain)  # the patch is active (a control, next to the equalities above)
    out["input_model_unchanged"] = bool(torch.equal(run(model), plain))
    out["input_model_clean"] = (not model.object_patches and not model.get_all_wrappers(
        comfy.patcher_extension.WrappersMP.OUTER_SAMPLE)
        and not model.model_options.get("transformer_options", {}).get("patches_replace"))
    # each batch row is its own frame: frame i sampled alone with its caption (CLIP Text Encode) and its noise
    noise = comfy.sample.prepare_noise(latent["samples"], 7)
    encode = core.CLIPTextEncode()
    alone_rel = []
    for i in (0, 2):
        alone = comfy.sample.sample(model, noise[i:i + 1], STEPS, 5.0, "euler", "normal",
                                    encode.encode(clip, story.global_caption(i))[0],
                                    encode.encode(clip, story.negative_prompt)[0], latent["samples"][i:i + 1])
        alone_rel.append(rel(plain[i:i + 1], alone))
    out["frame_alone_vs_batch_row"] = alone_rel
    out["frame_alone_vs_other_row"] = rel(plain[0:1], alone)  # control: frame 2 alone against frame 0's row

    # PixArt (training-free) through the same nodes: the T5 conditioning, rate 0 bit for bit, sharing + captions
    t5, pix = tiny_t5(), pixart()
    big = make_story(prompts=["in the grass", "on a bridge", "in the snow", "at night"], size=512)
    pix_pos, pix_neg = conditioning.encode(t5, big)
    pix_latent = empty.generate(big, 0, 0, pix)[0]
    out["pixart_latent"] = list(pix_latent["samples"].shape)

    def run_pixart(m):
        return ksampler.sample(m, 3, 3, 4.5, "euler", "normal", pix_pos, pix_neg, pix_latent)[0]["samples"]

    pix_plain = run_pixart(pix)
    out["pixart_plain_finite"] = bool(torch.isfinite(pix_plain).all())
    out["pixart_rate0_equals_plain"] = bool(torch.equal(run_pixart(apply.apply(pix, big, rate=0.0)[0]), pix_plain))
    pix_story = run_pixart(apply.apply(pix, big, rate=0.5, blocks="all", clip=t5)[0])
    out["pixart_story_finite"] = bool(torch.isfinite(pix_story).all())
    out["pixart_story_vs_plain"] = rel(pix_story, pix_plain)

    # 4. memory: the estimate sees the identity bank (rate 0.5, 4 identity frames: x3), rate 0 patches nothing
    mm.unload_all_models()
    base = model.get_model_object("memory_usage_factor")
    out["memory_factor"] = story_model.get_model_object("memory_usage_factor") / base
    out["memory_rate0_patched"] = "memory_usage_factor" in zero.object_patches
    shape = [2 * FRAMES, 4, LATENT, LATENT]
    plain_need = model.model.memory_required(shape)
    seen = []
    wrapper = story_model.get_wrappers(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, MEMORY_KEY)[0]
    wrapper(lambda m, s, *a, **k: seen.append(list(s)), story_model, shape, {}, model_options={})
    mm.load_models_gpu([story_model])
    out["memory_loaded_ratio"] = story_model.model.memory_required(shape) / plain_need
    wrapper(lambda m, s, *a, **k: seen.append(list(s)), story_model, shape, {}, model_options={})
    out["memory_prepare_batches"] = [s[0] for s in seen]  # before load: scaled batch; once patched: as given
    mm.unload_all_models()
    out["memory_restored"] = model.model.memory_usage_factor == base
    again = apply.apply(story_model, story, rate=0.25)[0]
    out["memory_factor_reapplied"] = again.get_model_object("memory_usage_factor") / base

    # 5. one error line naming the input, before anything is patched
    branch = SubjectBranchBundle(branch=torch.nn.Linear(1, 1), patcher=None, source="test")
    picture = {"hero": ReferenceImage(image=torch.rand(3, 16, 16), box=None)}
    vae = tiny_taesd_vae()
    long_layout = Layout(frames=tuple((Subject("hero", (0.1, 0.1, 0.5, 0.5)),) for _ in range(FRAMES + 2)),
                         characters=("hero", "cat"))
    errors = {
        "model_sd3": lambda: apply.apply(other_model("sd3"), story),
        "model_not_a_model": lambda: apply.apply("model.safetensors", story),
        "subject_branch_on_sd15": lambda: apply.apply(model, story, subject_branch=branch),
        "subject_branch_on_flux": lambda: apply.apply(other_model("flux"), story, subject_branch=branch),
        "subject_branch_without_clip": lambda: apply.apply(pix, big, subject_branch=branch),
        "reference_without_vae": lambda: apply.apply(model, story, reference=picture),
        "reference_without_subject_branch": lambda: apply.apply(model, story, reference=picture, vae=vae),
        "blocks_text": lambda: apply.apply(model, story, blocks="middle"),
        "blocks_out_of_range": lambda: apply.apply(model, story, blocks="0,99"),
        "rate": lambda: apply.apply(model, story, rate=1.5),
        "identity_frames": lambda: apply.apply(model, story, identity_frames=FRAMES + 1),
        "start_step": lambda: apply.apply(model, story, start_step=-1),
        "layout_of_another_story": lambda: apply.apply(model, story, layout=long_layout),
        "story": lambda: apply.apply(model, "a story"),
        "latent_of_another_story": lambda: run(story_model, {"samples": latent["samples"][:3]}),
        "conditioning_clip": lambda: conditioning.encode("clip", story),
        "conditioning_layout": lambda: conditioning.encode(clip, story, long_layout),
        "latent_width": lambda: empty.generate(story, 8),
        "latent_model": lambda: empty.generate(story, 0, 0, "model"),
    }
    out["errors"] = {name: error_of(call) for name, call in errors.items()}
    out["input_model_clean_after_errors"] = (not model.object_patches and not model.get_all_wrappers(
        comfy.patcher_extension.WrappersMP.OUTER_SAMPLE)
        and not model.model_options.get("transformer_options", {}).get("patches_replace"))
    return out


if __name__ == "__main__":
    emit(main(sys.argv[1]))
