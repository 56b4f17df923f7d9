"""FLUX.1 story patch against the real ComfyUI, in its own process (``test_story_flux.py`` runs it):

    python tests/nodes/check_story_flux.py COMFYUI_DIR  ->  one JSON line of measured figures

A tiny random FLUX built with ComfyUI's own classes (``supported_models.Flux`` / ``FluxSchnell`` unet config, one
double and one single block, ``model_base.Flux`` in a ``ModelPatcher`` on the CPU), sampled by ``comfy.sample.sample``
(the real KSampler path: CFG batching, schedulers, wrappers, weight patches). Figures: rate 0 == plain bit for bit;
the story attention == the core's dense reference on the blocks' own q/k/v (text rows == ComfyUI's plain attention);
sharing across frames; box-restricted sharing; LoRA weight patches with the story; the bad-input errors.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_comfy import boot, emit  # noqa: E402

FRAMES, TEXT, SIZE = 4, 8, 16  # story frames, text tokens, latent side (8 x 8 image tokens)
QKV = "diffusion_model.double_blocks.0.img_attn.qkv.weight"


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main(comfy_dir: str) -> dict:
    started = time.perf_counter()
    boot(comfy_dir)
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.patcher_extension as ext
    import comfy.sample
    import comfy.supported_models
    import torch
    from lay2story_pack.nodes.comfy.story_patch import PATCH_KEY, StoryPatch, apply_story

    from lay2story_core.consistency import (
        ConsistencyConfig,
        StoryBatch,
        dense_consistent_self_attention,
        step_index,
    )
    from lay2story_core.story import Story

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    out: dict = {}

    def flux(schnell: bool, seed: int = 0):
        unet = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 16, "context_in_dim": 32,
                "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True,
                "guidance_embed": not schnell}
        config = (comfy.supported_models.FluxSchnell if schnell else comfy.supported_models.Flux)(unet)
        config.set_inference_dtype(torch.float32, None)
        base = config.get_model({})
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # ComfyUI's ops leave weights uninitialised: random weights of unit-scale activations
            for name, p in base.diffusion_model.named_parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
                else:
                    p.copy_((1.0 if name.endswith("scale") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
        return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)

    def story(boxes: bool) -> Story:
        spots = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.25, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75], [0.0, 0.5, 0.5, 1.0]]
        frames = [{"prompt": f"scene {i}", "subjects": [{"character": "hero", "box": spots[i]}] if boxes else []}
                  for i in range(FRAMES)]
        return Story.from_dict({"version": 1, "width": 128, "height": 128,
                                "characters": [{"id": "hero", "identity": "a red fox"}], "frames": frames})

    def patch(rate: float, blocks: str = "all", boxes: bool = False) -> StoryPatch:
        return StoryPatch(StoryBatch(story(boxes), ConsistencyConfig.from_user(rate, blocks)))

    gen = torch.Generator().manual_seed(1)

    def cond():
        return [[torch.randn(FRAMES, TEXT, 32, generator=gen),
                 {"pooled_output": torch.randn(FRAMES, 16, generator=gen), "guidance": 3.5}]]

    positive, negative = cond(), cond()
    noise = torch.randn(FRAMES, 16, SIZE, SIZE, generator=gen)

    def sample(model, x=noise, sampler="euler", scheduler="simple", cfg=2.0, steps=3):
        return comfy.sample.sample(model, x, steps, cfg, sampler, scheduler, positive, negative, torch.zeros_like(x),
                                   disable_pbar=True, seed=0)

    def spy(model, records: list):
        """A clone whose story replacements record every attention call: q/k/v, the story's output, the plain
        function and the block's options (the story's own replacement still runs, unchanged)."""
        spied = model.clone()
        dit = spied.model_options["transformer_options"]["patches_replace"]["dit"]
        for key, story_fn in list(dit.items()):
            def outer(args, extra, story_fn=story_fn, key=key):
                def block(a):
                    options = dict(a["transformer_options"])
                    story_override = options["optimized_attention_override"]

                    def record(func, *fa, **fk):
                        result = story_override(func, *fa, **fk)
                        records.append({"site": key, "args": fa, "kwargs": fk, "func": func, "out": result,
                                        "options": options})
                        return result

                    options["optimized_attention_override"] = record
                    return extra["original_block"]({**a, "transformer_options": options})

                return story_fn(args, {**extra, "original_block": block})

            spied.set_model_patch_replace(outer, "dit", *key)
        return spied

    def site_index(key) -> int:
        return 0 if key[0] == "double_block" else 1 + key[1]

    def reference(p: StoryPatch, rec: dict, boxes: bool):
        """The core's dense reference on the block's q/k/v, the story mask extended to the joint sequence."""
        q, k, v = (x.transpose(1, 2) for x in rec["args"][:3])
        rows, length = q.shape[:2]
        grid = (SIZE // 2, SIZE // 2)
        options = rec["options"]
        ctx = p.batch.context(p.batch.chunks_of(rows), step_index(options["sigmas"], options["sample_sigmas"]), grid)
        image = torch.zeros(rows, length, dtype=torch.bool)
        image[:, TEXT:] = True
        candidates = image.clone()
        if boxes:
            candidates[:, TEXT:] = ctx.subject_masks
        ctx.subject_masks, ctx.readers = candidates, image
        return ctx, dense_consistent_self_attention(q, k, v, ctx, site_index(rec["site"]))

    # 1. rate 0 == plain, bit for bit, through comfy.sample.sample (dev: two samplers / schedulers; schnell)
    models = {"dev": flux(False), "schnell": flux(True)}
    for name, model in models.items():
        runs = [("euler", "simple"), ("dpmpp_2m", "beta")] if name == "dev" else [("euler", "simple")]
        for sampler, scheduler in runs:
            plain = sample(model, sampler=sampler, scheduler=scheduler)
            for blocks in ("all", "second_half"):
                records: list = []
                patched = sample(spy(apply_story(model, patch(0.0, blocks)), records), sampler=sampler,
                                 scheduler=scheduler)
                out[f"rate0_equal_{name}_{sampler}_{scheduler}_{blocks}"] = bool(torch.equal(patched, plain))
                out[f"rate0_story_calls_{name}_{sampler}_{blocks}"] = len(records)
    dev = models["dev"]

    # 2. the story attention == the dense reference on the blocks' own q/k/v; text rows == ComfyUI's plain attention
    for boxes in (False, True):
        p = patch(0.5, "all", boxes)
        records = []
        sample(spy(apply_story(dev, p), records))
        tag = "boxes" if boxes else "plain"
        errors, text_equal, image_vs_plain, first_step_equal, unboxed = [], [], [], [], []
        for rec in records:
            story_out = rec["out"].view(*rec["out"].shape[:2], 2, -1)
            plain_out = rec["func"](*rec["args"], **rec["kwargs"])
            if step_index(rec["options"]["sigmas"], rec["options"]["sample_sigmas"]) == 0:
                first_step_equal.append(bool(torch.equal(rec["out"], plain_out)))
                continue
            ctx, dense = reference(p, rec, boxes)
            errors.append(rel(story_out, dense))
            text_equal.append(bool(torch.equal(rec["out"][:, :TEXT], plain_out[:, :TEXT])))
            image_vs_plain.append(rel(rec["out"][:, TEXT:], plain_out[:, TEXT:]))
            if boxes:  # the same reference without the box mask (every image token a candidate) must not match
                ctx.subject_masks = ctx.readers
                q, k, v = (x.transpose(1, 2) for x in rec["args"][:3])
                unboxed.append(rel(story_out, dense_consistent_self_attention(q, k, v, ctx, site_index(rec["site"]))))
        out[f"dense_rel_max_{tag}"] = max(errors)
        out[f"dense_checked_calls_{tag}"] = len(errors)
        out[f"dense_sites_{tag}"] = sorted({f"{r['site'][0]}_{r['site'][1]}" for r in records})
        out[f"text_rows_equal_plain_{tag}"] = all(text_equal) and bool(text_equal)
        out[f"image_rows_vs_plain_min_{tag}"] = min(image_vs_plain)
        out[f"first_step_equal_plain_{tag}"] = all(first_step_equal) and bool(first_step_equal)
        if boxes:
            out["boxes_vs_unboxed_reference_min"] = min(unboxed)

    # 3. sharing is real: frame 0's latent reaches frame 1 at rate 1, never at rate 0
    moved = noise.clone()
    moved[0] = torch.randn(moved[0].shape, generator=gen)
    for rate in (1.0, 0.0):
        story_model = apply_story(dev, patch(rate, "all"))
        a, b = sample(story_model), sample(story_model, x=moved)
        out[f"frame1_change_rate{rate:g}"] = rel(b[1:], a[1:])
        out[f"frame1_equal_rate{rate:g}"] = bool(torch.equal(b[1:], a[1:]))

    # 4. a LoRA-style weight patch with the story (before and after Apply Story), as LoraLoader does (clone + patch)
    delta = torch.randn(dev.model.diffusion_model.double_blocks[0].img_attn.qkv.weight.shape, generator=gen) * 0.3
    lora = dev.clone()
    lora.add_patches({QKV: ("diff", (delta,))})
    lora_alone, base_alone = sample(lora), sample(dev)
    before = apply_story(lora, patch(0.0, "all"))
    after = apply_story(dev, patch(0.0, "all")).clone()
    out["lora_keys_after"] = len(after.add_patches({QKV: ("diff", (delta,))}))
    for tag, model in (("before", before), ("after", after)):
        dit = model.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
        out[f"lora_{tag}_story_sites"] = sorted(f"{kind}_{i}" for kind, i in dit)
        out[f"lora_{tag}_story_wrapper"] = bool(model.get_wrappers(ext.WrappersMP.DIFFUSION_MODEL, PATCH_KEY))
        out[f"lora_{tag}_rate0_equal_lora"] = bool(torch.equal(sample(model), lora_alone))
    out["lora_vs_base_rel"] = rel(lora_alone, base_alone)
    out["lora_story_rate1_vs_lora_rel"] = rel(sample(apply_story(lora, patch(1.0, "all"))), lora_alone)

    # 5. an attention mask: plain attention (logged once), bit for bit, in a direct call of the diffusion model
    story_model, sigmas = apply_story(dev, patch(1.0, "all")), torch.tensor([1.0, 0.6, 0.3, 0.0])
    options = ext.copy_nested_dicts(story_model.model_options["transformer_options"])
    options.update(wrappers=ext.copy_nested_dicts(story_model.wrappers), sigmas=sigmas[1:2],
                   sample_sigmas=sigmas, cond_or_uncond=[0])
    mm.load_models_gpu([story_model])
    dm, t = story_model.model.diffusion_model, torch.full((FRAMES,), 0.6)
    call = {"context": positive[0][0], "y": positive[0][1]["pooled_output"], "guidance": torch.full((FRAMES,), 3.5)}
    mask = torch.zeros(FRAMES, 1, TEXT + (SIZE // 2) ** 2, TEXT + (SIZE // 2) ** 2)
    with torch.no_grad():
        plain_masked = dm(noise, t, **call, attention_mask=mask)
        story_masked = dm(noise, t, **call, transformer_options=dict(options), attention_mask=mask)
        story_call = dm(noise, t, **call, transformer_options=dict(options))
        plain_call = dm(noise, t, **call)
    out["mask_fallback_equal_plain"] = bool(torch.equal(story_masked, plain_masked))
    out["direct_call_story_vs_plain_rel"] = rel(story_call, plain_call)

    # 6. another pack's block replacement stays (chained, with the story's options); a story on a story replaces it
    foreign_calls: list = []

    def foreign(args, extra):
        foreign_calls.append("optimized_attention_override" in args["transformer_options"])
        return extra["original_block"](args)

    other = dev.clone()
    other.set_model_patch_replace(foreign, "dit", "double_block", 0)
    other_alone = sample(other)
    foreign_calls.clear()
    out["foreign_rate0_equal"] = bool(torch.equal(sample(apply_story(other, patch(0.0, "all"))), other_alone))
    out["foreign_calls_with_story"] = len(foreign_calls) if all(foreign_calls) else -1
    restory = apply_story(apply_story(other, patch(1.0, "all")), patch(0.0, "second_half"))
    dit = restory.model_options["transformer_options"]["patches_replace"]["dit"]
    out["restory_double_is_foreign"] = dit.get(("double_block", 0)) is foreign
    out["restory_rate0_equal"] = bool(torch.equal(sample(restory), other_alone))
    out["restory_wrappers"] = len(restory.get_wrappers(ext.WrappersMP.DIFFUSION_MODEL, PATCH_KEY))

    # 7. bad input: a latent of another frame count (before any model call); blocks out of range (before patching)
    calls: list = []
    counted = apply_story(dev, patch(0.5, "all"))
    counted.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "check_counter",
                                 lambda executor, *a, **k: calls.append(1) or executor(*a, **k))
    try:
        sample(counted, x=noise[:3])
        out["latent_error"] = None
    except ValueError as error:
        out["latent_error"] = str(error)
    out["latent_error_model_calls"] = len(calls)
    try:
        apply_story(dev, patch(0.5, "99"))
        out["blocks_error"] = None
    except ValueError as error:
        out["blocks_error"] = str(error)
    out["blocks_error_input_untouched"] = "patches_replace" not in dev.model_options["transformer_options"]
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


if __name__ == "__main__":
    emit(main(sys.argv[1]))
