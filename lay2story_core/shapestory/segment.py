"""Finding ShapeStory characters in an image by colour, with no learned model.

Two segmentations, both nearest-colour classification in RGB:

- :func:`character_mask` (for box hit): the requested character's two colours against the prompt's background
  colours and the other characters in the frame ("is this pixel nearer the character than the background?"). A
  faint character still counts as long as it is nearer its own colour than the background.
- :func:`label_palette` (for identity and scene): every pixel against *all* background colours and *all* character
  colours, so a character drawn in the wrong colour, or on the wrong background, is seen as such.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from ..story import LayoutError, Story
from .generator import character_look, frame_scene
from .vocab import COLOURS, RGB, CharacterSpec, ColourSpec, all_scene_specs

__all__ = [
    "BACKGROUND",
    "PaletteLabels",
    "as_rgb_array",
    "box_pixels",
    "character_mask",
    "components",
    "frame_characters",
    "label_palette",
    "pattern_colour_pixels",
]

BACKGROUND = -1


def as_rgb_array(image: Image.Image | np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W, 3) float32 in 0..255 from a PIL image, a uint8 array, or a float array in 0..1."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise LayoutError(name, f"expected an (H, W, 3) array, got shape {image.shape}", image.shape)
        if image.dtype == np.uint8:
            return image.astype(np.float32)
        if np.issubdtype(image.dtype, np.floating):
            return np.clip(image, 0.0, 1.0).astype(np.float32) * 255.0
        raise LayoutError(name, f"expected uint8 or float pixels, got dtype {image.dtype}", image.dtype)
    raise LayoutError(name, f"expected a PIL image or a numpy array, got {type(image).__name__}", type(image))


def _nearest_mixture(pixels: np.ndarray, colours: np.ndarray, pairs: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Per pixel, the colour that dominates its best explanation as a blend of two known colours.

    Anti-aliased edges are blends (a character's edge over the background); a plain nearest-colour rule can give
    such a blend to an unrelated third colour. Here each pixel is projected onto every segment ``colours[i] ->
    colours[j]`` in ``pairs`` (``i == j``: the colour itself), the nearest segment wins, and the pixel goes to the end
    it is nearer (``i`` below the midpoint, else ``j``). (H, W, 3) -> (H, W) indices into ``colours``.
    """
    flat = pixels.reshape(-1, 3).astype(np.float32)
    a = colours[pairs[:, 0]].astype(np.float32)  # (P, 3)
    d = colours[pairs[:, 1]].astype(np.float32) - a
    dd = np.maximum((d**2).sum(-1), 1e-6)
    ad, aa = (a * d).sum(-1), (a**2).sum(-1)
    out = np.empty(flat.shape[0], dtype=np.int64)
    for start in range(0, flat.shape[0], chunk):
        p = flat[start:start + chunk]
        pd = p @ d.T - ad  # (p - a) . d, (N, P)
        pa = (p**2).sum(-1, keepdims=True) - 2.0 * (p @ a.T) + aa  # |p - a|^2
        t = np.clip(pd / dd, 0.0, 1.0)
        err = pa - 2.0 * t * pd + t * t * dd  # |p - a - t d|^2
        best = err.argmin(1)
        t_best = np.take_along_axis(t, best[:, None], 1)[:, 0]
        out[start:start + chunk] = np.where(t_best < 0.5, pairs[best, 0], pairs[best, 1])
    return out.reshape(pixels.shape[:2])


def _all_pairs(n: int) -> np.ndarray:
    i, j = np.triu_indices(n)
    return np.stack([i, j], 1)


def frame_characters(story: Story, frame_index: int) -> dict[str, CharacterSpec]:
    """The characters a frame shows (its subjects, or all characters for a frame without subjects), parsed."""
    return {c.id: character_look(story, c.id) for c in story.present_characters(frame_index)}


