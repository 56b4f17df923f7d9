"""The SD1.5 / SDXL story adapter (``nodes/comfy/arch_unet.py``) against the real ComfyUI, in its own process:

    python tests/nodes/check_story_unet.py COMFYUI_DIR  ->  one JSON line of figures (``test_story_unet.py``)

Tiny random-weight UNets built by ComfyUI's own ``supported_models.SD15`` / ``SDXL`` classes (SDXL at reduced depth,
with two transformer layers per block so several ``transformer_index`` per block are patched), sampled by
``comfy.sample.sample`` (the KSampler path: CFG, the samplers' own schedules) or called through
``BaseModel.apply_model`` with the ``transformer_options`` the sampler builds. Every figure is an equivalence
(``torch.equal`` or a relative error) or a measured difference next to its exactly-equal control.
"""

from __future__ import annotations

import sys

import torch
from real_comfy import boot, emit

LATENT = 16  # 16x16 latents (128 px): token grids 16x16 and 8x8
FRAMES = 4
SUBJECTS = {  # frame -> subjects; captions are regional, the cat's frame 2 box has no caption of its own
    0: [{"character": "hero", "box": [0.05, 0.1, 0.5, 0.9], "caption": "the fox sitting"},
        {"character": "cat", "box": [0.55, 0.5, 0.95, 0.95], "caption": "the cat sleeping on a pillow"}],
    1: [{"character": "hero", "box": [0.3, 0.2, 0.8, 0.9], "caption": "the fox running"}],
    2: [{"character": "hero", "box": [0.0, 0.0, 0.6, 0.6]},
        {"character": "cat", "box": [0.5, 0.5, 1.0, 1.0], "caption": "the cat sleeping on a pillow"}],
}

# what the captioned boxes read (lay2story_core.consistency.region_caption: the character's identity + frame prompt)
REGION_CAPTIONS = ("a red fox, in the grass", "a small grey cat, in the grass", "a red fox, on a bridge",
                   "a small grey cat, in the snow")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def make_story(boxes: bool):
    from lay2story_core.story import Story

    prompts = ["in the grass", "on a bridge", "in the snow", "at night"]
    return Story.from_dict({
        "version": 1, "width": 8 * LATENT, "height": 8 * LATENT, "negative_prompt": "blurry",
        "characters": [{"id": "hero", "identity": "a red fox"}, {"id": "cat", "identity": "a small grey cat"}],
        "frames": [{"prompt": p, **({"subjects": SUBJECTS[i]} if boxes and i in SUBJECTS else {})}
                   for i, p in enumerate(prompts)]})


