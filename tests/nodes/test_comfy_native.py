"""The ComfyUI-native path on the stand-in of ComfyUI's interfaces (``tests/comfy_standin.py``): ComfyUI's PixArt
driven by ``ComfyPixArt`` equals ComfyUI's own forward and our diffusers model of the same checkpoint; the whole
sampler on MODEL + CLIP + VAE equals the pack's own path on the same weights; model management, LoRA patches, low
VRAM, Cancel, bad inputs, three characters with their own references."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from comfy_standin import CLIP, VAE, BaseModel, InterruptProcessingException, ModelPatcher, PixArtMS, install
from tiny_models import make_t5, make_tokenizer, make_vae

from lay2story_core.consistency import ConsistencyConfig
from lay2story_core.loading import load_pixart_transformer
from lay2story_core.models import SubjectBranch
from lay2story_core.pipelines import SCHEDULERS, default_scheduler, make_scheduler
from lay2story_core.story import Story
from nodes.bundles import StoryModel, SubjectBranchBundle, TextEncoderBundle
from nodes.comfy import ComfyPixArt, ComfyStoryPipeline, pixart_grid_settings
from nodes.comfy.host import managed
from nodes.reference import L2S_ReferenceImage
from nodes.sampler import L2S_StorySampler

ROOT_EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "example_workflows"
# 128 px frames through the factor-2 tiny VAE = 64x64 latents: ComfyUI's grid there equals the 512 px training grid
STORY = Story.from_dict({
    "version": 1, "width": 128, "height": 128, "negative_prompt": "",
    "characters": [{"id": "hero", "identity": "a red fox"}, {"id": "cat", "identity": "a blue cat"},
                   {"id": "villain", "identity": "a green villain"}],
    "frames": [
        {"prompt": "in the grass", "subjects": [
            {"character": "hero", "box": [0.0, 0.0, 0.5, 0.5], "caption": "the fox sitting"},
            {"character": "cat", "box": [0.5, 0.0, 1.0, 0.5]},
            {"character": "villain", "box": [0.2, 0.5, 0.8, 1.0], "caption": "the villain standing"}]},
        {"prompt": "on a bridge", "subjects": [{"character": "villain", "box": [0.5, 0.5, 1.0, 1.0]}]},
    ],
})
WIDGETS = {"seed": 3, "steps": 2, "cfg": 4.5, "scheduler": "dpmsolver++", "mode": "auto", "width": 0, "height": 0,
           "chunk_size": 0, "identity_frames": 0}


@pytest.fixture
def host(monkeypatch, tmp_path):
    """The stand-in ComfyUI, a tiny PixArtMS (original/ComfyUI keys) as a MODEL, a CLIP and a VAE, and the same
    checkpoint read by our loader into diffusers."""
    mm = install(monkeypatch, tmp_path / "models")
    torch.manual_seed(0)
    dm = PixArtMS(hidden_size=144, depth=4, num_heads=2, caption_channels=12).eval()
    path = tmp_path / "PixArt-XL-2-512x512.pth"
    torch.save(dm.state_dict(), path)
    diffusers_model = load_pixart_transformer(path, sample_size=64)
    t5, tok, vae = make_t5(12), make_tokenizer(), make_vae()
    model = ModelPatcher(BaseModel(dm), "cpu", "cpu")
    branch = SubjectBranch.from_transformer(diffusers_model).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # a "trained" branch: non-zero outputs
        for block in branch.blocks:
            block.proj_out.weight.normal_(0, 0.05)
    return type("Host", (), dict(mm=mm, dm=dm, path=path, diffusers=diffusers_model, t5=t5, tok=tok, vae=vae,
                                 model=model, clip=CLIP(t5, tok, mm), comfy_vae=VAE(vae, mm), branch=branch))


def native(h, branch=True, **kwargs):
    bundle = SubjectBranchBundle(h.branch, managed(h.branch), "test") if branch else None
    return L2S_StorySampler().sample(story=kwargs.pop("story", STORY), pixart=h.model, clip=h.clip, vae=h.comfy_vae,
                                     subject_branch=bundle, **{**WIDGETS, **kwargs})[:2]


def own(h, branch=True, scheduler_config=None, **kwargs):
    model = StoryModel(h.diffusers, h.branch if branch else None, h.vae, torch.float32, torch.device("cpu"), "test",
                       scheduler_config=scheduler_config)
    text = TextEncoderBundle(h.tok, h.t5, torch.float32, None, False, "test")
    return L2S_StorySampler().sample(model, text, kwargs.pop("story", STORY), **{**WIDGETS, **kwargs})[:2]


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------------- the denoiser
def test_denoiser_equals_comfyui_pixart_and_our_diffusers_model(host):
    torch.manual_seed(2)
    x, t, ctx = torch.randn(3, 4, 64, 64), torch.tensor([999.0, 500.0, 3.0]), torch.randn(3, 7, 12)
    driver = ComfyPixArt(host.dm, None, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        ours = driver(x, ctx, t).sample
        comfy = host.dm(x, t, ctx)
        diffusers = host.diffusers(x, timestep=t, encoder_hidden_states=ctx).sample
    # fp32, same operations in the same order: only SDPA/GEMM blocking differs (measured ~1e-7)
    assert rel(ours[:, :4], comfy) < 1e-5
    assert rel(ours, diffusers) < 1e-5


def test_padded_captions_equal_comfyui_unpadded_calls(host):
    """ComfyUI encodes each caption unpadded; a batch padded with a mask gives each caption's own result."""
    torch.manual_seed(3)
    x, t = torch.randn(2, 4, 64, 64), torch.tensor([700.0, 700.0])
    short, long = torch.randn(1, 3, 12), torch.randn(1, 9, 12)
    ctx = torch.zeros(2, 9, 12)
    ctx[0, :3], ctx[1] = short[0], long[0]
    mask = torch.tensor([[1] * 3 + [0] * 6, [1] * 9])
    driver = ComfyPixArt(host.dm, None, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        ours = driver(x, ctx, t, encoder_attention_mask=mask).sample[:, :4]
        each = torch.cat([host.dm(x[:1], t[:1], short), host.dm(x[1:], t[1:], long)])
    assert rel(ours, each) < 1e-5


def test_comfyui_grid_conventions(host):
    # native size (512 px): the training grid, as original PixArt and diffusers
    assert pixart_grid_settings(64, 64, 2) == (1.0, 32)
    # non-native size: recomputed from the current size (ComfyUI's convention, kept on the native path)
    assert pixart_grid_settings(96, 64, 2) == (1.0, 32) and pixart_grid_settings(128, 128, 2) == (2.0, 64)
    # 256 px: ComfyUI divides by zero; we use PixArt-256's grid (interpolation 0.5, base = the token grid)
    assert pixart_grid_settings(32, 32, 2) == (0.5, 16)
    torch.manual_seed(4)
    x, t, ctx = torch.randn(1, 4, 32, 32), torch.tensor([500.0]), torch.randn(1, 5, 12)
    driver = ComfyPixArt(host.dm, None, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        with pytest.raises(ZeroDivisionError):  # ComfyUI's own forward at 256 px (base_size 0)
            host.dm(x, t, ctx)
        ours = driver(x, ctx, t).sample
        diffusers_256 = load_pixart_transformer(host.path, sample_size=32, interpolation_scale=0.5)
        assert rel(ours, diffusers_256(x, timestep=t, encoder_hidden_states=ctx).sample) < 1e-5
        # at a non-native size the native path follows ComfyUI (grid recomputed from the size, in the model's
        # dtype); for released configs (base size / interpolation = 32 tokens) that is the training grid diffusers
        # and original PixArt use, so in fp32 all three agree
        x = torch.randn(1, 4, 128, 64)
        ours = driver(x, ctx, t).sample
        assert rel(ours[:, :4], host.dm(x, t, ctx)) < 1e-5
        assert rel(ours, host.diffusers(x, timestep=t, encoder_hidden_states=ctx).sample) < 1e-5


@pytest.mark.parametrize("latent_hw", [(64, 64), (96, 64), (128, 128)])
def test_ms_model_at_native_and_other_sizes(host, tmp_path, latent_hw):
    """A 1024-MS model (micro-conditions) at 512 px, non-square and 1024 px: ours = ComfyUI's = diffusers'."""
    torch.manual_seed(7)
    dm = PixArtMS(hidden_size=144, depth=2, num_heads=2, caption_channels=12, micro_condition=True).eval()
    path = tmp_path / "PixArt-XL-2-1024-MS.pth"
    torch.save(dm.state_dict(), path)
    diffusers_ms = load_pixart_transformer(path, sample_size=128)
    h, w = latent_hw
    x, t, ctx = torch.randn(2, 4, h, w), torch.tensor([800.0, 20.0]), torch.randn(2, 6, 12)
    added = {"resolution": torch.tensor([[h * 8.0, w * 8.0]]).repeat(2, 1),
             "aspect_ratio": torch.tensor([[h / w]]).repeat(2, 1)}
    with torch.no_grad():
        ours = ComfyPixArt(dm, None, torch.float32, torch.device("cpu"))(x, ctx, t, added).sample
        comfy = dm(x, t, ctx, c_size=added["resolution"], c_ar=added["aspect_ratio"])
        theirs = diffusers_ms(x, timestep=t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    assert rel(ours[:, :4], comfy) < 1e-5 and rel(ours, theirs) < 1e-5


# ---------------------------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("mode", ["training_free", "lay2story"])  # none: with every sampler, below
def test_native_sampler_equals_the_pack_path_on_the_same_weights(host, mode):
    images, latent = native(host, mode=mode)
    own_images, own_latent = own(host, mode=mode)
    assert images.shape == (2, 128, 128, 3) and latent["samples"].shape == (2, 4, 64, 64)
    # T5 unpadded (ComfyUI) vs padded + masked (ours), same weights otherwise: measured rel ~1e-6
    assert rel(latent["samples"], own_latent["samples"]) < 1e-4
    assert (images - own_images).abs().max() < 1e-3


# a model folder's scheduler with leading spacing (Stable Diffusion's, steps_offset 1): Euler's starting sigma then
# depends on the step count (2 steps: t=501, sigma 1.0 instead of t=999's 157.4)
LEADING = {**default_scheduler().config, "timestep_spacing": "leading", "steps_offset": 1}


def diffusers_images(h, scheduler: str, config: dict | None) -> torch.Tensor:
    """diffusers' ``PixArtAlphaPipeline`` on the pack path's weights, the widgets' settings: ``(F, H, W, 3)``."""
    from diffusers import PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline(tokenizer=h.tok, text_encoder=h.t5, vae=h.vae, transformer=h.diffusers,
                               scheduler=make_scheduler(scheduler, config))
    pipe.set_progress_bar_config(disable=True)
    images = pipe([STORY.global_caption(i) for i in range(STORY.num_frames)], negative_prompt=STORY.negative_prompt,
                  num_inference_steps=WIDGETS["steps"], guidance_scale=WIDGETS["cfg"], height=STORY.height,
                  width=STORY.width, generator=torch.Generator().manual_seed(WIDGETS["seed"]),
                  use_resolution_binning=False, clean_caption=False, output_type="pt").images
    return images.permute(0, 2, 3, 1)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_plain_sampling_on_both_paths_equals_diffusers(host, scheduler):
    """mode none with every offered sampler: the native sampler (MODEL + CLIP + VAE; no model folder, so PixArt's
    schedule) equals the pack path on the same weights, and the pack path equals diffusers' PixArtAlphaPipeline,
    also for a model folder whose scheduler has leading spacing (the initial noise scaled for the schedule run)."""
    images, latent = native(host, mode="none", scheduler=scheduler)
    own_images, own_latent = own(host, mode="none", scheduler=scheduler)
    # T5 unpadded (ComfyUI) vs padded + masked (ours), same weights otherwise: measured rel ~1e-6
    assert rel(latent["samples"], own_latent["samples"]) < 1e-4
    assert (images - own_images).abs().max() < 1e-3
    # the same fp32 operations batched differently (conditional half first here): measured <= 2e-6
    assert (own_images - diffusers_images(host, scheduler, None)).abs().max() < 1e-4
    leading = own(host, mode="none", scheduler=scheduler, scheduler_config=LEADING)[0]
    assert (leading - diffusers_images(host, scheduler, LEADING)).abs().max() < 1e-4


def test_the_subject_branch_and_its_scale_change_the_story(host):
    base = native(host, mode="lay2story")[1]["samples"]
    off = native(host, mode="none")[1]["samples"]
    zero = native(host, mode="lay2story", subject_scale=0.0)[1]["samples"]
    assert rel(base, off) > 1e-3
    plain_layout = native(host, branch=False, mode="training_free")  # sanity: runs without a branch
    assert torch.isfinite(plain_layout[1]["samples"]).all()
    # scale 0 = the global branch alone with the same captions
    none_same_captions = ComfyStoryPipeline(host.model, host.clip, host.comfy_vae, make_scheduler("dpmsolver++"))(
        STORY, mode="none", num_inference_steps=2, seed=3, output_type="latent").latents
    torch.testing.assert_close(zero, host.model.model.latent_format.process_out(none_same_captions), rtol=1e-4,
                               atol=1e-5)
    per_char = native(host, mode="lay2story", character_scales="villain=0")[1]["samples"]
    assert rel(per_char, base) > 1e-4 and rel(per_char, zero) > 1e-4


def test_training_free_at_rate_0_equals_the_plain_model(host):
    pipe = ComfyStoryPipeline(host.model, host.clip, host.comfy_vae, make_scheduler("dpmsolver++"))
    kwargs = {"num_inference_steps": 2, "seed": 5, "output_type": "latent"}
    plain = pipe(STORY, mode="none", **kwargs).latents
    rate0 = pipe(STORY, mode="training_free", consistency=ConsistencyConfig(rate=0.0, regional_captions=False),
                 layout=False, **kwargs).latents
    torch.testing.assert_close(rate0, plain, rtol=1e-5, atol=1e-6)
    assert pipe.transformer._processors is None


def test_comfyui_places_every_model_and_keeps_nothing(host):
    bundle = SubjectBranchBundle(host.branch, managed(host.branch), "test")
    L2S_StorySampler().sample(story=STORY, pixart=host.model, clip=host.clip, vae=host.comfy_vae,
                              subject_branch=bundle, **{**WIDGETS, "mode": "lay2story"})
    loads = [c for c in host.mm.calls if c[0] == "load_models_gpu"]
    ids = [set(c[1]) for c in loads]
    clip_load = ids.index({id(host.clip.patcher)})
    story_load = ids.index({id(host.model), id(bundle.patcher)})
    assert clip_load < story_load  # T5 first, then PixArt + branch (once per story), then the VAE to decode
    assert ids[-1] == {id(host.comfy_vae.patcher)}
    # every caption went through ComfyUI's CLIP: global (identity + prompt), negative, subject captions
    texts = [STORY.global_caption(0), STORY.global_caption(1), "", "the fox sitting", "the villain standing"]
    assert {host.tok.decode(host.tok(t)["input_ids"]) for t in texts} <= set(host.clip.encoded)
    # the branch is ComfyUI's: unloaded and dropped by ComfyUI, nothing of the pack keeps it alive
    ref = weakref.ref(host.branch)
    host.mm.unload_all_models()
    del bundle, host.branch
    gc.collect()
    assert ref() is None


def test_lora_patched_model_is_sampled_with_its_patches(host):
    key = "diffusion_model.blocks.1.mlp.fc2.weight"
    diff = torch.randn_like(dict(host.model.model.named_parameters())[key]) * 0.2
    patched = host.model.clone()
    patched.add_patches({key: diff})
    original = dict(host.model.model.named_parameters())[key].detach().clone()
    kwargs = {**WIDGETS, "mode": "none"}
    with_lora = L2S_StorySampler().sample(story=STORY, pixart=patched, clip=host.clip, vae=host.comfy_vae,
                                          **kwargs)[1]["samples"]
    host.mm.unload_all_models()
    torch.testing.assert_close(dict(host.model.model.named_parameters())[key], original)
    with torch.no_grad():
        dict(host.dm.named_parameters())["blocks.1.mlp.fc2.weight"].add_(diff)
    direct = L2S_StorySampler().sample(story=STORY, pixart=host.model, clip=host.clip, vae=host.comfy_vae,
                                       **kwargs)[1]["samples"]
    torch.testing.assert_close(with_lora, direct, rtol=1e-5, atol=1e-6)


def test_low_vram_mode_runs_with_weights_kept_in_another_dtype(host, monkeypatch):
    """Low VRAM: ComfyUI leaves weights where they are (here float16 storage, as fp8 checkpoints) and casts them per
    call; the story computes in the MODEL's manual-cast dtype."""
    reference = native(host, mode="lay2story")[1]["samples"]
    host.mm.unload_all_models()
    host.mm.low_vram = True
    host.dm.half()
    host.model.model.manual_cast_dtype = torch.float32
    low = native(host, mode="lay2story")[1]["samples"]
    assert torch.isfinite(low).all() and rel(low, reference) < 2e-2


def test_cancel_mid_story_stops_and_leaves_everything_usable(host):
    host.mm.interrupted = True  # the next Cancel point (the first step's progress update) raises
    with pytest.raises(InterruptProcessingException):
        native(host, mode="training_free")
    again = native(host, mode="training_free")[1]["samples"]
    assert torch.isfinite(again).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"clip": None}, "^clip: the pixart MODEL needs clip and vae"),
    ({"pixart": "model"}, "^pixart: expected a MODEL"),
    ({"clip": 1}, "^clip: expected a CLIP"),
    ({"vae": "vae"}, "^vae: expected a VAE"),
    ({"subject_branch": "branch"}, "^subject_branch: expected an L2S_SUBJECT_BRANCH"),
    ({"mode": "lay2story", "subject_branch": None}, "^mode: 'lay2story' needs a subject branch"),
    ({"character_scales": "nobody=1"}, "^character_scales: unknown character 'nobody'"),
    ({"character_scales": "hero=big"}, "^character_scales: expected 'id=number'"),
])
def test_bad_native_inputs_name_the_input(host, kwargs, message):
    args = {"story": STORY, "pixart": host.model, "clip": host.clip, "vae": host.comfy_vae, **WIDGETS, **kwargs}
    with pytest.raises(ValueError, match=message):
        L2S_StorySampler().sample(**args)


