"""Filter hooks: spec parsing, the registry, the aesthetic head and the safety checker (tiny random models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.filters import (
    FILTERS,
    AestheticFilter,
    FrameFilter,
    LinearChainHead,
    SafetyFilter,
    build_filter,
    parse_filter_spec,
)


def keep_bright(min_mean="100"):
    """A user filter factory (importable by dotted path)."""
    threshold = float(min_mean)

    def hook(images):
        return [float(np.asarray(im).mean()) >= threshold for im in images]

    return hook


def test_spec_parsing_and_registry():
    assert parse_filter_spec("aesthetic:clip=/m/clip, head=/m/h.safetensors,min_score=5") == (
        "aesthetic", {"clip": "/m/clip", "head": "/m/h.safetensors", "min_score": "5"})
    assert parse_filter_spec("safety") == ("safety", {})
    assert set(FILTERS) == {"aesthetic", "safety"}
    with pytest.raises(TypeError):
        FILTERS["mine"] = keep_bright  # the registry is read-only
    with pytest.raises(ValueError, match="not key=value"):
        parse_filter_spec("aesthetic:clip")
    with pytest.raises(ValueError, match="unknown filter 'nope'"):
        build_filter("nope")
    with pytest.raises(ValueError, match="cannot import"):
        build_filter("no_such_module_xyz.factory")


def test_dotted_factory_hook():
    hook = build_filter(f"{__name__}.keep_bright:min_mean=50")
    assert hook.name == f"{__name__}.keep_bright"
    assert isinstance(hook, FrameFilter)
    assert hook([Image.new("RGB", (4, 4), 200), Image.new("RGB", (4, 4), 10)]) == [True, False]
    with pytest.raises(ValueError, match="bad options"):
        build_filter(f"{__name__}.keep_bright:colour=red")


def _head_state(dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        state[f"layers.{2 * i}.weight"] = torch.randn(b, a, generator=g)
        state[f"layers.{2 * i}.bias"] = torch.randn(b, generator=g)
    return state


def test_linear_chain_head_matches_laion_layout(tmp_path):
    from safetensors.torch import save_file

    dims = [16, 12, 8, 1]
    state = _head_state(dims)
    # Keys sort numerically (layers.10 after layers.2), as in LAION's 5-layer head.
    head = LinearChainHead(state)
    x = torch.randn(3, 16)
    expected = x
    for i in range(3):
        expected = expected @ state[f"layers.{2 * i}.weight"].T + state[f"layers.{2 * i}.bias"]
    torch.testing.assert_close(head(x), expected[:, 0])
    save_file(state, str(tmp_path / "head.safetensors"))
    torch.save(state, tmp_path / "head.pth")
    for name in ("head.safetensors", "head.pth"):
        torch.testing.assert_close(LinearChainHead.from_file(tmp_path / name)(x), expected[:, 0])
    with pytest.raises(ValueError, match="expected \\(out, 12\\)"):
        LinearChainHead({"a.0.weight": torch.zeros(12, 16), "a.1.weight": torch.zeros(1, 5)})
    with pytest.raises(ValueError, match="expected 1"):
        LinearChainHead({"a.0.weight": torch.zeros(2, 16)})
    with pytest.raises(FileNotFoundError, match="not found"):
        LinearChainHead.from_file(tmp_path / "missing.safetensors")


def test_aesthetic_filter_thresholds_scores(tiny_models, tmp_path):
    from safetensors.torch import save_file

    _, clip_folder = tiny_models
    save_file(_head_state([16, 8, 1], seed=3), str(tmp_path / "head.safetensors"))
    hook = build_filter(f"aesthetic:clip={clip_folder},head={tmp_path / 'head.safetensors'},min_score=0")
    assert isinstance(hook, AestheticFilter) and hook.name == "aesthetic"
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(6)]
    scores = hook.scores(images)
    hook.min_score = float(np.median(scores))
    assert hook(images) == [bool(s >= hook.min_score) for s in scores]
    assert 0 < sum(hook(images)) < 6
    save_file(_head_state([32, 1]), str(tmp_path / "wide.safetensors"))
    with pytest.raises(ValueError, match="expects 32-d CLIP embeddings"):
        build_filter(f"aesthetic:clip={clip_folder},head={tmp_path / 'wide.safetensors'}")


def test_safety_filter_with_tiny_checker(tiny_models, tmp_path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessorPil

    _, clip_folder = tiny_models
    config = CLIPConfig.from_pretrained(clip_folder)
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    checker.save_pretrained(tmp_path / "safety")
    CLIPImageProcessorPil.from_pretrained(clip_folder).save_pretrained(tmp_path / "safety")
    hook = build_filter(f"safety:folder={tmp_path / 'safety'}")
    assert isinstance(hook, SafetyFilter)
    images = [Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(3)]
    assert hook(images) == [True, True, True]  # untrained concept embeddings flag nothing...
    with torch.no_grad():  # ...and a zero threshold on every concept flags everything
        hook.checker.concept_embeds_weights.fill_(-10.0)
    assert hook(images) == [False, False, False]
    assert hook([]) == []


def _tiny_checker(clip_folder, folder, seed=0):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessorPil

    config = CLIPConfig.from_pretrained(clip_folder)
    torch.manual_seed(seed)
    checker = StableDiffusionSafetyChecker(config)
    checker.save_pretrained(folder)
    CLIPImageProcessorPil.from_pretrained(clip_folder).save_pretrained(folder)
    return checker


def test_safety_flags_follow_the_checker_and_its_margin(tiny_models, tmp_path):
    _, clip_folder = tiny_models
    checker = _tiny_checker(clip_folder, tmp_path / "safety")
    hook = SafetyFilter.from_options(str(tmp_path / "safety"))
    rng = np.random.default_rng(1)
    images = [Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)) for _ in range(12)]
    pixels = hook.image_processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        embeds = torch.nn.functional.normalize(checker.visual_projection(checker.vision_model(pixels)[1]), dim=-1)
        sims = embeds @ torch.nn.functional.normalize(checker.concept_embeds, dim=-1).T
        # Thresholds at the median similarity of each concept: some images flagged, some not.
        hook.checker.concept_embeds_weights.copy_(sims.median(dim=0).values)
        hook.checker.special_care_embeds_weights.fill_(1.0)
        _, expected = hook.checker(clip_input=pixels, images=np.zeros((12, 1, 1, 3), np.float32))
    flags = hook.flags(images).tolist()
    assert flags == list(expected) and 0 < sum(flags) < 12  # adjustment 0 is the checker's own rule
    hook.adjustment = 0.5  # a positive margin flags more, a negative one fewer
    assert sum(hook.flags(images).tolist()) == 12
    hook.adjustment = -0.5
    assert sum(hook.flags(images).tolist()) == 0
    assert hook(images) == [True] * 12


def test_embedding_aesthetic_filter(tmp_path):
    from safetensors.torch import save_file

    from training.data.filters import EmbeddingAestheticFilter

    state = _head_state([16, 8, 1], seed=2)
    save_file(state, str(tmp_path / "head.safetensors"))
    head = EmbeddingAestheticFilter.from_file(str(tmp_path / "head.safetensors"), min_score=0.0, dim=16)
    x = torch.nn.functional.normalize(torch.randn(10, 16), dim=-1)
    expected = (x @ state["layers.0.weight"].T + state["layers.0.bias"]) @ state["layers.2.weight"].T
    expected = (expected + state["layers.2.bias"])[:, 0]
    np.testing.assert_allclose(head.scores(x.numpy()), expected.numpy(), rtol=1e-5, atol=1e-6)
    head.min_score = float(expected.median())
    assert head.keep(x.numpy()) == [bool(s >= head.min_score) for s in head.scores(x.numpy())]
    with pytest.raises(ValueError, match="expects 16-d CLIP embeddings, the CLIP model gives 32"):
        EmbeddingAestheticFilter.from_file(str(tmp_path / "head.safetensors"), dim=32)
