"""Where the tiny frozen ShapeStory components live, and loaders for them (local files only, no hub).

Trained by ``training/shapestory/train_vae.py`` and ``training/shapestory/train_text.py``; see
``training/shapestory/README.md`` for the commands and measured figures (``assets/shapestory/reports/``). There is
one copy of each: the embedded demo pipeline's subfolders (``PIPELINE_DIR``), which the demo recipe starts from.
"""

from __future__ import annotations

import os

__all__ = ["ASSET_DIR", "PIPELINE_DIR", "REPORTS_DIR",
           "TEXT_ENCODER_DIR", "TOKENIZER_DIR", "VAE_DIR", "load_text_encoder", "load_tokenizer",
           "load_vae"]

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "shapestory")
PIPELINE_DIR = os.path.join(ASSET_DIR, "pipeline")
REPORTS_DIR = os.path.join(ASSET_DIR, "reports")
VAE_DIR = os.path.join(PIPELINE_DIR, "vae")
TEXT_ENCODER_DIR = os.path.join(PIPELINE_DIR, "text_encoder")
TOKENIZER_DIR = os.path.join(PIPELINE_DIR, "tokenizer")


def _folder(path: str | os.PathLike | None, default: str, what: str) -> str:
    folder = os.fspath(default if path is None else path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: no folder at {folder!r}")
    return folder


def load_vae(path: str | os.PathLike | None = None):
    """The ShapeStory ``AutoencoderKL`` (eval mode, gradients off)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(_folder(path, VAE_DIR, "vae"), local_files_only=True)
    return vae.eval().requires_grad_(False)


def load_text_encoder(path: str | os.PathLike | None = None):
    """The ShapeStory ``T5EncoderModel`` (eval mode, gradients off)."""
    from transformers import T5EncoderModel

    encoder = T5EncoderModel.from_pretrained(_folder(path, TEXT_ENCODER_DIR, "text_encoder"), local_files_only=True)
    return encoder.eval().requires_grad_(False)


def load_tokenizer(path: str | os.PathLike | None = None):
    """The ShapeStory T5 tokenizer (a sentencepiece unigram model over ShapeStory captions)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_folder(path, TOKENIZER_DIR, "tokenizer"), local_files_only=True)
