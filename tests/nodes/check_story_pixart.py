"""PixArt stories under ComfyUI's own samplers, against the real ComfyUI in its own process
(``test_story_pixart.py`` runs it):

    python tests/nodes/check_story_pixart.py COMFYUI_DIR  ->  one JSON line of measured figures

ComfyUI's own classes throughout, built as ``comfy_real_check.py`` builds them: a tiny ``PixArtMS`` (PixArt-alpha
layout) in a ``BaseModel`` + ``ModelPatcher``, ``comfy.sd.CLIP`` (ComfyUI's PixArt tokenizer, a tiny ComfyUI T5),
``comfy.sd.VAE`` (TAESD layout). Measured:

1. ``comfy.sample.sample`` (the KSampler's call) on the story-patched MODEL at rate 0 == the plain MODEL, bit for bit,
   for two samplers/schedulers, with CFG chunks batched together and in separate calls;
2. training-free (rate 0.5) and Lay2Story runs complete under both samplers and change the frames;
3. model-call equivalence: the patched ``diffusion_model`` called as ``BaseModel._apply_model`` calls it vs the
   call ``L2S_StorySampler``'s path (``ComfyStoryPipeline`` + ``ComfyPixArt``) makes, on its recorded inputs
   (same x, t, captions), for modes none / training_free / lay2story, in ComfyUI's row orders and split calls;
4. a LoRA-like ``add_patches`` on a block weight under the object patch; bad inputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from real_comfy import boot, emit, tiny_t5_clip, tiny_taesd_vae  # noqa: E402

STEPS_A = 2  # the pipeline's steps (its call of step 1 is compared)


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def pixart_model(tmp: str, micro: bool, seed: int):
    """A tiny ``PixArtMS`` (alpha layout, or 1024-MS with micro-conditions) in ComfyUI's ``BaseModel`` +
    ``ModelPatcher``, and its weights' file (for the diffusers side the subject branch is initialised from)."""
    import comfy.model_patcher
    import comfy.supported_models
    import torch
    from comfy_standin import PixArtMS as StandInPixArt

    torch.manual_seed(seed)
    weights = StandInPixArt(hidden_size=144, depth=4, num_heads=2, caption_channels=12,
                            micro_condition=micro).state_dict()
    unet = {"image_model": "pixart_alpha", "hidden_size": 144, "depth": 4, "num_heads": 2, "patch_size": 2,
            "in_channels": 4, "caption_channels": 12, "micro_condition": micro, "pred_sigma": True}
    config = comfy.supported_models.PixArtAlpha(unet)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    base.diffusion_model.load_state_dict(weights, strict=False)
    path = os.path.join(tmp, f"pixart_{'ms' if micro else 'alpha'}.pth")
    torch.save(weights, path)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu), path


def build(tmp: str):
    """The tiny PixArt MODEL, CLIP and VAE (ComfyUI's classes; ``real_comfy``'s tiny T5 CLIP and TAESD VAE)."""
    patcher, path = pixart_model(tmp, False, 0)
    clip, _ = tiny_t5_clip(seed=2)
    return patcher, path, clip, tiny_taesd_vae(seed=3)


def equal_length_texts(clip, texts: list[str]) -> list[str]:
    """``texts`` padded with words so all have the same T5 token count (ComfyUI's PixArt has no caption mask: the
    compared calls then need no padding)."""
    from lay2story_pack.nodes.comfy import host

    def length(text: str) -> int:
        return int(host.encode_texts(clip, [text], "cpu", __import__("torch").float32)[1].sum())

    target = max(length(t) for t in texts) + 1
    out = []
    for text in texts:
        while length(text) < target:
            text += " the"
        out.append(text)
    return out


