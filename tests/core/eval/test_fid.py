import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lay2story_core.eval import (
    EmbedderFeatures,
    FeatureStats,
    FIDInceptionV3,
    InceptionFeatures,
    compute_fid,
    fid_from_stats,
    find_inception_weights,
    frechet_distance,
    load_fid_inception,
)


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(mu1, np.diag(s1), mu2[:2], np.diag(s2[:2]))


@pytest.mark.parametrize("n1, n2", [(40, 50), (6, 9), (9, 40)])
def test_eigh_low_rank_and_sqrtm_agree(n1, n2):
    rng = np.random.default_rng(n1)
    a = FeatureStats.from_features(rng.normal(size=(n1, 16)))
    b = FeatureStats.from_features(rng.normal(loc=0.3, scale=1.5, size=(n2, 16)))
    assert (a.factor is not None) == (n1 <= 16)
    reference = frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method="sqrtm")
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(reference, rel=1e-6, abs=1e-8)
    assert fid_from_stats(a, b) == pytest.approx(reference, rel=1e-6, abs=1e-8)
    assert fid_from_stats(b, a) == pytest.approx(reference, rel=1e-6, abs=1e-8)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(a.mu, a.sigma, b.mu, b.sigma, method="svd")


def test_frechet_distance_handles_singular_covariances():
    feats = np.random.default_rng(0).normal(size=(3, 8))  # 3 samples in 8-d: rank-deficient covariance
    stats = FeatureStats.from_features(feats)
    value = frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma)
    assert np.isfinite(value) and value < 1e-3


def test_feature_stats_validates():
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats.from_features(np.full((3, 4), np.nan))


def test_fid_same_set_is_best_and_other_set_worse(tiny_clip_dir, rand_img):
    from lay2story_core.vision import ClipEmbedder

    clip = ClipEmbedder.from_pretrained(tiny_clip_dir, device="cpu")
    extractor = EmbedderFeatures(clip.embed_images, name="clip[tiny]")
    real = [rand_img(i) for i in range(12)]
    same = compute_fid(extractor, real, real)
    other = compute_fid(extractor, [rand_img(100 + i).rotate(90).quantize(4).convert("RGB") for i in range(12)],
                        real)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert other["fid"] > same["fid"] + 1e-4
    assert other["extractor"] == "clip[tiny]" and other["n_generated"] == 12 and other["n_real"] == 12
    with pytest.raises(ValueError, match="generated"):
        compute_fid(extractor, real[:1], real)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = FIDInceptionV3()
    for m in model.modules():  # non-trivial BN statistics, as in trained weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.zeros(1008, 2048)  # pytorch-fid's file carries the classifier: ignored
    state["fc.bias"] = torch.zeros(1008)
    root = tmp_path_factory.mktemp("inception")
    torch.save(state, root / "pt_inception-2015-12-05-test.pth")
    save_file(state, str(root / "inception.safetensors"))
    return model.eval(), root


def test_inception_architecture_has_torchvision_names(inception_weights):
    model, _ = inception_weights
    names = set(model.state_dict())
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7a.branch7x7x3_4.conv.weight",
                "Mixed_7c.branch3x3dbl_3b.conv.weight", "Mixed_7c.branch_pool.bn.weight"):
        assert key in names
    assert sum(p.numel() for p in model.parameters()) == 21_785_568


def test_load_fid_inception_round_trip(inception_weights, rand_img):
    model, root = inception_weights
    with pytest.raises(FileNotFoundError, match="one weights file"):
        find_inception_weights(root)  # two candidates
    x = torch.rand(2, 3, 80, 80)
    model.resize_input = False
    with torch.no_grad():
        ref = model(x)
    from_pth = load_fid_inception(root / "pt_inception-2015-12-05-test.pth", resize_input=False)
    from_st = load_fid_inception(root / "inception.safetensors", resize_input=False)
    with torch.no_grad():
        assert torch.allclose(from_pth(x), ref, atol=1e-5)
        assert torch.allclose(from_st(x), ref, atol=1e-5)
    assert not any(p.requires_grad for p in from_st.parameters())
    features = InceptionFeatures(from_st, image_size=80)
    out = features([rand_img(0), rand_img(1, size=64)])
    assert out.shape == (2, 2048) and features.name == "inception-v3-fid@80px"


def test_load_fid_inception_rejects_wrong_weights(tmp_path):
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "inception.pth")
    with pytest.raises(ValueError, match="does not match"):
        load_fid_inception(tmp_path / "inception.pth")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_fid_inception(tmp_path / "missing")