def test_both_kinds_of_model_at_once_is_refused(host):
    model = StoryModel(host.diffusers, None, host.vae, torch.float32, torch.device("cpu"), "test")
    with pytest.raises(ValueError, match="^model: connect either"):
        L2S_StorySampler().sample(model, None, STORY, pixart=host.model, clip=host.clip, vae=host.comfy_vae)


def test_three_characters_each_with_its_own_reference(host):
    """Reference Image chained per character; each frame may hold any of them, no solo frames needed."""
    torch.manual_seed(6)
    refs = None
    for char_id, box in (("hero", (0.0, 0.0, 0.5, 1.0)), ("cat", (0.5, 0.0, 1.0, 1.0)), ("villain", (0, 0, 1, 1))):
        (refs,) = L2S_ReferenceImage().build(torch.rand(1, 32, 32, 3), char_id, *box, reference=refs)
    with_refs = native(host, mode="lay2story", reference=refs)[1]["samples"]
    without = native(host, mode="lay2story")[1]["samples"]
    assert torch.isfinite(with_refs).all() and rel(with_refs, without) > 1e-4
    own_refs = own(host, mode="lay2story", reference=refs)[1]["samples"]
    assert rel(with_refs, own_refs) < 1e-3  # references through ComfyUI's VAE = through ours (same weights)