def make_story(clip):
    from lay2story_core.story import Story

    prompts = ["in the grass", "on a bridge over a river", "under a tree", "at night"]
    negative = "blurry"
    base = {"version": 1, "width": 320, "height": 320,
            "characters": [{"id": "hero", "identity": "a red fox"}, {"id": "cat", "identity": "a small grey cat"}],
            "frames": [
                {"prompt": prompts[0], "subjects": [
                    {"character": "hero", "box": [0, 0, 0.5, 0.5], "caption": "the fox sitting"},
                    {"character": "cat", "box": [0.5, 0.5, 1, 1]}]},
                {"prompt": prompts[1], "subjects": [{"character": "hero", "box": [0.25, 0.2, 0.8, 0.75]}]},
                {"prompt": prompts[2]},
                {"prompt": prompts[3], "subjects": [
                    {"character": "cat", "box": [0, 0.5, 0.5, 1], "caption": "the cat running"}]}]}
    story = Story.from_dict({**base, "negative_prompt": negative})
    texts = equal_length_texts(clip, [story.global_caption(i) for i in range(4)] + [negative])
    # frame prompts padded so every global caption (identity + prompt) and the negative have one length
    for i in range(4):
        base["frames"][i]["prompt"] += texts[i][len(story.global_caption(i)):]
    return Story.from_dict({**base, "negative_prompt": texts[4]})


