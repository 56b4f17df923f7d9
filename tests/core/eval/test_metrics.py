import numpy as np
import pytest
import torch
from PIL import Image

from lay2story_core.eval import (
    DreamSimEnsemble,
    clip_i_score,
    crop_subject,
    dreamsim_score,
    mean_pairwise_cosine,
    normalize_embedding,
    recall_at_1,
    subject_crops,
)
from lay2story_core.eval.images import box_to_pixels, prepare_batch, to_pil
from lay2story_core.vision import ClipEmbedder


# ------------------------------------------------------------------------------------------------ images / crops
def test_box_to_pixels_rounds_outward_and_validates():
    assert box_to_pixels((0.1, 0.25, 0.5, 1.0), 10, 8) == (1, 2, 5, 8)
    assert box_to_pixels((0.0, 0.0, 0.01, 0.01), 10, 10) == (0, 0, 1, 1)
    with pytest.raises(ValueError, match="box"):
        box_to_pixels((0.5, 0.0, 0.4, 1.0), 10, 10)


def test_crop_subject_blanks_background_outside_mask():
    img = Image.new("RGB", (20, 10), (10, 20, 30))
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :10] = True
    crop = np.asarray(crop_subject(img, (0.0, 0.0, 1.0, 1.0), mask))
    assert crop.shape == (10, 20, 3)
    assert (crop[:, :10] == (10, 20, 30)).all() and (crop[:, 10:] == 255).all()
    assert crop_subject(img, (0.5, 0.0, 1.0, 0.5)).size == (10, 5)
    assert crop_subject(img, None).size == (20, 10)


def test_to_pil_accepts_tensors_and_rejects_bad_shapes():
    chw = torch.zeros(3, 4, 5)
    chw[0] = 1.0
    img = to_pil(chw)
    assert img.size == (5, 4) and img.getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ValueError, match="image"):
        to_pil(torch.zeros(2, 4, 5, 7))
    with pytest.raises(ValueError, match="NaN"):
        to_pil(torch.full((4, 4, 3), float("nan")))