class Arch:
    """A tiny random-weight ComfyUI model of one architecture and its conditioning."""

    def __init__(self, kind: str):
        import comfy.model_patcher
        import comfy.supported_models

        self.kind = kind
        common = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                  "legacy": False, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
                  "channel_mult": [1, 2], "use_temporal_attention": False, "use_temporal_resblock": False}
        if kind == "sd15":
            self.context_dim, self.pooled = 48, None
            unet = {**common, "adm_in_channels": None, "transformer_depth": [1, 1], "transformer_depth_middle": 1,
                    "transformer_depth_output": [1, 1, 1, 1], "use_linear_in_transformer": False,
                    "context_dim": 48, "num_heads": 8}
            config = comfy.supported_models.SD15(unet)
        else:  # SDXL's layout at reduced depth: no attention at the first level, 2 transformer layers per block

            class TinySDXL(comfy.supported_models.SDXL):
                unet_extra_config = {"num_heads": -1, "num_head_channels": 32}

            self.context_dim, self.pooled = 64, 64
            unet = {**common, "num_classes": "sequential", "adm_in_channels": 1536 + 64, "transformer_depth": [0, 2],
                    "transformer_depth_middle": 2, "transformer_depth_output": [0, 0, 2, 2],
                    "use_linear_in_transformer": True, "context_dim": 64}
            config = TinySDXL(unet)
        config.set_inference_dtype(torch.float32, None)
        torch.manual_seed(0)
        base = config.get_model({})
        with torch.no_grad():  # ComfyUI zero-inits some output layers: variance-keeping random weights everywhere
            for name, p in base.diffusion_model.named_parameters():
                if p.ndim > 1:
                    p.normal_(0, p[0].numel() ** -0.5)
                else:
                    p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
        cpu = torch.device("cpu")
        self.model = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)
        gen = torch.Generator().manual_seed(1)
        self.positive = self._cond(torch.randn(FRAMES, 10, self.context_dim, generator=gen), gen)
        self.negative = self._cond(torch.randn(FRAMES, 10, self.context_dim, generator=gen), gen)
        self.captions = {t: torch.randn(1, 5 + 3 * i, self.context_dim, generator=gen)
                         for i, t in enumerate(REGION_CAPTIONS)}

    def _cond(self, context: torch.Tensor, gen: torch.Generator) -> list:
        extra = {} if self.pooled is None else {"pooled_output": torch.randn(FRAMES, self.pooled, generator=gen)}
        return [[context, extra]]

    def patch(self, story, rate: float, blocks: str = "second_half", identity_frames=None, regional=True,
              captions=True):
        import dataclasses

        from lay2story_pack.nodes.comfy.story_patch import StoryPatch

        from lay2story_core.consistency import ConsistencyConfig, StoryBatch

        config = dataclasses.replace(ConsistencyConfig.from_user(rate, blocks), regional_captions=regional)
        return StoryPatch(StoryBatch(story, config, identity_frames), self.captions if captions else None)

    def sample(self, model, sampler="euler", scheduler="normal", steps=3, frames=FRAMES, seed=5):
        import comfy.sample

        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(frames, 4, LATENT, LATENT, generator=gen)
        latent = torch.zeros(frames, 4, LATENT, LATENT)
        return comfy.sample.sample(model, noise, steps, 2.0, sampler, scheduler, self.positive, self.negative,
                                   latent, disable_pbar=True, seed=seed)

    def call(self, model, x: torch.Tensor, step: int = 1) -> torch.Tensor:
        """The noise prediction of one conditional model call of the frames ``x`` at ``step`` of a 3-step schedule,
        with the ``transformer_options`` ComfyUI's sampler builds (the MODEL's own, plus the call's chunks and
        sigmas)."""
        import comfy.model_management as mm

        mm.load_models_gpu([model])
        sigmas = model.model.model_sampling.sigma(torch.tensor([999.0, 500.0, 1.0]))
        options = dict(model.model_options.get("transformer_options", {}))
        options.update(cond_or_uncond=[0], sigmas=sigmas[step:step + 1].repeat(x.shape[0]), sample_sigmas=sigmas)
        extra = {}
        if self.pooled is not None:
            extra["y"] = torch.randn(x.shape[0], 1536 + self.pooled, generator=torch.Generator().manual_seed(3))
        sigma = sigmas[step:step + 1].repeat(x.shape[0])
        with torch.no_grad():
            denoised = model.model.apply_model(x, sigma, c_crossattn=self.positive[0][0],
                                               transformer_options=options, **extra)
        return (x - denoised) / sigma.view(-1, 1, 1, 1)


def sites(model):
    from lay2story_pack.nodes.comfy.arch_unet import attention_sites
    from lay2story_pack.nodes.comfy.story_patch import diffusion_model_of

    return [(key, block) for key, block in attention_sites(diffusion_model_of(model))]


def replaced(model, kind: str) -> dict:
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})


def check_rate0(arch: Arch, out: dict) -> None:
    """Rate 0 without regional captions: the patched model samples the plain model's latents bit for bit."""
    from lay2story_pack.nodes.comfy.story_patch import apply_story

    boxed = make_story(True)
    variants = {"second_half_no_captions": arch.patch(boxed, 0.0, captions=False),
                "all_regional_off": arch.patch(boxed, 0.0, "all", regional=False)}
    for sampler, scheduler in (("euler", "normal"), ("dpmpp_2m_sde", "karras")):
        plain = arch.sample(arch.model, sampler, scheduler)
        for name, patch in variants.items():
            story = apply_story(arch.model, patch)
            out[f"{arch.kind}_rate0_{name}_{sampler}_equal"] = bool(torch.equal(arch.sample(story, sampler,
                                                                                              scheduler), plain))
            out[f"{arch.kind}_rate0_{name}_patched_sites"] = len(replaced(story, "attn1"))
    out[f"{arch.kind}_plain_model_unpatched"] = not replaced(arch.model, "attn1")


def check_dense(arch: Arch, out: dict) -> None:
    """The patched attn1 output equals the core's dense reference on that layer's own q/k/v, mid-sampling."""
    from lay2story_pack.nodes.comfy.story_patch import apply_story

    from lay2story_core.consistency import dense_consistent_self_attention, token_grid

    self_sites = [key for key, block in sites(arch.model) if not block.disable_self_attn]
    for boxes in (False, True):
        patch = arch.patch(make_story(boxes), 0.5, "all", identity_frames=2, captions=False)
        story = apply_story(arch.model, patch)
        errors, masked = [], []

        def recorder(fn, site, patch=patch, errors=errors, masked=masked):
            def attn1(q, k, v, extra_options):
                result = fn(q, k, v, extra_options)
                b, n = q.shape[:2]
                heads = extra_options["n_heads"]
                ctx = patch.context(extra_options, b, token_grid(*extra_options["original_shape"][-2:], n), q.device)
                if ctx.uses_consistency(site, len(self_sites)):
                    ref = dense_consistent_self_attention(*(x.view(b, n, heads, -1) for x in (q, k, v)), ctx, site)
                    if ref is not None:
                        errors.append(rel(result, ref.reshape(b, n, -1)))
                        masked.append(ctx.subject_masks is not None and not bool(ctx.subject_masks.all()))
                return result

            return attn1

        recording = story.clone()
        for key, fn in replaced(story, "attn1").items():
            recording.set_model_attn1_replace(recorder(fn, self_sites.index(key)), *key)
        arch.sample(recording, "euler", "normal", steps=2)
        tag = f"{arch.kind}_{'boxes' if boxes else 'no_boxes'}"
        out[f"{tag}_dense_max_rel"] = max(errors) if errors else None
        out[f"{tag}_dense_compared"] = len(errors)
        out[f"{tag}_dense_sites"] = len(self_sites)
        out[f"{tag}_box_restricted"] = sum(masked)