def main(comfy_dir: str) -> dict:
    start = time.time()
    boot(comfy_dir)
    import comfy.ldm.modules.attention as comfy_attention
    import comfy.model_management as mm
    import comfy.sample
    import torch
    from lay2story_pack.nodes.comfy import host
    from lay2story_pack.nodes.comfy.arch_pixart import FORWARD, pixart_patch_extra
    from lay2story_pack.nodes.comfy.pipeline import ComfyStoryPipeline
    from lay2story_pack.nodes.comfy.pixart import ComfyPixArt
    from lay2story_pack.nodes.comfy.story_patch import StoryPatch, apply_story

    from lay2story_core.consistency import ConsistencyConfig, StoryBatch
    from lay2story_core.loading import load_pixart_transformer
    from lay2story_core.models import SubjectBranch
    from lay2story_core.pipelines import make_scheduler
    from lay2story_core.pipelines.story_pipeline import ReferenceImage

    out: dict = {"optimized_attention": comfy_attention.optimized_attention.__name__}
    workdir = tempfile.TemporaryDirectory()  # removed when the check returns (its weights are 12 MB a run)
    tmp = workdir.name
    torch.set_grad_enabled(False)
    patcher, path, clip, vae = build(tmp)
    dm = patcher.model.diffusion_model
    story = make_story(clip)
    frames, lat = story.num_frames, story.height // 8
    tf_config = ConsistencyConfig(rate=0.5, blocks="all")

    torch.manual_seed(4)
    branch = SubjectBranch.from_transformer(load_pixart_transformer(path, sample_size=64)).eval()
    for block in branch.blocks:
        block.proj_out.weight.normal_(0, 0.05)
    branch_patcher = host.managed(branch, torch.device("cpu"))
    reference = {"hero": ReferenceImage(torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(5)),
                                        (0.1, 0.1, 0.9, 0.9))}

    def story_model(mode: str, config: ConsistencyConfig = tf_config, model=None, kit=None):
        kit = kit or (patcher, branch, branch_patcher)
        model = model or kit[0]
        extra = pixart_patch_extra(model, story, clip=clip, vae=vae, references=reference,
                                   subject_branch=kit[1] if mode == "lay2story" else None, mode=mode)
        if mode == "lay2story":
            extra["branch_patcher"] = kit[2]
        return apply_story(model, StoryPatch(StoryBatch(story, config), extra=extra))

    # 0. ComfyPixArt's loop vs PixArtMS.forward (why rate 0 calls the original forward)
    mm.load_models_gpu([patcher])
    torch.manual_seed(6)
    x0, c0, t0 = torch.randn(2, 4, lat, lat), torch.randn(2, 9, 12), torch.tensor([700.0, 20.0])
    plain0 = dm(x0, t0, c0)
    loop0 = ComfyPixArt(dm, None, torch.float32, torch.device("cpu"))(x0, c0, t0).sample[:, :4]
    out["loop_vs_forward_bit_exact"] = bool(torch.equal(plain0, loop0))
    out["loop_vs_forward_max_abs"] = float((plain0 - loop0).abs().max())

    # 1-2. real sampling runs: rate 0 == plain bit for bit, stories complete, CFG joint and split
    embeds, mask = host.encode_texts(clip, [story.global_caption(i) for i in range(frames)], "cpu", torch.float32)
    assert bool(mask.all()), "global captions of unequal length"
    positive = [[embeds, {}]]
    negative_joint = [[host.encode_texts(clip, [story.negative_prompt], "cpu", torch.float32)[0], {}]]
    negative_split = [[host.encode_texts(clip, ["blurry"], "cpu", torch.float32)[0], {}]]  # another length
    latent = torch.zeros(frames, 4, lat, lat)
    noise = comfy.sample.prepare_noise(latent, 11)
    samplers = (("euler", "normal"), ("dpmpp_2m", "karras"))

    def run(model, sampler, negative, layouts=None):
        if layouts is not None:
            model = model.clone()

            def wrapper(apply_model, args):
                layouts.add(tuple(args["cond_or_uncond"]))
                return apply_model(args["input"], args["timestep"], **args["c"])

            model.set_model_unet_function_wrapper(wrapper)
        return comfy.sample.sample(model, noise, 3, 4.0, sampler[0], sampler[1], positive, negative, latent,
                                   seed=11, disable_pbar=True)

    rate0 = story_model("training_free", ConsistencyConfig(rate=0.0, blocks="all", regional_captions=False))
    tf_model, l2s_model = story_model("training_free"), story_model("lay2story")
    out["object_patched"] = bool(rate0.object_patches.get(FORWARD) is not None and FORWARD not in
                                 patcher.object_patches)
    out["branch_is_additional_model"] = bool(l2s_model.get_nested_additional_models())
    for sampler in samplers:
        name = "_".join(sampler)
        for cfg_kind, negative in (("joint", negative_joint), ("split", negative_split)):
            plain = run(patcher, sampler, negative)
            layouts: set = set()
            zero = run(rate0, sampler, negative, layouts)
            out[f"rate0_bit_exact_{name}_{cfg_kind}"] = bool(torch.equal(zero, plain))
            out[f"layouts_{cfg_kind}"] = sorted(layouts)
            for mode, model in (("training_free", tf_model), ("lay2story", l2s_model)):
                story_out = run(model, sampler, negative)
                out[f"{mode}_finite_{name}_{cfg_kind}"] = bool(torch.isfinite(story_out).all())
                out[f"{mode}_vs_plain_{name}_{cfg_kind}"] = rel(story_out, plain)
    mm.unload_all_models()

    # 3. model-call equivalence with L2S_StorySampler's path, on its recorded inputs
    class Recorder:
        def __init__(self, model):
            self.model, self.calls = model, []

        def __getattr__(self, name):
            return getattr(self.model, name)

        def __call__(self, hidden_states, encoder_hidden_states, timestep, added_cond_kwargs=None,
                     encoder_attention_mask=None, subject=None, cross_attention_kwargs=None):
            result = self.model(hidden_states, encoder_hidden_states, timestep, added_cond_kwargs,
                                encoder_attention_mask, subject=subject, cross_attention_kwargs=cross_attention_kwargs)
            self.calls.append({"x": hidden_states.clone(), "cond": encoder_hidden_states.clone(),
                               "t": timestep.clone(), "mask": encoder_attention_mask.clone(),
                               "out": result.sample[:, :4].clone()})
            return result

    class RecordingPipeline(ComfyStoryPipeline):
        def _model(self):
            self.recorder = Recorder(super()._model())
            return self.recorder

    def pipeline_call(mode: str, kit=None):
        kit = kit or (patcher, branch, branch_patcher)
        pipe = RecordingPipeline(kit[0], clip, vae, make_scheduler("dpmsolver++"),
                                 kit[1] if mode == "lay2story" else None, kit[2] if mode == "lay2story" else None)
        pipe(story, mode=mode, references=reference if mode == "lay2story" else None, num_inference_steps=STEPS_A,
             guidance_scale=4.0, seed=7, output_type="latent", consistency=tf_config if mode != "none" else None)
        return pipe.recorder.calls

    def patched_call(model, rec: dict, rows: slice, order, step: int):
        """The patched diffusion model called as BaseModel._apply_model calls it (ComfyUI's row order)."""
        x, cond, t = rec["x"][rows], rec["cond"][rows], rec["t"][rows]
        if order == [1, 0]:
            x, cond, t = (torch.cat([v[frames:], v[:frames]]) for v in (x, cond, t))
        n = x.shape[0]
        opts = {"cond_or_uncond": list(order), "sigmas": torch.tensor([[2.0, 1.0][step]]),
                "sample_sigmas": torch.tensor([2.0, 1.0, 0.0])}
        c_size = torch.tensor([[lat * 8.0, lat * 8.0]]).repeat(n, 1)
        result = model.model.diffusion_model(x, t, context=cond, control=None, transformer_options=opts,
                                             c_size=c_size, c_ar=torch.ones(n, 1))
        if order == [1, 0]:
            result = torch.cat([result[frames:], result[:frames]])
        return result

    both, cond_rows, uncond_rows = slice(None), slice(0, frames), slice(frames, None)
    # L2S_StorySampler keeps working on a story-patched MODEL (it drives the blocks, not the patched forward)
    plain_calls = pipeline_call("training_free")
    on_patched = pipeline_call("training_free", (tf_model, branch, branch_patcher))
    out["story_sampler_on_patched_model_max_rel"] = max(rel(a["out"], b["out"]) for a, b in zip(on_patched,
                                                                                              plain_calls))
    for mode in ("none", "training_free", "lay2story"):
        calls = pipeline_call(mode)
        out[f"pipeline_captions_unpadded_{mode}"] = all(bool(c["mask"].all()) for c in calls)
        model = {"none": rate0, "training_free": tf_model, "lay2story": l2s_model}[mode]
        mm.load_models_gpu([model])
        for step in range(STEPS_A):
            rec = calls[step]
            for order in ([0, 1], [1, 0]):
                got = patched_call(model, rec, both, order, step)
                out[f"call_{mode}_step{step}_{''.join(map(str, order))}"] = rel(got, rec["out"])
            out[f"call_{mode}_step{step}_cond_only"] = rel(patched_call(model, rec, cond_rows, [0], step),
                                                           rec["out"][cond_rows])
            out[f"call_{mode}_step{step}_uncond_only"] = rel(patched_call(model, rec, uncond_rows, [1], step),
                                                             rec["out"][uncond_rows])
        if mode == "none":  # mode none through the patch: ComfyUI's forward itself
            rec = calls[1]
            plain_model = story_model("none")
            mm.load_models_gpu([plain_model])
            got = patched_call(plain_model, rec, both, [1, 0], 1)
            mm.load_models_gpu([patcher])
            out["mode_none_bit_exact_plain"] = bool(torch.equal(got, patched_call(patcher, rec, both, [1, 0], 1)))
        mm.unload_all_models()

    # 3b. the same calls on a 1024-MS layout (micro-conditions from ComfyUI's c_size / c_ar)
    ms_patcher, ms_path = pixart_model(tmp, True, 9)
    torch.manual_seed(10)
    ms_branch = SubjectBranch.from_transformer(load_pixart_transformer(ms_path, sample_size=128)).eval()
    for block in ms_branch.blocks:
        block.proj_out.weight.normal_(0, 0.05)
    ms_kit = (ms_patcher, ms_branch, host.managed(ms_branch, torch.device("cpu")))
    for mode in ("training_free", "lay2story"):
        calls = pipeline_call(mode, ms_kit)
        model = story_model(mode, kit=ms_kit)
        mm.load_models_gpu([model])
        out[f"call_ms_{mode}_step1_10"] = rel(patched_call(model, calls[1], both, [1, 0], 1), calls[1]["out"])
        mm.unload_all_models()

    # 4. a LoRA-like weight patch under the object patch: ComfyPixArt on the patched weights
    lora = patcher.clone()
    lora.add_patches({"diffusion_model.blocks.0.attn.qkv.weight": ("diff", (torch.randn(432, 144) * 0.3,))})
    lora_story = story_model("training_free", ConsistencyConfig(rate=0.5, blocks="all", regional_captions=False),
                             model=lora)
    torch.manual_seed(8)
    x, t, c = torch.randn(2 * frames, 4, lat, lat), torch.full((2 * frames,), 400.0), torch.randn(2 * frames, 9, 12)
    opts = {"cond_or_uncond": [0, 1], "sigmas": torch.tensor([1.0]), "sample_sigmas": torch.tensor([2.0, 1.0, 0.0])}
    mm.load_models_gpu([lora_story])
    got = lora_story.model.diffusion_model(x, t, context=c, transformer_options=opts)
    ctx = StoryBatch(story, ConsistencyConfig(rate=0.5, blocks="all", regional_captions=False)).context(
        2, 1, (lat // 2, lat // 2), "cpu")
    reference_model = ComfyPixArt(dm, None, torch.float32, torch.device("cpu"))
    with reference_model.story_processors():
        want = reference_model(x, c, t, cross_attention_kwargs={"story_consistency": ctx}).sample[:, :4]
    out["lora_story_vs_comfypixart"] = rel(got, want)
    mm.unload_all_models()
    no_lora = story_model("training_free", ConsistencyConfig(rate=0.5, blocks="all", regional_captions=False))
    mm.load_models_gpu([no_lora])
    out["lora_changes_output"] = rel(got, no_lora.model.diffusion_model(x, t, context=c, transformer_options=opts))
    mm.unload_all_models()

    # 5. bad inputs
    def error(fn) -> str:
        try:
            fn()
        except ValueError as exc:
            return str(exc)
        return ""

    out["error_latent_batch"] = error(lambda: comfy.sample.sample(
        tf_model, noise[:3], 2, 4.0, "euler", "normal", positive, negative_joint, latent[:3], seed=1,
        disable_pbar=True))
    mm.load_models_gpu([tf_model])
    out["error_call_rows"] = error(lambda: tf_model.model.diffusion_model(
        x[:6], t[:6], context=c[:6], transformer_options={"cond_or_uncond": [0, 1]}))
    mm.unload_all_models()
    foreign = patcher.clone()
    foreign.add_object_patch(FORWARD, lambda *a, **k: None)
    out["error_foreign_patch"] = error(lambda: story_model("training_free", model=foreign))
    small = SubjectBranch(num_layers=1, num_attention_heads=2, attention_head_dim=72, global_num_layers=2)
    bad_extra = {"mode": "lay2story", "subject_branch": small}
    out["error_branch"] = error(lambda: apply_story(patcher, StoryPatch(StoryBatch(story, tf_config),
                                                                        extra=bad_extra)))
    out["error_captions"] = error(lambda: apply_story(patcher, StoryPatch(StoryBatch(story, tf_config),
                                                                          extra={"mode": "training_free"})))
    out["error_box_strength"] = error(lambda: apply_story(patcher, StoryPatch(
        StoryBatch(story, ConsistencyConfig(rate=0.5, box_strength=0.5)), extra={"mode": "training_free"})))
    out["input_model_untouched"] = FORWARD not in patcher.object_patches
    out["seconds"] = round(time.time() - start, 1)
    return out


if __name__ == "__main__":
    emit(main(sys.argv[1]))
