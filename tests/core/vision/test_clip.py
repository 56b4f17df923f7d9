"""ClipEmbedder on tiny random CLIP folders (full CLIPModel and vision-only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lay2story_core.vision import ClipEmbedder


def _image(colour, size=(40, 30)):
    return Image.new("RGB", size, colour)


def _noise(seed, size=(48, 36)):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_image_embeddings_are_normalised_and_deterministic(clip):
    images = [_noise(0), _noise(1), _image((255, 0, 0)), _noise(0)]
    emb = clip.embed_images(images)
    assert emb.shape == (4, clip.dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(emb[0], emb[3])  # same pixels, same embedding
    assert not torch.allclose(emb[0], emb[1], atol=1e-4)
    # Batching does not matter.
    torch.testing.assert_close(clip.embed_images(images, batch_size=1), emb, atol=1e-5, rtol=1e-5)


def test_embeddings_match_the_model_projection(clip, clip_folder):
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(clip_folder).eval()
    pixels = CLIPImageProcessorPil.from_pretrained(clip_folder)(images=[_noise(3)], return_tensors="pt").pixel_values
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    raw = out if isinstance(out, torch.Tensor) else out.pooler_output
    torch.testing.assert_close(clip.embed_images([_noise(3)]), torch.nn.functional.normalize(raw, dim=-1))


def test_text_embeddings(clip):
    emb = clip.embed_texts(["a red square", "a blue circle", "a red square"])
    assert emb.shape == (3, clip.dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[0], emb[2])
    long = clip.embed_texts(["word " * 200])  # truncated to the model's max length, not an error
    assert long.shape == (1, clip.dim)
    assert clip.embed_texts([]).shape == (0, clip.dim)
    with pytest.raises(TypeError, match="single string"):
        clip.embed_texts("a cat")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        clip.embed_texts(["a cat", 3])


def test_vision_only_folder(tmp_path, clip_folder, clip):
    from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

    full = clip.model
    vision = CLIPVisionModelWithProjection(full.config.vision_config)
    vision.config.projection_dim = full.config.projection_dim
    vision = CLIPVisionModelWithProjection(vision.config)
    vision.vision_model.load_state_dict(full.vision_model.state_dict())
    vision.visual_projection.load_state_dict(full.visual_projection.state_dict())
    vision.save_pretrained(tmp_path / "vision")
    CLIPImageProcessorPil.from_pretrained(clip_folder).save_pretrained(tmp_path / "vision")
    only = ClipEmbedder.from_pretrained(tmp_path / "vision", device="cpu")
    images = [_noise(5), _noise(6)]
    torch.testing.assert_close(only.embed_images(images), clip.embed_images(images), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="vision-only"):
        only.embed_texts(["a cat"])


def test_bad_inputs(clip, tmp_path):
    with pytest.raises(TypeError, match=r"images\[0\]"):
        clip.embed_images([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match="batch_size"):
        clip.embed_images([_noise(0)], batch_size=0)
    assert clip.embed_images([]).shape == (0, clip.dim)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type 'bert'"):
        ClipEmbedder.from_pretrained(tmp_path / "bert")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipEmbedder.from_pretrained(tmp_path / "nothing")