# -------------------------------------------------------------------------------------- example workflows
@pytest.mark.parametrize("name", ["lay2story_core_loaders", "training_free_core_loaders"])
def test_core_loader_examples_run(name, models_root, monkeypatch, tmp_path, run_api):
    """The templates with PixArt + T5 + VAE from ComfyUI's core loaders, run on stand-ins of those loaders (a
    real installation is exercised by test_comfy_real_host.py)."""
    import json
    import shutil

    from comfy_standin import core_nodes

    from nodes.registry import NODE_CLASS_MAPPINGS

    models = tmp_path / "models"
    for sub in ("text_encoders", "vae"):
        shutil.copytree(models_root / sub, models / sub)
    (models / "diffusion_models").mkdir()
    torch.manual_seed(8)
    dm = PixArtMS(hidden_size=144, depth=4, num_heads=2, caption_channels=12).eval()
    torch.save(dm.state_dict(), models / "diffusion_models" / "PixArt-XL-2-512x512.pth")
    diffusers_model = load_pixart_transformer(models / "diffusion_models" / "PixArt-XL-2-512x512.pth")
    SubjectBranch.from_transformer(diffusers_model).save_pretrained(models / "lay2story" / "tiny_branch")
    mm = install(monkeypatch, models)
    for class_type, cls in core_nodes(mm, models).items():
        monkeypatch.setitem(NODE_CLASS_MAPPINGS, class_type, cls)
    prompt = json.loads((ROOT_EXAMPLES / "api" / f"{name}.json").read_text())
    outputs, _, sinks = run_api(prompt, {"L2S_StorySampler": {"steps": 2, "width": 128, "height": 128}})
    (saved,) = sinks.values()
    frames = len(next(v for v in prompt.values() if v["class_type"] in ("L2S_Story", "L2S_StoryFromJSON"))["inputs"]
                 .get("frame_prompts", "x\nx\nx\nx").splitlines())
    assert saved["images"].shape == (frames, 128, 128, 3) and torch.isfinite(saved["images"]).all()
    loads = [c for c in mm.calls if c[0] == "load_models_gpu"]
    assert len(loads) >= 3  # CLIP, then MODEL (+ branch), then the VAE: all placed by model management


