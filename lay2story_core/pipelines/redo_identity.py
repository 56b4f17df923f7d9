"""The kept frames of a redo as identity frames of StoryDiffusion's write/read scheme: how their per-step keys/values
get into the pass's banks before the redone frames are sampled in read mode (:mod:`.redo`).

Two sources, measured against each other by ``bench/redo.py`` (agreement on ShapeStory's consistency protocol, time,
bytes):

* ``"rederive"`` (the default): each step's keys/values are computed again from the kept frames' final latents,
  re-noised to that step's timestep with each frame's own initial noise (:func:`noisy_model_input`), by a write
  pass that runs only what writes: the subject branch alone in ``lay2story`` mode (the global blocks never run),
  the global branch's conditional half in ``training_free`` mode. Nothing is stored beyond the final latents.
* ``"cached"``: every frame's keys/values recorded while the story was sampled (:class:`IdentityCache`, given to
  ``StoryPipeline.__call__(identity_cache=...)``), copied into the banks. With the original seed and a deterministic
  sampler a redone frame then equals the jointly sampled original (up to float rounding), at the price of the
  whole cache (steps x layers x every frame's subject tokens) in memory or on disk.

Reference images' rows are left out of the subject bank either way: the read pass's own reference slot already
brings them, once, as in a joint pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

__all__ = ["KV_SOURCES", "IdentityCache", "noisy_model_input", "rederive_identity"]

KV_SOURCES = ("rederive", "cached")
REFERENCE_ROW = -1  # the frame id of a reference image's token in the subject bank


def noisy_model_input(scheduler, x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """``x0`` re-noised to ``timestep`` as the model sees it there: ``sqrt(a) x0 + sqrt(1 - a) noise`` with ``a`` the
    training schedule's cumulative alpha, interpolated in sigma for fractional timesteps as Euler's samplers do (for
    them this is ``scale_model_input(x0 + sigma noise)``; for DDIM/DPM-Solver/DDPM the noisy sample itself)."""
    cumprod = scheduler.alphas_cumprod.to(torch.float64).cpu()
    sigmas = ((1 - cumprod) / cumprod).sqrt()
    t = float(timestep)
    low = min(int(t), sigmas.shape[0] - 1)
    high = min(low + 1, sigmas.shape[0] - 1)
    sigma = (1 - (t - low)) * sigmas[low] + (t - low) * sigmas[high]
    alpha = 1.0 / (1.0 + sigma**2)
    return float(alpha.sqrt()) * x0.float() + float((1 - alpha).sqrt()) * noise.float()


def subject_row_frames(job, frames: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per 3D group id, the story frame of each row that a write pass of ``frames`` stores in the subject bank
    (:data:`REFERENCE_ROW` for a reference image's token): the bank keeps a group's rows in the pass's packing
    order, so the same packing, built again, names them."""
    state = job.prepare_pass(list(frames), "write")
    packing = state.subject.packing
    segments = packing.group_segments
    images = segments.pad(packing.token_image[:, None])[..., 0]
    out = {}
    for i, group in enumerate(segments.segment_ids.tolist()):
        rows = images[i] if segments.valid is None else images[i][segments.valid[i]]
        out[group] = torch.tensor([frames[r] if r < len(frames) else REFERENCE_ROW for r in rows.tolist()])
    return out


def _keep_subject_rows(bank, row_frames: dict[int, torch.Tensor], keep: Iterable[int]) -> None:
    """Leave only rows of the frames ``keep`` in the subject bank (no reference rows)."""
    keep = torch.tensor(sorted(set(keep)), dtype=torch.long)
    for (step, layer, group), keys, values in bank.entries():
        rows = torch.isin(row_frames[group], keep).to(keys.device)
        bank.put(step, layer, group, keys[rows], values[rows])


