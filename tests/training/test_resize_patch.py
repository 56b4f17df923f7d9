"""``training.resize_patch``: a PixArt global branch given a smaller patch computes, on latents that are constant over
each old patch, what it computed before averaged over each old patch (exactly, with the position embeddings taken
out; the new position table holds the old one at every old token's first cell), and the CLI fails in one line on bad
input."""

from __future__ import annotations

import pytest
import torch
from diffusers import PixArtTransformer2DModel
from diffusers.models.embeddings import get_2d_sincos_pos_embed_from_grid
from tiny_models import make_pixart

from training.resize_patch import main, resize_patch


def _pixart(kind: str = "alpha512") -> PixArtTransformer2DModel:
    model = make_pixart(kind)  # patch 2
    with torch.no_grad():  # diffusers leaves the output layers random and PixArt's init zeroes some: make all count
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def _call(model, latents: torch.Tensor, timestep: int = 500) -> torch.Tensor:
    torch.manual_seed(1)
    captions = torch.randn(latents.shape[0], 5, model.config.caption_channels)
    return model(latents, encoder_hidden_states=captions, timestep=torch.full((latents.shape[0],), timestep),
                 added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample


@torch.no_grad()
def test_resized_model_equals_the_old_one_on_patch_constant_latents_without_positions():
    old = _pixart()
    new = resize_patch(old, 1)
    assert new.config.patch_size == 1 and new.config.interpolation_scale == 2.0
    # every tensor but the patch embedding and the output projection is carried over bit for bit
    old_state, new_state = old.state_dict(), new.state_dict()
    for name, value in old_state.items():
        if not name.startswith(("pos_embed.proj", "proj_out")):
            assert torch.equal(new_state[name], value), name
    # take the position embeddings out of both: the rest is then exact
    old.pos_embed.pos_embed.zero_()
    new.pos_embed.pos_embed.zero_()
    latents = torch.nn.functional.interpolate(torch.randn(3, 4, 4, 4), scale_factor=2, mode="nearest")
    for timestep in (50, 500, 950):
        want = _call(old, latents, timestep)
        got = _call(new, latents, timestep)
        # each new cell is the mean of the old cells of its patch (the old model's own 2x2 output, averaged)
        pooled = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(want, 2), scale_factor=2,
                                                 mode="nearest")
        torch.testing.assert_close(got, pooled, rtol=1e-4, atol=1e-5)
        assert (want - pooled).abs().max() > 1e-3  # the old model's output is not itself patch-constant


@pytest.mark.parametrize("kind", ["alpha512", "sigma"])  # interpolation scale 1 (the default) and 2 (Sigma)
@torch.no_grad()
def test_new_position_table_holds_the_old_one_at_each_old_token(kind):
    old = _pixart(kind)
    new = resize_patch(old, 1)
    assert new.config.interpolation_scale == 2 * (old.config.interpolation_scale or 1)
    side, dim = old.config.sample_size // 2, old.inner_dim
    old_table = old.pos_embed.pos_embed.reshape(side, side, dim)
    new_table = new.pos_embed.pos_embed.reshape(2 * side, 2 * side, dim)
    torch.testing.assert_close(new_table[::2, ::2], old_table)
    # the cells between sit half an old token further on: the sin-cos table at old positions i + 0.5 (in the old
    # table's units, i / interpolation scale)
    half = (torch.arange(side, dtype=torch.float32) + 0.5) / (old.config.interpolation_scale or 1)
    grid = torch.stack(torch.meshgrid(half, half, indexing="xy"), dim=0).reshape(2, 1, side, side)
    between = get_2d_sincos_pos_embed_from_grid(dim, grid, output_type="pt").reshape(side, side, dim)
    torch.testing.assert_close(new_table[1::2, 1::2], between.to(new_table.dtype))


@pytest.mark.parametrize("bad", [3, 0, 2.0, True, 4])
def test_patch_size_that_does_not_divide_is_one_line_naming_the_field(bad):
    with pytest.raises(ValueError, match=r"^patch_size: expected a positive divisor of the model's patch size 2"):
        resize_patch(_pixart(), bad)


def test_cli_writes_a_loadable_model_and_refuses_bad_input(tmp_path, capsys):
    source, out = tmp_path / "p2", tmp_path / "p1"
    old = _pixart()
    old.save_pretrained(source)
    assert main(["--transformer", str(source), "--out", str(out), "--patch-size", "1"]) == 0
    loaded = PixArtTransformer2DModel.from_pretrained(out)
    assert loaded.config.patch_size == 1
    for name, value in resize_patch(old, 1).state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    # an existing non-empty folder is never overwritten; a bad size or source is one line, exit code 2
    assert main(["--transformer", str(source), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith("--out: expected a new or empty folder")
    assert main(["--transformer", str(source), "--out", str(tmp_path / "p3"), "--patch-size", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("--patch-size: expected a positive divisor") and "\n" not in err
    assert not (tmp_path / "p3").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p1", "p2"]  # no staging folder left behind
    assert main(["--transformer", str(tmp_path / "missing"), "--out", str(tmp_path / "p4")]) == 2
    assert capsys.readouterr().err.strip().startswith("--transformer: cannot load")