def test_the_pack_loaders_hand_their_models_to_comfyui(models_root, monkeypatch):
    """Inside ComfyUI the pack's own loaders keep no model: the models wait on the offload device as ModelPatchers,
    the sampler asks ComfyUI to load them, and ComfyUI dropping them frees them."""
    from nodes.loaders import L2S_ModelLoader, L2S_TextEncoderLoader

    mm = install(monkeypatch, models_root)
    loader, text_loader = L2S_ModelLoader(), L2S_TextEncoderLoader()
    (model,) = loader.load("lay2story/tiny_pipeline", "auto", "auto", "fp32", "auto")
    (text,) = text_loader.load("lay2story/tiny_pipeline", "auto", "fp32", "auto", True)
    assert len(model.patchers) == 3 and len(text.patchers) == 1
    assert loader._cache._slots == {} and text_loader._cache._slots == {}
    story = Story.from_dict({"version": 1, "width": 16, "height": 16,
                             "characters": [{"id": "hero", "identity": "a red fox"}],
                             "frames": [{"prompt": "in the grass"}, {"prompt": "at night"}]})
    images, latent, _ = L2S_StorySampler().sample(model, text, story, **WIDGETS)
    assert images.shape == (2, 16, 16, 3) and torch.isfinite(latent["samples"]).all()
    (call,) = [c for c in mm.calls if c[0] == "load_models_gpu"]
    assert set(call[1]) == {id(p) for p in (*text.patchers, *model.patchers)} and call[3] is True
    ref = weakref.ref(model.transformer)
    mm.unload_all_models()
    del model, call
    gc.collect()
    assert ref() is None


