"""Redo a panel, keep the story: sample chosen frames of a finished story again (a new seed, prompt, subject caption
or box), or insert / append frames, while every other frame stays exactly as it is and the new frames stay
consistent with it.

The kept frames act as the identity frames of StoryDiffusion's write/read scheme: their per-step keys/values go into
the identity banks first (:mod:`.redo_identity`: re-derived from their final latents by default, or from a cache
recorded at generation time), then the frames to sample are denoised in read mode against them. Kept frames are
never sampled or decoded again: their images (and, through the CLI, their PNG files) are returned unchanged.

    record = FinishedStory.from_output(pipe(story, seed=0, **kw), story, seed=0)   # or FinishedStory.load(folder)
    result = redo_story(pipe, record, frames=[2, 5], seed=7, **kw)                  # kw: the same call settings
    result.images, result.record                                                    # all frames; chain redos
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..fileio import write_bytes_atomic
from ..story import Story, load_story, parse_story
from .images import to_pil, to_tensor_image
from .redo_identity import KV_SOURCES, IdentityCache, rederive_identity
from .story_pipeline import DEFAULT_IDENTITY_FRAMES, StoryPipelineOutput

logger = logging.getLogger(__name__)

__all__ = ["FinishedStory", "RedoOutput", "RedoPlan", "RedoRequest", "initial_noise", "parse_frame_list",
           "prepare_redo", "redo_story"]

TENSORS_FILE = "latents.safetensors"


def initial_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """The unscaled initial noise ``StoryPipeline`` draws for a story of ``shape`` ``(F, C, h, w)`` with ``seed``
    (its ``prepare_latents``: one CPU draw for every frame; frame ``f``'s noise is row ``f``)."""
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


def parse_frame_list(text: str | Sequence[int], field: str = "frames") -> tuple[int, ...]:
    """``"2,5"`` / ``"2-4, 7"`` / ``[2, 5]`` -> sorted distinct frame indices (0-based); ``ValueError`` naming
    ``field`` for anything else."""
    if not isinstance(text, str):
        values = list(text)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError(f"{field}: expected frame indices >= 0, got {text!r}")
        return tuple(sorted(set(values)))
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, sep, high = part.partition("-")
        if not low.strip().isdigit() or (sep and not high.strip().isdigit()):
            raise ValueError(f"{field}: expected frame indices like '2,5' or '2-4', got {text!r}")
        low_i, high_i = int(low), int(high) if sep else int(low)
        if high_i < low_i:
            raise ValueError(f"{field}: range {part!r} runs backwards")
        out.update(range(low_i, high_i + 1))
    return tuple(sorted(out))


@dataclass
class FinishedStory:
    """A finished story as a redo needs it.

    Attributes:
        story: the story its frames show.
        latents: ``(F, C, h, w)`` every frame's final latents (``StoryPipelineOutput.latents``).
        noise: ``(F, C, h, w)`` every frame's unscaled initial noise (:func:`initial_noise` of its seed).
        settings: how it was sampled, as ``generate`` writes ``settings.json`` (mode, steps, cfg, seed, ...; read by
            :meth:`call_kwargs`); ``frame_seeds`` holds each frame's seed once a frame was redone.
        images: the frames (PIL images, or ``(F, 3, H, W)`` in [0, 1]); kept frames are returned as they are.
        files: a loaded folder's frame PNGs (the CLI copies kept ones byte for byte).
        identity_cache: keys/values recorded while it was sampled (the ``"cached"`` redo), or ``None``.
    """

    story: Story
    latents: torch.Tensor
    noise: torch.Tensor
    settings: dict = field(default_factory=dict)
    images: list | torch.Tensor | None = None
    files: tuple[Path, ...] | None = None
    identity_cache: IdentityCache | None = None

    def __post_init__(self) -> None:
        if self.latents.ndim != 4 or self.latents.shape[0] != self.story.num_frames:
            raise ValueError(f"latents: expected ({self.story.num_frames}, C, h, w) for a story of "
                             f"{self.story.num_frames} frames, got {tuple(self.latents.shape)}")
        if tuple(self.noise.shape) != tuple(self.latents.shape):
            raise ValueError(f"noise: expected shape {tuple(self.latents.shape)}, got {tuple(self.noise.shape)}")

    @classmethod
    def from_output(cls, output: StoryPipelineOutput, story: Story | dict | str, seed: int,
                    settings: dict | None = None, identity_cache: IdentityCache | None = None) -> FinishedStory:
        """The result of ``pipe(story, seed=seed, ...)`` (its own ``latents``; ``images`` when PIL or ``"pt"``)."""
        story = parse_story(story)
        latents = output.latents.detach().float().cpu()
        images = output.images if not isinstance(output.images, torch.Tensor) or output.images.shape[1] == 3 else None
        return cls(story, latents, initial_noise(latents.shape, seed), {**(settings or {}), "seed": int(seed)},
                   images, identity_cache=identity_cache)

    @property
    def frame_seeds(self) -> list[int]:
        seeds = self.settings.get("frame_seeds")
        return list(seeds) if seeds else [int(self.settings.get("seed", 0))] * self.story.num_frames

    # -- the folder ``generate`` writes -------------------------------------------------------------------------
    def tensor_bytes(self) -> bytes:
        """``latents`` and ``noise`` as the bytes of one safetensors file (``latents.safetensors``)."""
        from safetensors.torch import save

        return save({"latents": self.latents.float().contiguous(), "noise": self.noise.float().contiguous()})

    def save_tensors(self, path: str | os.PathLike) -> None:
        """:meth:`tensor_bytes` written atomically to ``path``."""
        write_bytes_atomic(path, self.tensor_bytes())

    @classmethod
    def load(cls, folder: str | os.PathLike, field: str = "previous") -> FinishedStory:
        """A folder ``generate`` wrote: ``story.json``, ``settings.json``, ``latents.safetensors`` and the frames."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(os.fspath(folder))
        if not folder.is_dir():
            raise ValueError(f"{field}: {os.fspath(folder)!r} is not a folder")
        for name in ("story.json", "settings.json", TENSORS_FILE):
            if not (folder / name).is_file():
                why = " (stories generated before redo existed have none: generate it again)" if name == \
                    TENSORS_FILE else ""
                raise ValueError(f"{field}: {os.fspath(folder)!r} has no {name}{why}")
        story = load_story(folder / "story.json")
        try:
            settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
            tensors = load_file(folder / TENSORS_FILE)
        except (ValueError, OSError, SafetensorError) as err:
            raise ValueError(f"{field}: cannot read {os.fspath(folder)!r}: {err}") from err
        if not isinstance(settings, dict) or set(tensors) != {"latents", "noise"}:
            raise ValueError(f"{field}: {os.fspath(folder)!r}: settings.json or {TENSORS_FILE} is not generate's")
        files = tuple(folder / f"frame_{i:03d}.png" for i in range(story.num_frames))
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{field}: {os.fspath(folder)!r} lacks {', '.join(missing)}")
        images = []
        for path in files:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        try:
            return cls(story, tensors["latents"], tensors["noise"], settings, images, files)
        except ValueError as err:
            raise ValueError(f"{field}: {os.fspath(folder)!r}: {err}") from None

    def call_kwargs(self) -> dict:
        """The ``StoryPipeline.__call__`` settings of ``settings`` (what ``generate`` records)."""
        from ..consistency import ConsistencyConfig

        s = self.settings
        kwargs = {"mode": s.get("mode"), "num_inference_steps": s.get("steps"), "guidance_scale": s.get("cfg"),
                  "layout": s.get("layout", True), "subject_captions": s.get("subject_captions", True),
                  "subject_scale": s.get("subject_scale", 1.0), "max_sequence_length": s.get("max_sequence_length"),
                  "negative_prompt": s.get("negative_prompt")}
        if s.get("consistency"):
            # a story written before box control had none: strength 0 samples its frames again as they were
            kwargs["consistency"] = ConsistencyConfig.from_user(s["consistency"]["rate"], s["consistency"]["blocks"],
                                                                s["consistency"].get("box_strength", 0.0))
        if s.get("references"):
            from .story_pipeline import ReferenceImage

            kwargs["references"] = {c: ReferenceImage(p) for c, p in s["references"].items()}
        return {k: v for k, v in kwargs.items() if v is not None}


@dataclass
class RedoOutput(StoryPipelineOutput):
    """Every frame (kept ones unchanged), which frames were sampled, where each kept frame was in the finished story
    (``sources[j]``: its frame number there, ``None`` for a sampled frame) and the new :class:`FinishedStory`
    (chain it into the next redo)."""

    sampled: tuple[int, ...] = ()
    sources: tuple[int | None, ...] = ()
    record: FinishedStory | None = None


@dataclass(frozen=True)
class RedoPlan:
    """What one redo call samples and against what (built by :func:`redo_story`, run by ``StoryPipeline``).

    ``kept``: frames of the new story kept as they are, with their final latents; ``sample``: frames to sample;
    ``identity``: the kept frames whose keys/values the sampled ones read, with their final latents and initial
    noise (``"rederive"``) or, for ``"cached"``, their frame numbers in the cache's story (``cache_frames``)."""

    kept: tuple[int, ...]
    kept_latents: torch.Tensor
    sample: tuple[int, ...]
    identity: tuple[int, ...]
    identity_latents: torch.Tensor
    identity_noise: torch.Tensor
    kv: str = "rederive"
    cache: IdentityCache | None = None
    cache_frames: tuple[int, ...] = ()

    def passes(self, chunk_size: int | None) -> list[tuple[list[int], str]]:
        """The sampled frames in read passes of ``chunk_size`` (all at once: ``None``); with no kept identity
        frames, the scheme of a fresh story (the first chunk writes, the rest read)."""
        frames = list(self.sample)
        size = min(chunk_size or len(frames), len(frames))
        chunks = [frames[i:i + size] for i in range(0, len(frames), size)]
        if self.identity:
            return [(chunk, "read") for chunk in chunks]
        return [(chunks[0], "joint" if len(chunks) == 1 else "write")] + [(c, "read") for c in chunks[1:]]

    def write_identity(self, job, model) -> None:
        """Fill ``job``'s identity banks with the kept identity frames' per-step keys/values."""
        if self.kv == "cached":
            self.cache.fill(job, self.cache_frames)
        else:
            rederive_identity(job, model, list(self.identity), self.identity_latents, self.identity_noise)


def _story_frames_equal(new: Story, j: int, old: Story, i: int) -> bool:
    """Frame ``j`` of ``new`` shows what frame ``i`` of ``old`` shows (same global caption and subjects)."""
    return new.global_caption(j) == old.global_caption(i) and new.resolve_frame(j) == old.resolve_frame(i)


def _new_frame_map(old_frames: int, insert: Sequence[int], append: int) -> list[int | None]:
    """For each frame of the new story, the previous frame it keeps the place of, or ``None`` for a new one;
    ``insert`` holds previous frame numbers a new frame goes before (``old_frames``: at the end)."""
    before = [0] * (old_frames + 1)
    for position in insert:
        before[position] += 1
    before[old_frames] += append
    out: list[int | None] = []
    for i in range(old_frames + 1):
        out += [None] * before[i]
        if i < old_frames:
            out.append(i)
    return out


@dataclass(frozen=True)
class RedoRequest:
    """A checked redo (:func:`prepare_redo`): the new story, where each of its frames comes from (``sources[j]``:
    the finished story's frame kept there, ``None``: sampled), the finished frames sampled again (``redone``), the
    sampled frames' ``seed`` and the :class:`RedoPlan` the pipeline runs."""

    previous: FinishedStory
    story: Story
    sources: tuple[int | None, ...]
    redone: tuple[int, ...]
    seed: int
    plan: RedoPlan


def prepare_redo(previous: FinishedStory, frames: str | Sequence[int] = (), *, story: Story | dict | str | None = None,
                 seed: int | None = None, insert: Sequence[int] = (), append: int = 0, kv: str = "rederive",
                 identity_frames: int | None = None, fields: Mapping[str, str] | None = None) -> RedoRequest:
    """Check a redo without a model (arguments as :func:`redo_story`): every mistake raises ``ValueError`` naming
    the argument (or its name in ``fields``) and the value."""
    name = {k: k for k in ("previous", "frames", "story", "seed", "insert", "append", "kv", "identity_frames")}
    name |= dict(fields or {})
    # 1. The edits: frames to sample again, new frames, the edited story
    if kv not in KV_SOURCES:
        raise ValueError(f"{name['kv']}: expected one of {KV_SOURCES}, got {kv!r}")
    if kv == "cached" and previous.identity_cache is None:
        raise ValueError(f"{name['kv']}: 'cached' needs the identity cache recorded when the story was sampled")
    old = previous.story
    redo = parse_frame_list(frames, name["frames"])
    bad = [f for f in redo if f >= old.num_frames]
    if bad:
        raise ValueError(f"{name['frames']}: frame {bad[0]} is out of range for a story of {old.num_frames} frames "
                         f"(0..{old.num_frames - 1})")
    if isinstance(append, bool) or not isinstance(append, int) or append < 0:
        raise ValueError(f"{name['append']}: expected a number of frames >= 0, got {append!r}")
    insert = list(insert)
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= old.num_frames for p in insert):
        raise ValueError(f"{name['insert']}: expected frame numbers in 0..{old.num_frames} (a new frame goes before "
                         f"it), got {insert!r}")
    mapping = _new_frame_map(old.num_frames, insert, append)
    new = parse_story(story) if story is not None else old
    if new.num_frames != len(mapping):
        raise ValueError(f"{name['story']}: has {new.num_frames} frames, expected {len(mapping)} (the "
                         f"{old.num_frames} of the finished story + {len(mapping) - old.num_frames} new)")
    if new.character_ids != old.character_ids or (new.width, new.height) != (old.width, old.height):
        raise ValueError(f"{name['story']}: the characters and frame size must stay those of the finished story "
                         f"({', '.join(old.character_ids)}; {old.width}x{old.height})")
    sample = tuple(j for j, i in enumerate(mapping) if i is None or i in redo)
    if not sample:
        raise ValueError(f"{name['frames']}: nothing to sample: name frames to redo or add frames")
    kept = tuple(j for j in range(len(mapping)) if j not in sample)
    for j in kept:
        if not _story_frames_equal(new, j, old, mapping[j]):
            raise ValueError(f"{name['story']}: frame {j} differs from frame {mapping[j]} of the finished story but "
                             f"is not sampled again; add it to {name['frames']} or leave it unchanged")
    seed = max(previous.frame_seeds) + 1 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{name['seed']}: expected an integer >= 0, got {seed!r}")
    if identity_frames is not None and (isinstance(identity_frames, bool) or not isinstance(identity_frames, int)
                                        or identity_frames < 0):
        raise ValueError(f"{name['identity_frames']}: expected an integer >= 0, got {identity_frames!r}")

    # 2. The identity frames: the first kept ones, as many as the finished story had (the pipeline's rule); with
    #    kv="cached" every kept frame whose keys/values were recorded
    count = identity_frames
    if count is None and kv == "rederive":
        chunk = previous.settings.get("chunk_size") or DEFAULT_IDENTITY_FRAMES
        count = previous.settings.get("identity_frames") or min(chunk, DEFAULT_IDENTITY_FRAMES)
    cache_frames = ()
    if kv == "cached":
        cached = previous.identity_cache.frames
        kept_cached = tuple(j for j in kept if mapping[j] in cached)
        identity = kept_cached[:count] if count is not None else kept_cached
        cache_frames = tuple(mapping[j] for j in identity)
    else:
        identity = kept[:count]
    old_rows = [mapping[j] for j in identity]
    plan = RedoPlan(kept=kept, kept_latents=previous.latents[[mapping[j] for j in kept]], sample=sample,
                    identity=identity, identity_latents=previous.latents[old_rows],
                    identity_noise=previous.noise[old_rows], kv=kv, cache=previous.identity_cache,
                    cache_frames=cache_frames)
    sources = tuple(None if j in sample else i for j, i in enumerate(mapping))
    return RedoRequest(previous, new, sources, redo, seed, plan)


