"""Model loader nodes: the PixArt global branch + subject branch + VAE (``L2S_MODEL``) and the T5 text encoder +
tokenizer (``L2S_TEXT_ENCODER``), from ComfyUI's model folders. Thin adapters over ``lay2story_core.loading``.

Inside ComfyUI the models are loaded to ComfyUI's offload device and handed to its model management as
``ModelPatcher`` s (the sampler asks ComfyUI to load them; ComfyUI offloads and frees them like its own models); the
node keeps no reference, ComfyUI's output cache is the only one, as for its core loaders. Outside ComfyUI (scripts,
tests) a node instance keeps the models it loaded last (keyed by path, file time, dtype and device), so changing one
widget reloads only what it names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import torch

from lay2story_core.loading import (
    ModelLoadError,
    load_pixart_transformer_with_info,
    load_t5_encoder,
    load_t5_tokenizer,
    load_vae,
)
from lay2story_core.pipelines import PipelineManifest
from lay2story_core.pipelines.loading import default_max_sequence_length, load_subject_branch

from . import comfy_env, model_files
from .bundles import StoryModel, SubjectBranchBundle, TextEncoderBundle
from .model_files import AUTO, COMFY_T5_TOKENIZER, NONE, TOKENIZER_FILES

logger = logging.getLogger(__name__)

CATEGORY = "Lay2Story/loaders"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
_PRECISION_TIP = "Weights dtype. auto: float32 on the CPU, bfloat16 (or float16 where unsupported) on a GPU."

__all__ = ["L2S_ModelLoader", "L2S_SubjectBranchLoader", "L2S_TextEncoderLoader", "auto_tokenizer_dir"]


def _stamp(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


class _ModelCache:
    """The last model loaded per slot; a new key drops the old model before the new one loads."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[tuple, object]] = {}

    def get(self, slot: str, key: tuple, load: Callable[[], object]):
        if comfy_env.in_comfyui():  # ComfyUI's caches and model management own the models
            self._slots.clear()
            return load()
        hit = self._slots.get(slot)
        if hit is not None and hit[0] == key:
            return hit[1]
        if self._slots.pop(slot, None) is not None:
            comfy_env.soft_empty_cache()
        value = load()
        self._slots[slot] = (key, value)
        return value

    def drop(self, slot: str) -> None:
        self._slots.pop(slot, None)