def test_redo_frames_on_comfyui_models_equals_the_pack_path(host):
    """Lay2Story Redo Frames over the pixart MODEL + CLIP + VAE: the kept frame stays as it was, and the redone one
    (its kept frame's keys/values re-derived through ComfyPixArt's subject branch alone) is the pack path's."""
    from nodes.redo import L2S_RedoFrames

    bundle = SubjectBranchBundle(host.branch, managed(host.branch), "test")
    images, _, result = L2S_StorySampler().sample(story=STORY, pixart=host.model, clip=host.clip, vae=host.comfy_vae,
                                                  subject_branch=bundle, **{**WIDGETS, "mode": "lay2story"})
    redone, latent, _ = L2S_RedoFrames().redo(result, "1", 9, True, "", 0, pixart=host.model, clip=host.clip,
                                              vae=host.comfy_vae, subject_branch=bundle)
    assert torch.equal(redone[0], images[0]) and not torch.allclose(redone[1], images[1])
    model = StoryModel(host.diffusers, host.branch, host.vae, torch.float32, torch.device("cpu"), "test")
    text = TextEncoderBundle(host.tok, host.t5, torch.float32, None, False, "test")
    _, _, own_result = L2S_StorySampler().sample(model, text, STORY, **{**WIDGETS, "mode": "lay2story"})
    _, own_latent, _ = L2S_RedoFrames().redo(own_result, "1", 9, True, "", 0, model=model, text_encoder=text)
    assert rel(latent["samples"][1], own_latent["samples"][1]) < 1e-4