def check_sharing(arch: Arch, out: dict) -> None:
    """Rate 1, 2 identity frames: frame 0's latent reaches identity frame 1 and non-identity frame 2; at rate 0
    frames 1 and 2 are exactly unchanged."""
    from lay2story_pack.nodes.comfy.story_patch import apply_story

    gen = torch.Generator().manual_seed(11)
    x = torch.randn(FRAMES, 4, LATENT, LATENT, generator=gen) * 5
    moved = x.clone()
    moved[0] += torch.randn(4, LATENT, LATENT, generator=gen) * 5
    for rate in (1.0, 0.0):
        story = apply_story(arch.model, arch.patch(make_story(False), rate, identity_frames=2, captions=False))
        a, b = arch.call(story, x), arch.call(story, moved)
        for frame in (1, 2, 3):
            out[f"{arch.kind}_rate{rate:g}_frame{frame}_changed_rel"] = rel(b[frame], a[frame])
        out[f"{arch.kind}_rate{rate:g}_frame0_changed_rel"] = rel(b[0], a[0])
        if rate == 0.0:
            out[f"{arch.kind}_rate0_frames123_equal"] = bool(torch.equal(a[1:], b[1:]))


def check_regional(arch: Arch, out: dict) -> None:
    """Subject captions in boxes: the first transformer layer's attn2 output differs from the global-caption run
    only inside the captioned boxes of the conditional frames, and there equals attention over the subject
    caption projected by that layer's own to_k / to_v."""
    import torch.nn.functional as F
    from lay2story_pack.nodes.comfy.story_patch import apply_story

    boxed = make_story(True)
    first_key, first_block = sites(arch.model)[0]
    runs = {}
    for regional in (True, False):
        patch = arch.patch(boxed, 0.0, regional=regional)
        story = apply_story(arch.model, patch).clone()
        seen: dict = {}

        def capture(n, extra_options, seen=seen):
            key = (*extra_options["block"], extra_options["block_index"])
            if key == first_key and "out" not in seen:
                seen["out"], seen["order"] = n.clone(), list(extra_options["cond_or_uncond"])
            return n

        def record_q(fn, seen=seen):
            def attn2(q, k, v, extra_options):
                if "q" not in seen:
                    seen["q"] = q.clone()
                return fn(q, k, v, extra_options)

            return attn2

        story.set_model_attn2_output_patch(capture)
        if regional:
            out[f"{arch.kind}_regional_sites"] = len(replaced(story, "attn2"))
            story.set_model_attn2_replace(record_q(replaced(story, "attn2")[first_key]), *first_key)
        arch.sample(story, "euler", "normal", steps=1)
        runs[regional] = seen
    with_regions, global_only = runs[True]["out"], runs[False]["out"]
    order = runs[True]["order"]
    b, n = with_regions.shape[:2]
    grid = (LATENT, LATENT) if n == LATENT * LATENT else (LATENT // 2, LATENT // 2)
    regions = arch.patch(boxed, 0.0).batch.caption_regions(grid)
    outside_equal, inside_differs, ref_errors = True, [], []
    attn2, heads = first_block.attn2, first_block.n_heads
    for chunk, kind in enumerate(order):
        for frame in range(FRAMES):
            row = chunk * FRAMES + frame
            inside = torch.zeros(n, dtype=torch.bool)
            for _, mask in regions[frame] if kind == 0 else []:
                inside |= mask
            outside_equal &= bool(torch.equal(with_regions[row, ~inside], global_only[row, ~inside]))
            if inside.any():
                differs = (with_regions[row, inside] != global_only[row, inside]).any(-1)
                inside_differs.append(float(differs.float().mean()))
            for text, mask in regions[frame] if kind == 0 else []:  # tokens in exactly this one box
                alone = mask & (sum(m.int() for _, m in regions[frame]) == 1)
                if not alone.any():
                    continue
                caption = arch.captions[text]
                with torch.no_grad():
                    q = runs[True]["q"][row, alone].view(1, -1, heads, attn2.dim_head).transpose(1, 2)
                    k = attn2.to_k(caption).view(1, -1, heads, attn2.dim_head).transpose(1, 2)
                    v = attn2.to_v(caption).view(1, -1, heads, attn2.dim_head).transpose(1, 2)
                    ref = attn2.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))[0]
                ref_errors.append(rel(with_regions[row, alone], ref))
    out[f"{arch.kind}_regional_outside_equal"] = outside_equal
    out[f"{arch.kind}_regional_inside_differs_min"] = min(inside_differs) if inside_differs else None
    out[f"{arch.kind}_regional_boxes_measured"] = len(ref_errors)
    out[f"{arch.kind}_regional_vs_reference_max_rel"] = max(ref_errors) if ref_errors else None