def redo_story(pipe, previous: FinishedStory | str | os.PathLike, frames: str | Sequence[int] = (), *,
               story: Story | dict | str | None = None, seed: int | None = None, insert: Sequence[int] = (),
               append: int = 0, kv: str = "rederive", identity_frames: int | None = None,
               chunk_size: int | None = None, output_type: str = "pil", fields: Mapping[str, str] | None = None,
               **call_kwargs) -> RedoOutput:
    """Sample ``frames`` of ``previous`` again (and new ``insert``/``append`` frames), keeping every other frame.

    Args:
        pipe: the :class:`StoryPipeline` (the one that sampled ``previous``, with the same scheduler).
        previous: a :class:`FinishedStory`, or the folder ``generate`` wrote.
        frames: previous frame numbers to sample again (``"2,5"``, ``[2, 5]``).
        story: the edited story (new prompts, subject captions, boxes; one more frame per insert/append); frames
            not sampled must show what they showed. Default: ``previous.story``.
        seed: the sampled frames' seed (frame ``f`` gets row ``f`` of :func:`initial_noise`, as in a fresh story
            of that seed); default: one more than the largest seed the story used.
        insert: for each new frame, the previous frame number it goes before (the frame count: at the end);
            ``append``: new frames at the end.
        kv: ``"rederive"`` or ``"cached"`` (needs ``previous.identity_cache``), see :mod:`.redo_identity`.
        identity_frames: how many kept frames (the first ones) the sampled frames read (0: none, they see only
            each other); default: as many as ``previous`` had (its ``identity_frames``, else ``min(chunk_size, 4)``,
            4 for a jointly sampled story: the pipeline's rule); with ``kv="cached"``, every kept frame recorded.
        chunk_size: sampled frames per read pass (``None``: all at once).
        fields: names for errors (e.g. ``{"frames": "--redo"}``), keys ``previous``, ``frames``, ``story``,
            ``seed``, ``insert``, ``append``, ``kv``, ``identity_frames``.
        call_kwargs: ``StoryPipeline.__call__`` settings (mode, steps, references, ...); for a folder the ones
            recorded in its ``settings.json`` are the defaults.
    """
    # 0. Inputs: the finished story and the checked edits
    if output_type not in ("pil", "pt", "latent"):
        raise ValueError(f"output_type: expected 'pil', 'pt' or 'latent', got {output_type!r}")
    if not isinstance(previous, FinishedStory):
        previous = FinishedStory.load(previous, field=dict(fields or {}).get("previous", "previous"))
        call_kwargs = {**previous.call_kwargs(), **call_kwargs}
    request = prepare_redo(previous, frames, story=story, seed=seed, insert=insert, append=append, kv=kv,
                           identity_frames=identity_frames, fields=fields)
    plan, seed, sample = request.plan, request.seed, request.plan.sample
    logger.info("redo: sampling frames %s against %d kept identity frames (%s)", list(sample), len(plan.identity),
                kv)

    # 1. Sample (the pipeline draws the new story's noise for ``seed`` and samples only ``plan.sample``)
    scale = pipe.vae_scale_factor
    height, width = previous.latents.shape[-2] * scale, previous.latents.shape[-1] * scale
    result = pipe(request.story, seed=seed, redo=plan, chunk_size=chunk_size, height=height, width=width,
                  output_type="latent", **call_kwargs)
    latents = result.latents.detach().float().cpu()

    # 2. Images: the kept frames' own, the sampled ones decoded; the new finished story
    decoded = pipe.decode_latents(result.latents[list(sample)]).cpu()
    images = _assemble_images(previous, request.sources, sample, decoded, output_type)
    noise = initial_noise(latents.shape, seed)
    seeds = [previous.frame_seeds[i] if i is not None else seed for i in request.sources]
    noise_rows = [previous.noise[i] if i is not None else noise[j] for j, i in enumerate(request.sources)]
    settings = {**previous.settings, "frame_seeds": seeds}
    record = FinishedStory(request.story, latents, torch.stack(noise_rows), settings,
                           images if output_type != "latent" else None)
    return RedoOutput(images=images if output_type != "latent" else latents, latents=latents, sampled=sample,
                      sources=request.sources, record=record)


def _assemble_images(previous: FinishedStory, mapping: list[int | None], sample: tuple[int, ...],
                     decoded: torch.Tensor, output_type: str) -> list | torch.Tensor | None:
    if output_type == "latent":
        return None
    old = previous.images
    if old is None:
        raise ValueError("previous: has no images to keep (give FinishedStory.images, or load the folder)")
    height, width = decoded.shape[-2:]
    frames = []
    for j, i in enumerate(mapping):
        if j in sample:
            image = decoded[sample.index(j)]
            frames.append(to_pil(image[None])[0] if output_type == "pil" else image)
        elif output_type == "pil":
            frames.append(old[i] if not isinstance(old, torch.Tensor) else to_pil(old[i][None])[0])
        else:
            frames.append(old[i] if isinstance(old, torch.Tensor) else to_tensor_image(old[i], height, width))
    return frames if output_type == "pil" else torch.stack([f.float().cpu() for f in frames])

