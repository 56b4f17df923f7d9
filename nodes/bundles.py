"""The values that travel on the pack's model sockets: ``L2S_MODEL`` and ``L2S_TEXT_ENCODER``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lay2story_core.pipelines.auto_layout import AutoLayout
from lay2story_core.pipelines.trained_for import TrainedFor
from lay2story_core.text import DEFAULT_MAX_LENGTH

__all__ = ["StoryModel", "SubjectBranchBundle", "TextEncoderBundle", "check_model", "check_subject_branch",
           "check_text_encoder"]


@dataclass(frozen=True)
class StoryModel:
    """What ``L2S_ModelLoader`` outputs: the PixArt global branch, the optional subject branch and the VAE.

    ``scheduler_config`` is the pipeline folder's scheduler config (None: PixArt's DPM-Solver++ defaults);
    ``max_text_tokens`` is the caption length the transformer was trained with (120 alpha, 300 sigma);
    ``trained_for``: the size and vocabulary its folder's ``lay2story.json`` declares (``None``: none declared);
    ``auto_layout``: the folder's auto layout settings (``None``: off unless the sampler asks for it).
    ``patchers``: inside ComfyUI, the ``ModelPatcher`` s that let ComfyUI's model management load, offload and free
    the transformer, branch and VAE (the sampler asks ComfyUI to load them); empty outside ComfyUI.
    """

    transformer: torch.nn.Module
    subject_branch: torch.nn.Module | None
    vae: torch.nn.Module
    dtype: torch.dtype
    device: torch.device
    source: str
    scheduler_config: dict | None = None
    max_text_tokens: int = DEFAULT_MAX_LENGTH
    patchers: tuple = ()
    trained_for: TrainedFor | None = None
    auto_layout: AutoLayout | None = None

    @property
    def has_subject_branch(self) -> bool:
        return self.subject_branch is not None


@dataclass(frozen=True)
class SubjectBranchBundle:
    """What ``L2S_SubjectBranchLoader`` outputs (``L2S_SUBJECT_BRANCH``): a trained subject branch for a ComfyUI
    ``MODEL``, and inside ComfyUI its ``ModelPatcher`` (ComfyUI loads, offloads and frees it like any model)."""

    branch: torch.nn.Module
    patcher: object | None
    source: str


@dataclass(frozen=True)
class TextEncoderBundle:
    """What ``L2S_TextEncoderLoader`` outputs: the T5 tokenizer and encoder.

    ``device``: where it encodes (None: the sampler's device); ``offload``: moved to the offload device (the CPU)
    after encoding and kept there between runs.
    """

    tokenizer: object
    encoder: torch.nn.Module
    dtype: torch.dtype
    device: torch.device | None
    offload: bool
    source: str
    patchers: tuple = ()


def check_model(value: object, field: str = "model") -> StoryModel:
    if not isinstance(value, StoryModel):
        raise ValueError(f"{field}: expected an L2S_MODEL (from Lay2Story Model Loader), got {type(value).__name__}")
    return value


def check_text_encoder(value: object, field: str = "text_encoder") -> TextEncoderBundle:
    if not isinstance(value, TextEncoderBundle):
        raise ValueError(f"{field}: expected an L2S_TEXT_ENCODER (from Lay2Story Text Encoder Loader), "
                         f"got {type(value).__name__}")
    return value


def check_subject_branch(value: object, field: str = "subject_branch") -> SubjectBranchBundle:
    if not isinstance(value, SubjectBranchBundle):
        raise ValueError(f"{field}: expected an L2S_SUBJECT_BRANCH (from Lay2Story Subject Branch Loader), "
                         f"got {type(value).__name__}")
    return value