def character_mask(image: Image.Image | np.ndarray, story: Story, frame_index: int, character_id: str) -> np.ndarray:
    """(H, W) bool: pixels nearer the character's colours (or blends of them) than the frame's background, any other
    ShapeStory background, or the other characters in the frame."""
    pixels = as_rgb_array(image)
    scene = frame_scene(story, frame_index)
    present = frame_characters(story, frame_index)
    if character_id not in present:
        raise LayoutError("character_id", f"{character_id!r} is not in frame {frame_index} "
                          f"(present: {', '.join(map(repr, present))})", character_id)
    target = present[character_id].colours
    others = [c for key, spec in present.items() if key != character_id
              for c in (spec.colours.primary, spec.colours.secondary)]
    # The prompt's background first, then every other ShapeStory background: a frame drawn on the wrong scene must
    # not turn into "character" just because its colour is nearer the character than the requested background.
    own = (scene.upper, scene.lower)
    backgrounds = [*own, *(c for c in _background_colours() if c not in own)]
    colours = np.asarray([target.primary, target.secondary, *backgrounds, *others], dtype=np.float32)
    return _nearest_mixture(pixels, colours, _all_pairs(len(colours))) < 2


def _background_colours() -> list[RGB]:
    return sorted({c for s in all_scene_specs() for c in (s.upper, s.lower)})


def pattern_colour_pixels(image: Image.Image | np.ndarray, colours: ColourSpec, background: RGB) -> np.ndarray:
    """(H, W) bool: pixels of a known character's pattern colour on a known flat background (for exemplars)."""
    table = np.asarray([colours.primary, colours.secondary, background], dtype=np.float32)
    return _nearest_mixture(as_rgb_array(image), table, _all_pairs(3)) == 1


@lru_cache(maxsize=1)
def _palette() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Colours of every class for :func:`label_palette`, what each is (character colour index or BACKGROUND; pattern
    colour or not) and the blends considered (each colour alone, character colour over any background, a character's
    two colours, two backgrounds). Read-only arrays."""
    backgrounds = _background_colours()
    colours = [*backgrounds]
    owner = [BACKGROUND] * len(backgrounds)
    secondary = [False] * len(backgrounds)
    for k, spec in enumerate(COLOURS):
        colours += [spec.primary, spec.secondary]
        owner += [k, k]
        secondary += [False, True]
    nb = len(backgrounds)
    pairs = [(i, i) for i in range(len(colours))]
    pairs += [(i, j) for i in range(nb) for j in range(i + 1, nb)]
    pairs += [(c, b) for c in range(nb, len(colours)) for b in range(nb)]
    pairs += [(c, c + 1) for c in range(nb, len(colours), 2)]
    arrays = (np.asarray(colours, dtype=np.float32), np.asarray(owner), np.asarray(secondary), np.asarray(pairs))
    for a in arrays:
        a.setflags(write=False)
    return arrays


class PaletteLabels:
    """Per-pixel labels from :func:`label_palette`: ``colour`` (H, W) index into ``vocab.COLOURS`` or
    ``BACKGROUND``; ``secondary`` (H, W) bool, True where the pixel is a pattern colour."""

    def __init__(self, colour: np.ndarray, secondary: np.ndarray) -> None:
        self.colour = colour
        self.secondary = secondary

    @property
    def foreground(self) -> np.ndarray:
        return self.colour != BACKGROUND


def label_palette(image: Image.Image | np.ndarray) -> PaletteLabels:
    """Label each pixel with its nearest colour among all backgrounds and all character colours."""
    colours, owner, secondary, pairs = _palette()
    index = _nearest_mixture(as_rgb_array(image), colours, pairs)
    return PaletteLabels(owner[index], secondary[index])


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a bool mask: (labels with 0 = none, count)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, int(count)


def box_pixels(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """(H, W) bool: the pixels a normalised xyxy box overlaps (any part of the pixel square)."""
    x0, y0, x1, y1 = box
    c0, c1 = int(np.floor(x0 * width + 1e-6)), int(np.ceil(x1 * width - 1e-6))
    r0, r1 = int(np.floor(y0 * height + 1e-6)), int(np.ceil(y1 * height - 1e-6))
    out = np.zeros((height, width), dtype=bool)
    out[max(r0, 0):max(r1, r0 + 1), max(c0, 0):max(c1, c0 + 1)] = True
    return out