@dataclass
class IdentityCache:
    """Every frame's identity keys/values per denoising step, recorded while a story is sampled
    (``StoryPipeline.__call__(identity_cache=IdentityCache())``): the ``"cached"`` source of a redo's kept frames.

    Attributes:
        subject: ``(step, layer, group) -> (keys (E, H, D), values, frames (E,))``: the subject branch's masked 3D
            attention (``lay2story`` mode); ``frames`` names each row's story frame (-1: a reference image).
        consistency: ``(step, block) -> (keys (E, H, D), values, groups (E,), frames (E,))``: the shared tokens of
            training-free consistent self-attention (group 0: the conditional half, 1: the unconditional one).
        num_steps: the denoising steps of the recorded call (a redo must sample with as many).
    """

    subject: dict = field(default_factory=dict)
    consistency: dict = field(default_factory=dict)
    num_steps: int | None = None

    @property
    def frames(self) -> set[int]:
        """The story frames whose keys/values are recorded."""
        found = set()
        for *_, frames in list(self.subject.values()) + list(self.consistency.values()):
            found.update(int(f) for f in frames.unique().tolist() if f >= 0)
        return found

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in (*self.subject.values(), *self.consistency.values())
                   for t in entry)

    def capture(self, job, frames: Sequence[int]) -> None:
        """Record what the write pass of story frames ``frames`` left in ``job``'s banks (called by the pipeline)."""
        self.num_steps = job.num_steps
        if len(job.bank):
            row_frames = subject_row_frames(job, frames)
            for (step, layer, group), keys, values in job.bank.entries():
                self.subject[(step, layer, group)] = (keys, values, row_frames[group])
        n = len(frames)
        story_frame = torch.tensor(list(frames))
        for key, (keys, values, groups, owners) in job.training_free_bank.items():
            self.consistency[key] = (keys, values, groups.cpu(), story_frame[owners.cpu() % n])

    def fill(self, job, keep: Iterable[int]) -> None:
        """Put the recorded rows of frames ``keep`` (story frames of the recorded call) into ``job``'s banks."""
        if job.num_steps != self.num_steps:
            raise ValueError(f"identity_cache: recorded for {self.num_steps} steps, the redo samples "
                             f"{job.num_steps}; use kv='rederive'")
        keep = torch.tensor(sorted(set(keep)), dtype=torch.long)
        for (step, layer, group), (keys, values, frames) in self.subject.items() if job.attention_3d else ():
            rows = torch.isin(frames, keep).to(keys.device)
            job.bank.put(step, layer, group, keys[rows], values[rows])
        for key, (keys, values, groups, frames) in self.consistency.items():
            rows = torch.isin(frames, keep)
            job.training_free_bank[key] = (keys[rows.to(keys.device)], values[rows.to(keys.device)], groups[rows],
                                           frames[rows])


@torch.no_grad()
def rederive_identity(job, model, frames: Sequence[int], latents: torch.Tensor, noise: torch.Tensor) -> None:
    """Write the keys/values of story frames ``frames`` (final latents ``latents``, initial noise ``noise``, both
    ``(K, C, h, w)``) for every step of ``job``'s schedule into its banks, as a write pass of those frames would:
    each step sees the frames re-noised to its timestep. Only what writes runs: the subject branch in
    ``lay2story`` mode, the global branch's conditional half in ``training_free`` mode (the unconditional half of
    the redone frames then attends to itself alone); ``none`` has nothing to write."""
    mode = job.mode
    if not (mode.subject_branch and job.attention_3d or mode.consistency) or not frames:
        return  # (without 3D attention no subject token is shared across frames)
    # 1. the conditional half of a write pass of the kept frames, prepared once
    writer = dataclasses.replace(job, do_cfg=False)
    state = writer.prepare_pass(list(frames), "write")
    scheduler = job.pipe.prepared_scheduler(job.num_steps, job.device)
    x0, noise = latents.to(job.device), noise.to(job.device)
    kwargs = None if state.consistency is None else {"story_consistency": state.consistency}
    # 2. every step: the frames at that step's noise level, through what writes
    for i, t in enumerate(scheduler.timesteps):
        if mode.consistency and i < job.consistency.start_step:  # plain attention there: nothing is read
            continue
        x = noisy_model_input(scheduler, x0, noise, t).to(job.dtype)
        timestep = t.expand(state.batch).to(job.device)
        job.bank.step = i
        if mode.subject_branch:
            model.run_subject_branch(x, timestep, state.subject, state.added)
        else:
            state.consistency.step = i
            model(x, state.cond, timestep, state.added, state.cond_mask, cross_attention_kwargs=kwargs)
    # 3. the references' rows go: the read pass's own reference slot brings them
    if len(job.bank):
        _keep_subject_rows(job.bank, subject_row_frames(writer, frames), frames)
