"""From a batch of stories to the model's inputs and the loss: latents, captions, dropout, subject inputs.

All randomness of a step (classifier-free-guidance dropout, layout dropout, timesteps, noise, latent sampling) is
drawn here from one CPU ``torch.Generator`` in a fixed order, so a run is reproducible on any device and resumes
exactly from the generator's saved state. Subject inputs are built with the same planner as inference
(:func:`lay2story_core.conditioning.plan_subject_slots` / :func:`~lay2story_core.conditioning.build_subject_inputs`).

Dropout (Lay2Story's recipe plus PixArt's CFG dropout):

- per story, with ``caption_dropout``: unconditional - empty caption, no subject branch (the pipeline's
  unconditional half);
- per frame of the other stories, with ``mask_dropout``: full-frame masks (layout off), and independently with
  ``subject_caption_dropout``: the global caption replaces the subject captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lay2story_core.conditioning import FrameSpec, build_subject_inputs, plan_subject_slots
from lay2story_core.models import SubjectInputs
from lay2story_core.story import rasterize_boxes
from lay2story_core.text import encode_texts

from .dataset import StoryBatch
from .feature_cache import pad_text_embeddings, text_id
from .losses import GaussianDiffusion, HybridLoss
from .modeling import VaeInfo

__all__ = ["CaptionEncoder", "DropoutConfig", "StepInputs", "compute_loss", "outline_loss_weights", "prepare_inputs",
           "subject_loss_weights"]

# an outline weight's relative detail is capped at this many times its box's mean (a lone bright pixel of a pattern
# does not take the whole frame's loss)
OUTLINE_DETAIL_CAP = 4.0


@dataclass(frozen=True)
class DropoutConfig:
    caption: float = 0.1
    mask: float = 0.25
    subject_caption: float = 0.25
    reference: float = 0.0  # per story: train without its references (so inference without one is in-distribution)
    branch_off: float = 0.0  # per story: caption kept, no subject slots (the global branch alone; stage 2)

    @classmethod
    def off(cls) -> DropoutConfig:
        return cls(0.0, 0.0, 0.0, 0.0)


class CaptionEncoder:
    """T5 states of captions: from a live T5 (``tokenizer`` + ``text_encoder``) or from the cached states carried by
    the batch (``empty_states`` = the cached empty caption)."""

    def __init__(self, max_length: int, *, tokenizer=None, text_encoder=None,
                 empty_states: torch.Tensor | None = None) -> None:
        if (text_encoder is None) == (empty_states is None):
            raise ValueError("CaptionEncoder: give either tokenizer + text_encoder or the cached empty_states")
        self.max_length, self.tokenizer, self.text_encoder = max_length, tokenizer, text_encoder
        self.empty = empty_states

    def __call__(self, texts: Sequence[str], batch: StoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_encoder is not None:
            return encode_texts(list(texts), self.tokenizer, self.text_encoder, max_length=self.max_length,
                                dtype=torch.float32)
        cached = {"": self.empty}
        for example in batch.examples:
            cached.update(example.texts or {})
        states = []
        for text in texts:
            state = cached.get("") if text == "" else cached.get(text_id(text))
            if state is None:
                raise KeyError(f"caption not in the feature cache: {text[:80]!r}")
            states.append(state.float())
        return pad_text_embeddings(states, self.max_length)


@dataclass
class StepInputs:
    """One step's model inputs (frames are batch elements) and what the loss needs."""

    x_start: torch.Tensor
    noise: torch.Tensor
    x_t: torch.Tensor
    timesteps: torch.Tensor
    captions: torch.Tensor
    caption_mask: torch.Tensor
    subject: SubjectInputs | None
    added_cond_kwargs: dict | None
    unconditional: list[bool]
    loss_weight: torch.Tensor | None = None  # (F, 1, h, w) per latent pixel (subject / outline weights), None: uniform


@torch.no_grad()
def _vae_moments(vae, pixels: torch.Tensor) -> torch.Tensor:
    dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return torch.cat([dist.mean, dist.logvar], dim=1).float()


