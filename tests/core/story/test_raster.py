import pytest
import torch

from lay2story_core.story import (
    FULL_FRAME,
    LayoutError,
    Story,
    latent_grid,
    rasterize_boxes,
    rasterize_frame_masks,
)


def _reference(box, gh, gw):
    """Slow, obvious version of the centre rule."""
    x0, y0, x1, y1 = box
    out = torch.zeros(gh, gw, dtype=torch.bool)
    for i in range(gh):
        for j in range(gw):
            cx, cy = (j + 0.5) / gw, (i + 0.5) / gh
            out[i, j] = x0 <= cx <= x1 and y0 <= cy <= y1
    return out


def test_shape_dtype_and_full_frame():
    masks = rasterize_boxes([FULL_FRAME, FULL_FRAME], 16, 24, 2)
    assert masks.shape == (2, 8, 12) and masks.dtype == torch.bool
    assert masks.all()


def test_centre_rule_matches_reference():
    boxes = [(0.1, 0.2, 0.5, 0.9), (0.0, 0.0, 0.25, 0.25), (0.3, 0.6, 0.95, 0.7), (0.55, 0.05, 0.8, 0.45)]
    masks = rasterize_boxes(boxes, 8, 12)
    for box, mask in zip(boxes, masks):
        assert torch.equal(mask, _reference(box, 8, 12))
    assert masks[0].sum() > 0 and not masks[0].all()


def test_exact_cells_on_a_4x4_grid():
    # centres at 0.125, 0.375, 0.625, 0.875
    mask = rasterize_boxes([(0.1, 0.2, 0.5, 0.9)], 4, 4)[0]
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_edges_are_inclusive():
    mask = rasterize_boxes([(0.125, 0.125, 0.375, 0.375)], 4, 4)[0]
    assert mask.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.mark.parametrize(
    "box, cell",
    [
        ((0.01, 0.01, 0.02, 0.02), (0, 0)),
        ((0.26, 0.51, 0.3, 0.55), (2, 1)),  # between centres: the cell holding the box centre
        ((0.99, 0.99, 1.0, 1.0), (3, 3)),
        ((0.0, 0.4, 1.0, 0.45), None),  # a thin full-width strip: no centre row inside
    ],
)
def test_tiny_box_gets_exactly_one_token(box, cell):
    mask = rasterize_boxes([box], 4, 4)[0]
    assert mask.sum() == 1
    if cell is not None:
        assert mask[cell]
    else:
        assert mask.nonzero().tolist() == [[1, 2]]  # centre (0.5, 0.425) lies in cell row 1, column 2


def test_patch_size_changes_the_grid():
    box = (0.0, 0.0, 0.5, 0.5)
    assert rasterize_boxes([box], 16, 16, 1).shape == (1, 16, 16)
    p2 = rasterize_boxes([box], 16, 16, 2)
    assert p2.shape == (1, 8, 8) and p2[0, :4, :4].all() and p2.sum() == 16
    assert rasterize_boxes([box], 16, 16, 4).sum() == 4


def test_flattening_is_row_major():
    mask = rasterize_boxes([(0.5, 0.0, 1.0, 0.34)], 6, 4)  # top row, right half
    flat = mask.flatten(1)[0]
    assert flat.nonzero().squeeze(1).tolist() == [2, 3, 6, 7]


def test_errors():
    with pytest.raises(LayoutError, match="^latent_height: 9 is not divisible by patch_size 2"):
        rasterize_boxes([FULL_FRAME], 9, 8, 2)
    with pytest.raises(LayoutError, match="^latent_width: 7 is not divisible by patch_size 2"):
        latent_grid(8, 7, 2)
    with pytest.raises(LayoutError, match="^patch_size: must be >= 1, got 0"):
        rasterize_boxes([FULL_FRAME], 8, 8, 0)
    with pytest.raises(LayoutError, match=r"^boxes\[1\]: x1 0\.1 < x0 0\.5"):
        rasterize_boxes([FULL_FRAME, (0.5, 0, 0.1, 1)], 8, 8)
    with pytest.raises(LayoutError, match="^boxes: expected a sequence"):
        rasterize_boxes("0,0,1,1", 8, 8)


def test_empty_box_list_and_tensor_input():
    assert rasterize_boxes([], 8, 4, 2).shape == (0, 4, 2)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    assert torch.equal(rasterize_boxes(boxes, 4, 4), rasterize_boxes([(0.0, 0.0, 0.5, 1.0)], 4, 4))


def test_frame_masks_follow_resolve_frame(story_dict):
    story = Story.from_dict(story_dict)
    per_frame = rasterize_frame_masks(story, 48, 64, 2)
    assert len(per_frame) == story.num_frames
    for i, entries in enumerate(per_frame):
        assert [s for s, _ in entries] == list(story.resolve_frame(i))
        for subject, mask in entries:
            assert mask.shape == (24 * 32,) and mask.dtype == torch.bool
            assert torch.equal(mask, rasterize_boxes([subject.box], 48, 64, 2)[0].flatten())
    assert per_frame[2][0][1].all() and per_frame[2][1][1].all()  # no layout: full frame
    assert not per_frame[0][0][1].all()
    off = rasterize_frame_masks(story, 48, 64, 2, boxes=False)
    assert all(mask.all() for entries in off for _, mask in entries)
    with pytest.raises(LayoutError, match="^latent_width: 63 is not divisible"):
        rasterize_frame_masks(story, 48, 63, 2)