def check_lora(arch: Arch, out: dict) -> None:
    """A LoRA-style weight patch and the story patch in either order: both stay on the MODEL."""
    from lay2story_pack.nodes.comfy.arch_unet import plain_attention as replaced_attention
    from lay2story_pack.nodes.comfy.story_patch import apply_story

    key = "diffusion_model.output_blocks.0.1.transformer_blocks.0.attn1.to_q.weight"
    weight = arch.model.model.state_dict()[key]
    diff = {key: ("diff", (torch.randn(weight.shape, generator=torch.Generator().manual_seed(4)) * 0.5,))}
    plain = arch.sample(arch.model, steps=2)
    lora = arch.model.clone()
    lora.add_patches(diff)
    with_lora = arch.sample(lora, steps=2)
    patch = arch.patch(make_story(True), 0.0, captions=False)
    story_on_lora = apply_story(lora, patch)
    lora_on_story = apply_story(arch.model, patch).clone()
    lora_on_story.add_patches(diff)
    out[f"{arch.kind}_lora_changes_output"] = not torch.equal(with_lora, plain)
    out[f"{arch.kind}_lora_then_story_equal"] = bool(torch.equal(arch.sample(story_on_lora, steps=2), with_lora))
    out[f"{arch.kind}_story_then_lora_equal"] = bool(torch.equal(arch.sample(lora_on_story, steps=2), with_lora))
    out[f"{arch.kind}_story_then_lora_patches_kept"] = len(replaced(lora_on_story, "attn1"))
    out[f"{arch.kind}_lora_then_story_weight_patches_kept"] = key in story_on_lora.patches
    # another pack's attention replace patch on a site the story takes over still runs where nothing is shared
    calls = []

    def other_pack(q, k, v, extra_options):
        calls.append(1)
        return replaced_attention(q, k, v, extra_options)

    other = arch.model.clone()
    other.set_model_attn1_replace(other_pack, "output", 0, 0)
    on_other = apply_story(other, patch)
    out[f"{arch.kind}_other_pack_equal"] = bool(torch.equal(arch.sample(on_other, steps=2), plain))
    out[f"{arch.kind}_other_pack_calls"] = len(calls)
    # at rate 1 the LoRA still reaches the story's attention: the story on the LoRA model differs from the story
    shared = arch.patch(make_story(False), 1.0, captions=False)
    out[f"{arch.kind}_lora_reaches_story_rel"] = rel(arch.sample(apply_story(lora, shared), steps=2),
                                                    arch.sample(apply_story(arch.model, shared), steps=2))


def check_bad_input(arch: Arch, out: dict) -> None:
    from lay2story_pack.nodes.comfy.story_patch import apply_story

    story = apply_story(arch.model, arch.patch(make_story(True), 0.5))
    calls = []

    def counting(apply_model, args):
        calls.append(1)
        return apply_model(args["input"], args["timestep"], **args["c"])

    story.set_model_unet_function_wrapper(counting)
    try:
        arch.sample(story, frames=3)
        out["bad_latent_error"] = None
    except ValueError as err:
        out["bad_latent_error"] = str(err)
    out["bad_latent_model_calls"] = len(calls)
    try:
        apply_story(arch.model, arch.patch(make_story(True), 0.5, blocks="99"))
        out["bad_blocks_error"] = None
    except ValueError as err:
        out["bad_blocks_error"] = str(err)
    out["bad_blocks_plain_model_unpatched"] = not replaced(arch.model, "attn1")


def main(comfy_dir: str) -> dict:
    boot(comfy_dir)
    torch.set_num_threads(1)
    out: dict = {}
    for kind in ("sd15", "sdxl"):
        arch = Arch(kind)
        out[f"{kind}_self_sites"] = [list(key) for key, block in sites(arch.model) if not block.disable_self_attn]
        check_rate0(arch, out)
        check_dense(arch, out)
        check_sharing(arch, out)
        check_regional(arch, out)
        if kind == "sd15":
            check_lora(arch, out)
            check_bad_input(arch, out)
    return out


if __name__ == "__main__":
    emit(main(sys.argv[1]))