def _split(moments: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if moments.shape[-3] != 2 * channels:
        raise ValueError(f"moments: expected {2 * channels} channels (mean, log-variance), got {moments.shape[-3]}")
    mean, logvar = moments.split(channels, dim=-3)
    return mean, logvar.clamp(-30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution


def prepare_inputs(batch: StoryBatch, *, stage: int, captions: CaptionEncoder, vae, vae_info: VaeInfo,
                   diffusion: GaussianDiffusion, generator: torch.Generator, dropout: DropoutConfig,
                   patch_size: int, device: torch.device, use_additional_conditions: bool = False,
                   subject_loss_weight: float = 1.0, timestep_range: tuple[int, int] | None = None,
                   branch_off_timestep_range: tuple[int, int] | None = None,
                   outline_loss_weight: float = 0.0) -> StepInputs:
    """Draw the step's randomness and assemble the model inputs for ``batch`` (see the module docstring).

    ``timestep_range`` ``(lo, hi)``: draw timesteps from ``[lo, hi)`` only (same generator, same order); ``None``:
    the whole schedule. ``dropout.branch_off`` (stage 2): the share of stories trained with the subject branch off
    (caption kept, no slots), their timesteps from ``branch_off_timestep_range`` (default: ``timestep_range``);
    drawn after everything else and only when > 0, so a run without it draws exactly as before.

    ``subject_loss_weight`` (stage 2): the loss weight of the latent pixels inside the boxes a frame's subjects were
    given (1 elsewhere and in frames without boxes); 1 draws nothing and changes nothing. ``outline_loss_weight``
    (stage 2, :func:`outline_loss_weights`): inside those boxes, more weight where the clean latent has detail (the
    character's outline and corners); 0 changes nothing. Both together multiply."""
    channels = vae_info.latent_channels
    stories = [e.story for e in batch.examples]
    num_stories, num_frames = len(stories), batch.num_frames
    # 1. latents: the frames' VAE moments (cached or encoded now) and the references' clean latents
    moments = batch.frames.float() if batch.latent else _vae_moments(vae, batch.frames)
    mean, logvar = _split(moments.cpu(), channels)
    ref_keys = [(s, cid) for s, e in enumerate(batch.examples) for cid in e.references]
    ref_latents: dict = {}
    if ref_keys:
        refs = torch.stack([batch.examples[s].references[cid][0] for s, cid in ref_keys])
        ref_moments = refs.float() if batch.latent else _vae_moments(vae, refs)
        ref_mean = vae_info.normalization.to_model(_split(ref_moments.cpu(), channels)[0])  # the pipeline: the mode
        ref_latents = dict(zip(ref_keys, ref_mean.unbind(0)))
    # 2. randomness, in a fixed order
    uncond = (torch.rand(num_stories, generator=generator) < dropout.caption).tolist()
    keep_box = (torch.rand(num_frames, generator=generator) >= dropout.mask).tolist()
    keep_caption = (torch.rand(num_frames, generator=generator) >= dropout.subject_caption).tolist()
    # stage 2 denoises a story's frames jointly (3D attention), as inference does: one timestep per story; stage 1 has
    # no cross-frame path, so every frame gets its own timestep (more timesteps per batch, lower-variance gradients)
    draws = num_frames if stage == 1 else num_stories
    t_lo, t_hi = timestep_range or (0, diffusion.num_timesteps)
    step_t = torch.randint(t_lo, t_hi, (draws,), generator=generator)
    sample = torch.randn(mean.shape, generator=generator)
    noise = torch.randn(mean.shape, generator=generator)
    drop_ref = ((torch.rand(num_stories, generator=generator) < dropout.reference).tolist() if dropout.reference > 0
                else [False] * num_stories)  # drawn after the above: they do not depend on it
    branch_off = [False] * num_stories
    if stage == 2 and dropout.branch_off > 0:  # drawn last, only when asked for
        branch_off = (torch.rand(num_stories, generator=generator) < dropout.branch_off).tolist()
        off_lo, off_hi = branch_off_timestep_range or (t_lo, t_hi)
        off_t = torch.randint(off_lo, off_hi, (num_stories,), generator=generator)
        step_t = torch.where(torch.tensor(branch_off), off_t, step_t)
    # 3. x_0 ~ q(z | x) scaled, x_t ~ q(x_t | x_0)
    x_start = vae_info.normalization.to_model(mean + torch.exp(0.5 * logvar) * sample)
    timesteps = step_t if stage == 1 else step_t[torch.tensor(batch.frame_story, dtype=torch.long)]
    x_t = diffusion.q_sample(x_start, timesteps, noise)
    # 4. captions and subject slots
    frame_index = [f - batch.frame_story.index(s) for f, s in enumerate(batch.frame_story)]
    global_texts = ["" if uncond[s] else stories[s].global_caption(i)
                    for s, i in zip(batch.frame_story, frame_index)]
    subject, plan, references, loss_weight = None, None, {}, None
    if stage == 2:
        specs = []
        for f, (s, i) in enumerate(zip(batch.frame_story, frame_index)):
            subjects = () if uncond[s] or branch_off[s] else stories[s].resolve_frame(i, boxes=keep_box[f],
                                                                                       captions=keep_caption[f])
            specs.append(FrameSpec(s, tuple(subjects)))
        references = {key: batch.examples[key[0]].references[key[1]][1] for key in ref_keys
                      if not uncond[key[0]] and not drop_ref[key[0]] and not branch_off[key[0]]}
        latent_h, latent_w = mean.shape[-2:]
        if subject_loss_weight != 1.0:
            loss_weight = subject_loss_weights(specs, latent_h, latent_w, subject_loss_weight).to(device)
        if outline_loss_weight != 0.0:
            outline = outline_loss_weights(x_start, specs, outline_loss_weight).to(device)
            loss_weight = outline if loss_weight is None else loss_weight * outline
        plan = plan_subject_slots(specs, latent_h, latent_w, patch_size, references, device=device)
        if plan.slots.num_slots == 0:
            plan = None
    subject_texts = list(plan.captions) if plan is not None else []
    embeds, mask = captions(global_texts + subject_texts, batch)
    if plan is not None:
        used = {k: v for k, v in ref_latents.items() if k in references}
        subject = build_subject_inputs(plan, embeds[num_frames:].to(device), mask[num_frames:].to(device),
                                       {k: v.to(device) for k, v in used.items()}, references)
    added = None
    if use_additional_conditions:
        height, width = (d * vae_info.scale_factor for d in mean.shape[-2:])
        added = {"resolution": torch.tensor([[float(height), float(width)]] * num_frames, device=device),
                 "aspect_ratio": torch.tensor([[height / width]] * num_frames, device=device)}
    return StepInputs(x_start=x_start.to(device), noise=noise.to(device), x_t=x_t.to(device),
                      timesteps=timesteps.to(device), captions=embeds[:num_frames].to(device),
                      caption_mask=mask[:num_frames].to(device), subject=subject, added_cond_kwargs=added,
                      unconditional=uncond, loss_weight=loss_weight)


def subject_loss_weights(frames: Sequence[FrameSpec], latent_height: int, latent_width: int,
                         weight: float) -> torch.Tensor:
    """``(F, 1, h, w)`` loss weights: ``weight`` on the latent pixels inside the boxes each frame's subjects were
    given (``has_box``; a dropped layout's full-frame boxes do not count), 1 elsewhere."""
    out = torch.ones(len(frames), 1, latent_height, latent_width)
    for f, inside in _given_boxes(frames, latent_height, latent_width):
        out[f, 0][inside] = weight
    return out


def _given_boxes(frames: Sequence[FrameSpec], latent_height: int, latent_width: int):
    """``(frame index, (h, w) bool)`` for each frame with boxes its subjects were given (``has_box``; a dropped
    layout's full-frame boxes do not count): the latent pixels inside any of them."""
    for f, frame in enumerate(frames):
        boxes = [s.box for s in frame.subjects if s.has_box]
        if boxes:
            yield f, rasterize_boxes(boxes, latent_height, latent_width).any(0)


def outline_loss_weights(x_start: torch.Tensor, frames: Sequence[FrameSpec], weight: float) -> torch.Tensor:
    """``(F, 1, h, w)`` loss weights that stress what a character's outline is made of: inside the boxes each
    frame's subjects were given (``has_box``), ``1 + weight * d / mean(d)``, where ``d`` is the clean latent's local
    detail (its distance, over channels, from its 3 x 3 neighbourhood's mean: large on edges, largest at corners),
    ``d / mean(d)`` taken over the frame's boxes and capped at :data:`OUTLINE_DETAIL_CAP`; 1 elsewhere and in frames
    without given boxes. ``x_start``: ``(F, C, h, w)`` clean model-space latents."""
    x = x_start.detach().float().cpu()
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    local_mean = torch.nn.functional.avg_pool2d(padded, 3, stride=1)
    detail = (x - local_mean).square().sum(1, keepdim=True).sqrt()  # (F, 1, h, w)
    out = torch.ones_like(detail)
    latent_h, latent_w = detail.shape[-2:]
    for f, inside in _given_boxes(frames, latent_h, latent_w):
        scale = detail[f, 0][inside].mean().clamp_min(1e-6)
        relative = (detail[f, 0] / scale).clamp_max(OUTLINE_DETAIL_CAP)
        out[f, 0][inside] = 1.0 + weight * relative[inside]
    return out


def compute_loss(model, inputs: StepInputs, diffusion: GaussianDiffusion) -> HybridLoss:
    """Run the model on ``inputs`` and return the per-frame hybrid loss (mean it for the step's loss)."""
    output = model(inputs.x_t, inputs.captions, inputs.timesteps, inputs.added_cond_kwargs, inputs.caption_mask,
                   subject=inputs.subject).sample
    return diffusion.training_losses(output, inputs.x_start, inputs.x_t, inputs.timesteps, inputs.noise,
                                     weight=inputs.loss_weight)
