"""Load and save whole story pipelines: a folder with ``transformer/``, ``subject_branch/`` (optional), ``vae/``,
``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (diffusers' layout), or single files per component."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler

from ..loading import (
    ModelNotFoundError,
    load_pixart_transformer,
    load_t5_encoder,
    load_t5_tokenizer,
    load_vae,
)
from ..loading.folder import load_diffusers_folder
from ..loading.modeling import resolve_dtype
from ..models import SubjectBranch
from .story_pipeline import StoryPipeline, default_scheduler

logger = logging.getLogger(__name__)

SUBFOLDERS = ("transformer", "subject_branch", "vae", "text_encoder", "tokenizer", "scheduler")


def load_subject_branch(path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> SubjectBranch:
    """A subject branch from its ``save_pretrained`` folder (``config.json`` + safetensors)."""
    folder = Path(path)
    if (folder / "subject_branch").is_dir():
        folder = folder / "subject_branch"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"subject branch: no config.json in {os.fspath(folder)!r} (expected a folder written "
                                 "by SubjectBranch.save_pretrained)")
    return load_diffusers_folder(SubjectBranch, folder, what="subject branch", dtype=resolve_dtype(torch_dtype),
                                 device=device)


def load_story_pipeline(
    model: str | os.PathLike,
    *,
    subject_branch: str | os.PathLike | None = "auto",
    vae: str | os.PathLike | None = None,
    text_encoder: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> StoryPipeline:
    """Build a :class:`StoryPipeline`.

    Args:
        model: a pipeline folder (with the subfolders above), or a PixArt transformer (folder, single file, hub id).
        subject_branch: ``"auto"`` (the pipeline folder's ``subject_branch/`` if present), a folder, or ``None``.
        vae, text_encoder, tokenizer: override or complete the components (required when ``model`` is not a
            pipeline folder).
    """
    root = Path(model)
    is_pipeline = root.is_dir() and (root / "transformer").is_dir()
    kwargs = {"torch_dtype": torch_dtype, "device": device}

    def component(given, name: str, loader, **extra):
        source = given if given is not None else (root if is_pipeline else None)
        if source is None:
            raise ModelNotFoundError(f"{name}: not found; {os.fspath(model)!r} is not a pipeline folder, pass {name}=")
        return loader(source, **extra)

    transformer = load_pixart_transformer(model, **kwargs)
    branch = None
    if subject_branch == "auto":
        if is_pipeline and (root / "subject_branch").is_dir():
            branch = load_subject_branch(root / "subject_branch", **kwargs)
    elif subject_branch is not None:
        branch = load_subject_branch(subject_branch, **kwargs)
    scheduler = default_scheduler()
    if is_pipeline and (root / "scheduler" / "scheduler_config.json").is_file():
        scheduler = DPMSolverMultistepScheduler.from_pretrained(root / "scheduler")
    return StoryPipeline(
        tokenizer=component(tokenizer, "tokenizer", load_t5_tokenizer),
        text_encoder=component(text_encoder, "text_encoder", load_t5_encoder, **kwargs),
        vae=component(vae, "vae", load_vae, **kwargs),
        transformer=transformer,
        scheduler=scheduler,
        subject_branch=branch,
    )


def save_story_pipeline(pipe: StoryPipeline, folder: str | os.PathLike) -> None:
    """Write every component in its own subfolder (``save_pretrained``), readable by :func:`load_story_pipeline`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.transformer.save_pretrained(folder / "transformer")
    if pipe.subject_branch is not None:
        pipe.subject_branch.save_pretrained(folder / "subject_branch")
    pipe.vae.save_pretrained(folder / "vae")
    pipe.text_encoder.save_pretrained(folder / "text_encoder")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    manifest = {"format": "lay2story-pipeline", "version": 1,
                "components": [n for n in SUBFOLDERS if (folder / n).is_dir()]}
    (folder / "lay2story.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