def _load(field: str, choice: str, fn: Callable, path: str, **kwargs):
    """Runs a core loader on ``path`` after asking ComfyUI to make room for it on the target device; failures
    become a ``ValueError`` naming the node input and the chosen model."""
    device = kwargs.get("device")
    if isinstance(device, torch.device):
        comfy_env.free_memory(model_files.path_size(path), device)
    try:
        return fn(path, **kwargs)
    except (ModelLoadError, OSError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{field}: could not load {choice!r}: {err}") from err


class L2S_ModelLoader:
    NODE_ID = "L2S_ModelLoader"
    DISPLAY_NAME = "Lay2Story Model Loader"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads the PixArt-alpha/-Sigma global branch (a single file from checkpoints or diffusion_models, a diffusers "
        "or Lay2Story pipeline folder, or the embedded ShapeStory demo), the trained Lay2Story subject branch "
        "(models/lay2story; 'none' for training-free consistency) and the VAE."
    )
    FUNCTION = "load"
    RETURN_TYPES = ("L2S_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The story model: global branch, subject branch (or none) and VAE, on their device.",)

    def __init__(self) -> None:
        self._cache = _ModelCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (model_files.model_choices(), {
                    "tooltip": "PixArt transformer: a pipeline folder (lay2story/ or diffusers/), an original or "
                               "diffusers single file (checkpoints/, diffusion_models/), or the embedded demo."}),
                "subject_branch": (model_files.subject_branch_choices(), {
                    "default": AUTO,
                    "tooltip": "Trained Lay2Story subject branch from models/lay2story. auto: the pipeline folder's "
                               "own (none if it has none); none: no branch (use the training_free or none modes)."}),
                "vae": (model_files.vae_choices(), {
                    "default": AUTO,
                    "tooltip": "VAE file or folder from models/vae. auto: the pipeline folder's VAE (single-file "
                               "PixArt checkpoints carry none: pick the SD VAE, e.g. sd-vae-ft-ema)."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": _PRECISION_TIP}),
                "device": (list(DEVICES), {
                    "default": "auto",
                    "tooltip": "Where the model runs. auto: ComfyUI's device (the GPU when there is one)."}),
            },
        }

    def load(self, model: str, subject_branch: str = AUTO, vae: str = AUTO, precision: str = "auto",
             device: str = "auto") -> tuple[StoryModel]:
        run_device = comfy_env.resolve_device(device)
        dtype = comfy_env.resolve_dtype(precision, run_device)
        path = model_files.resolve_choice(model, "model")
        pipeline = model_files.is_pipeline_folder(path)
        managed = comfy_env.in_comfyui()
        home = comfy_env.offload_device() if managed else run_device  # ComfyUI moves it when it samples

        transformer, info = self._cache.get(
            "transformer", (path, _stamp(path), dtype, run_device),
            lambda: _load("model", model, load_pixart_transformer_with_info, path, torch_dtype=dtype,
                          device=home))

        branch_path = self._subject_branch_path(subject_branch, path, pipeline)
        branch = None
        if branch_path is None:
            self._cache.drop("subject_branch")
        else:
            branch = self._cache.get(
                "subject_branch", (branch_path, _stamp(branch_path), dtype, run_device),
                lambda: _load("subject_branch", subject_branch, load_subject_branch, branch_path, torch_dtype=dtype,
                              device=home))
            branch.check_fits(transformer, f"subject_branch: {subject_branch!r}")

        if vae == AUTO:
            if not pipeline:
                raise ValueError(f"vae: 'auto' takes the VAE of a pipeline folder, but {model!r} is a single file; "
                                 "pick a VAE from models/vae")
            vae_path = path
        else:
            vae_path = model_files.resolve_choice(vae, "vae")
        vae_dtype = torch.float32 if dtype == torch.float16 else dtype  # the SD VAE overflows in float16
        vae_model = self._cache.get(
            "vae", (vae_path, _stamp(vae_path), vae_dtype, run_device),
            lambda: _load("vae", vae, load_vae, vae_path, torch_dtype=vae_dtype, device=home))

        # the caption length (the core loader's rule: the folder's lay2story.json, else the checkpoint's) and what the
        # model was trained for (its lay2story.json)
        manifest = PipelineManifest.read(path) if pipeline else PipelineManifest()
        scheduler_config = None
        scheduler_file = os.path.join(path, "scheduler", "scheduler_config.json")
        if pipeline and os.path.isfile(scheduler_file):
            with open(scheduler_file, encoding="utf-8") as f:
                scheduler_config = json.load(f)
        logger.info("Lay2Story model %s (subject branch %s) on %s as %s", model, subject_branch, run_device, dtype)
        patchers = ()
        if managed:
            from .comfy import host

            patchers = tuple(host.managed(m, run_device) for m in (transformer, branch, vae_model) if m is not None)
        return (StoryModel(transformer=transformer, subject_branch=branch, vae=vae_model, dtype=dtype,
                           device=run_device, source=model, scheduler_config=scheduler_config,
                           max_text_tokens=default_max_sequence_length(manifest, info), patchers=patchers,
                           trained_for=manifest.trained_for, auto_layout=manifest.auto_layout),)

    @staticmethod
    def _subject_branch_path(choice: str, model_path: str, pipeline: bool) -> str | None:
        if choice == NONE:
            return None
        if choice == AUTO:
            own = os.path.join(model_path, "subject_branch")
            return own if pipeline and model_files.is_pipeline_folder(model_path, "subject_branch") else None
        return model_files.resolve_choice(choice, "subject_branch")


def auto_tokenizer_dir(encoder_path: str) -> str | None:
    """The tokenizer that belongs to a T5 encoder: a pipeline folder's ``tokenizer/``; tokenizer files in the
    encoder's folder or its sibling ``tokenizer/``; for a single file ``<stem>_tokenizer/``, ``<stem>/``,
    ``tokenizer/`` or ``t5_tokenizer/`` beside it; else ComfyUI's bundled T5 tokenizer (for T5-XXL files)."""
    candidates = []
    if model_files.is_pipeline_folder(encoder_path, "text_encoder"):
        candidates.append(os.path.join(encoder_path, "tokenizer"))
    elif os.path.isdir(encoder_path):
        candidates += [encoder_path, os.path.join(os.path.dirname(encoder_path.rstrip(os.sep)), "tokenizer")]
    else:
        folder, name = os.path.split(encoder_path)
        stem = os.path.splitext(name)[0]
        candidates += [os.path.join(folder, n) for n in (f"{stem}_tokenizer", stem, "tokenizer", "t5_tokenizer")]
    for candidate in candidates:
        if any(os.path.isfile(os.path.join(candidate, n)) for n in TOKENIZER_FILES):
            return candidate
    return comfy_env.comfy_t5_tokenizer_dir()


class L2S_TextEncoderLoader:
    NODE_ID = "L2S_TextEncoderLoader"
    DISPLAY_NAME = "Lay2Story Text Encoder Loader"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads the T5 text encoder PixArt reads captions with (a ComfyUI text_encoders file such as t5xxl_fp16, a "
        "transformers folder, a pipeline folder's, or the embedded demo's) and its tokenizer."
    )
    FUNCTION = "load"
    RETURN_TYPES = ("L2S_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The T5 encoder and tokenizer for the story sampler.",)

    def __init__(self) -> None:
        self._cache = _ModelCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "text_encoder": (model_files.text_encoder_choices(), {
                    "tooltip": "T5 encoder: a file or folder from models/text_encoders (or clip), a pipeline "
                               "folder's text_encoder/, or the embedded demo's."}),
                "tokenizer": (model_files.tokenizer_choices(), {
                    "default": AUTO,
                    "tooltip": "T5 tokenizer. auto: the one beside the encoder (pipeline tokenizer/, a tokenizer "
                               "folder next to the file), else ComfyUI's bundled T5 tokenizer."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": _PRECISION_TIP}),
                "device": (list(DEVICES), {
                    "default": "auto",
                    "tooltip": "Where captions are encoded. auto: the sampler's device; cpu saves GPU memory (slow "
                               "for T5-XXL)."}),
                "offload": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Keep the encoder in CPU memory between runs and move it to the GPU only to encode."}),
            },
        }

    def load(self, text_encoder: str, tokenizer: str = AUTO, precision: str = "auto", device: str = "auto",
             offload: bool = True) -> tuple[TextEncoderBundle]:
        if not isinstance(offload, bool):
            raise ValueError(f"offload: expected true or false, got {offload!r}")
        run_device = None if device == "auto" else comfy_env.resolve_device(device)
        dtype = comfy_env.resolve_dtype(precision, run_device or comfy_env.resolve_device("auto"))
        home = comfy_env.offload_device() if offload else (run_device or comfy_env.resolve_device("auto"))
        path = model_files.resolve_choice(text_encoder, "text_encoder")

        if tokenizer == AUTO:
            tok_path = auto_tokenizer_dir(path)
            if tok_path is None:
                raise ValueError(f"tokenizer: 'auto' found no tokenizer for {text_encoder!r} (no tokenizer folder "
                                 "beside it and no ComfyUI bundled T5 tokenizer); pick one")
        elif tokenizer == COMFY_T5_TOKENIZER:
            tok_path = comfy_env.comfy_t5_tokenizer_dir()
            if tok_path is None:
                raise ValueError(f"tokenizer: {tokenizer!r} is only available inside ComfyUI")
        else:
            tok_path = model_files.resolve_choice(tokenizer, "tokenizer")
        tok = self._cache.get("tokenizer", (tok_path, _stamp(tok_path)),
                              lambda: _load("tokenizer", tokenizer, load_t5_tokenizer, tok_path))

        encoder = self._cache.get(
            "encoder", (path, _stamp(path), dtype, home),
            lambda: _load("text_encoder", text_encoder, load_t5_encoder, path, torch_dtype=dtype, device=home))
        vocab = int(encoder.config.vocab_size)
        if len(tok) > vocab:
            raise ValueError(f"tokenizer: {tokenizer!r} ({tok_path}) has {len(tok)} tokens but {text_encoder!r} "
                             f"knows only {vocab}; pick the tokenizer that belongs to this encoder")
        patchers = ()
        if comfy_env.in_comfyui():
            from .comfy import host

            patchers = (host.managed(encoder, run_device or comfy_env.resolve_device("auto")),)
        return (TextEncoderBundle(tokenizer=tok, encoder=encoder, dtype=dtype, device=run_device, offload=offload,
                                  source=text_encoder, patchers=patchers),)


class L2S_SubjectBranchLoader:
    NODE_ID = "L2S_SubjectBranchLoader"
    DISPLAY_NAME = "Lay2Story Subject Branch Loader"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a trained Lay2Story subject branch (models/lay2story) for a PixArt MODEL from ComfyUI's core loaders. "
        "ComfyUI's model management loads, offloads and frees it like any model."
    )
    FUNCTION = "load"
    RETURN_TYPES = ("L2S_SUBJECT_BRANCH",)
    RETURN_NAMES = ("subject_branch",)
    OUTPUT_TOOLTIPS = ("The subject branch, for the story sampler's subject_branch input.",)

    def __init__(self) -> None:
        self._cache = _ModelCache()

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        choices = [c for c in model_files.subject_branch_choices() if c not in (AUTO, NONE)]
        embedded = model_files.embedded_pipeline_dir()
        if embedded is not None and model_files.is_pipeline_folder(embedded, "subject_branch"):
            choices = [model_files.EMBEDDED_LABEL, *choices]
        return {
            "required": {
                "subject_branch": (choices, {
                    "tooltip": "A subject branch folder from models/lay2story (a training run's subject_branch/ or "
                               "a pipeline folder with one), or the embedded demo's."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": _PRECISION_TIP}),
            },
        }

    def load(self, subject_branch: str, precision: str = "auto"):
        device = comfy_env.resolve_device("auto")
        dtype = comfy_env.resolve_dtype(precision, device)
        path = model_files.resolve_choice(subject_branch, "subject_branch")
        managed = comfy_env.in_comfyui()
        home = comfy_env.offload_device() if managed else device
        branch = self._cache.get(
            "subject_branch", (path, _stamp(path), dtype, home),
            lambda: _load("subject_branch", subject_branch, load_subject_branch, path, torch_dtype=dtype,
                          device=home))
        patcher = None
        if managed:
            from .comfy import host

            patcher = host.managed(branch, device)
        return (SubjectBranchBundle(branch=branch.eval(), patcher=patcher, source=subject_branch),)