def test_prepare_batch_normalises():
    batch = prepare_batch([Image.new("RGB", (7, 5), (255, 0, 0))], 8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert batch.shape == (1, 3, 8, 8)
    assert torch.allclose(batch[0, 0], torch.ones(8, 8)) and torch.allclose(batch[0, 1], -torch.ones(8, 8))


def test_subject_crops_follow_layout(story_factory, rand_img):
    story = story_factory(3)
    frames = [rand_img(i, size=40) for i in range(3)]
    crops = subject_crops(story, frames)
    assert list(crops) == ["hero"] and len(crops["hero"]) == 3
    assert crops["hero"][0].size == (20, 32)  # box 0.1..0.6 x 0.1..0.9 of 40 px
    full = subject_crops(story, frames, use_boxes=False)
    assert full["hero"][0].size == (40, 40)
    with pytest.raises(ValueError, match="frames"):
        subject_crops(story, frames[:2])


# ------------------------------------------------------------------------------------------------ CLIP-I
def test_mean_pairwise_cosine():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_cosine(e) == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    with pytest.raises(ValueError):
        mean_pairwise_cosine(torch.ones(1, 4))


def test_clip_i_identical_is_best_and_shuffled_worse(tiny_clip_dir, rand_img):
    clip = ClipEmbedder.from_pretrained(tiny_clip_dir, device="cpu")
    same = clip_i_score(clip, {"hero": [rand_img(0)] * 4})
    different = clip_i_score(clip, {"hero": [rand_img(i) for i in range(4)]})
    assert same == pytest.approx(1.0, abs=1e-5)
    assert different < same - 1e-4
    # a character in one frame only does not count
    assert clip_i_score(clip, {"hero": [rand_img(0)]}) is None


# ------------------------------------------------------------------------------------------------ DreamSim
def test_normalize_embedding_centres_and_scales():
    e = normalize_embedding(torch.randn(3, 10) * 5 + 2)
    assert torch.allclose(e.mean(dim=-1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_dreamsim_ensemble_recipe(tiny_dreamsim_dir, rand_img):
    model = DreamSimEnsemble.from_pretrained(tiny_dreamsim_dir)
    assert model.backbone_names == ["dino_vitb16", "clip_vitb16", "open_clip_vitb16"]
    assert model.variant == "dreamsim-recipe-untuned[dino_vitb16+clip_vitb16+open_clip_vitb16]"
    feats = [b([rand_img(0)]).shape[-1] for b in model.backbones]
    assert feats == [16, 16, 16]  # DINO CLS (hidden) + two projected CLIP embeddings
    images = [rand_img(i) for i in range(3)]
    emb = model.embed(images)
    assert emb.shape == (3, 48)
    dist = model.pairwise_distance(images)
    assert torch.allclose(dist.diagonal(), torch.zeros(3), atol=1e-5)
    assert (dist[~torch.eye(3, dtype=torch.bool)] > 1e-4).all()
    assert torch.allclose(model.distance(images, images), torch.zeros(3), atol=1e-5)
    same = dreamsim_score(model, {"hero": [rand_img(5)] * 4})
    different = dreamsim_score(model, {"hero": [rand_img(i) for i in range(4)]})
    assert same == pytest.approx(0.0, abs=1e-5) and different > same + 1e-4


def test_dreamsim_cls_is_pre_layernorm(tiny_dreamsim_dir, rand_img):
    from lay2story_core.eval import DreamSimBackbone

    dino = DreamSimBackbone.from_folder(tiny_dreamsim_dir / "dino_vitb16")
    assert dino.feature == "cls" and dino.mean == (0.485, 0.456, 0.406)
    pixels = prepare_batch([rand_img(1)], 32, mean=dino.mean, std=dino.std)
    with torch.no_grad():
        out = dino.model(pixel_values=pixels, output_hidden_states=True)
    assert torch.allclose(dino([rand_img(1)]), out.hidden_states[-1][:, 0])
    assert not torch.allclose(dino([rand_img(1)]), out.last_hidden_state[:, 0])


def test_dreamsim_fallbacks_are_named(tiny_dreamsim_dir, tmp_path):
    single = DreamSimEnsemble.from_pretrained(tiny_dreamsim_dir / "dino_vitb16")
    assert single.variant == "dreamsim-recipe-fallback[dino_vitb16]"
    with pytest.raises(FileNotFoundError, match="dino_vitb16"):
        DreamSimEnsemble.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DreamSimEnsemble.from_pretrained(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ Recall@1
class _ColourEmbedder:
    """Embeds a solid-colour image as its mean RGB, and the texts 'red'/'green'/'blue' as unit axes."""

    AXES = {"red": 0, "green": 1, "blue": 2}

    def embed_images(self, images):
        return torch.stack([torch.tensor(np.asarray(im, dtype=np.float32).mean(axis=(0, 1))) for im in images])

    def embed_texts(self, texts):
        return torch.stack([torch.nn.functional.one_hot(torch.tensor(self.AXES[t]), 3).float() for t in texts])


def test_recall_at_1_right_order_beats_shuffled():
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    prompts = ["red", "green", "blue"]
    emb = _ColourEmbedder()
    assert recall_at_1(emb, frames, prompts)["recall"] == 1.0
    shuffled = recall_at_1(emb, [frames[1], frames[0], frames[2]], prompts)
    assert shuffled["recall"] == pytest.approx(1 / 3) and shuffled["top1"] == [1, 0, 2]
    assert recall_at_1(emb, [frames[0]] * 3, prompts)["hits"] == 0  # ties are misses
    with pytest.raises(ValueError, match="prompts"):
        recall_at_1(emb, frames, prompts[:2])


def test_recall_at_1_with_tiny_clip(tiny_clip_dir, rand_img):
    clip = ClipEmbedder.from_pretrained(tiny_clip_dir, device="cpu")
    result = recall_at_1(clip, [rand_img(i) for i in range(4)], ["a red cat", "a blue dog", "a man", "a girl"])
    assert result["total"] == 4 and 0 <= result["hits"] <= 4 and len(result["top1"]) == 4
    assert recall_at_1(clip, [rand_img(0)] * 4, ["a red cat", "a blue dog", "a man", "a girl"])["hits"] == 0
