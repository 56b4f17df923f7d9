"""Command line: ``python -m lay2story_core generate --story story.json --out DIR [--model PATH_OR_ID ...]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .pipelines.schedulers import SCHEDULERS
from .story import LayoutError, load_story

logger = logging.getLogger("lay2story_core.cli")

EMBEDDED_MODEL = Path(__file__).resolve().parent / "assets" / "shapestory" / "pipeline"


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lay2story_core", description="Lay2Story consistent storytelling.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sample every frame of a story",
                         description="Sample every frame of a story file and write one PNG per frame.")
    gen.add_argument("--story", required=True, help="story JSON file (the project's story schema)")
    gen.add_argument("--out", required=True, help="output folder (created; files are replaced)")
    gen.add_argument("--model", default=None,
                     help="pipeline folder, or a PixArt transformer (folder, .safetensors/.pth, hub id); default: the "
                          "embedded ShapeStory demo model")
    gen.add_argument("--subject-branch", default="auto",
                     help="subject-branch folder, 'auto' (the pipeline folder's) or 'none'")
    gen.add_argument("--vae", default=None, help="VAE folder or single file (when --model is not a pipeline folder)")
    gen.add_argument("--text-encoder", default=None, help="T5 encoder folder or single file")
    gen.add_argument("--tokenizer", default=None, help="T5 tokenizer folder or file")
    gen.add_argument("--mode", choices=("lay2story", "training_free", "none"), default=None,
                     help="consistency: trained subject branch, training-free attention, or plain PixArt "
                          "(default: lay2story when a subject branch is loaded, else training_free)")
    gen.add_argument("--no-layout", action="store_true", help="ignore the story's boxes (layout off)")
    gen.add_argument("--no-subject-captions", action="store_true", help="ignore the subject captions")
    gen.add_argument("--reference", action="append", default=[], metavar="CHARACTER=IMAGE",
                     help="reference image of a character (repeatable); default: the story's reference paths")
    gen.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    gen.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    gen.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="dpmsolver++",
                     help="sampler (default dpmsolver++)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--height", type=int, default=None, help="image height (default: the story's)")
    gen.add_argument("--width", type=int, default=None, help="image width (default: the story's)")
    gen.add_argument("--negative-prompt", default=None, help="negative prompt (default: the story's)")
    gen.add_argument("--chunk-size", type=int, default=None,
                     help="frames per denoising pass for long stories (default: all frames jointly)")
    gen.add_argument("--identity-frames", type=int, default=None,
                     help="frames generated first that later chunks attend to (default: min(chunk, 4))")
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    gen.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                     help="weights dtype (default: bfloat16 on CUDA, float32 on CPU)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _references(items: list[str]) -> dict:
    from .pipelines import ReferenceImage

    refs = {}
    for item in items:
        char, sep, path = item.partition("=")
        if not sep or not char or not path:
            raise UserError(f"--reference: expected CHARACTER=IMAGE, got {item!r}")
        if not os.path.isfile(path):
            raise UserError(f"--reference: image {path!r} does not exist")
        refs[char] = ReferenceImage(path)
    return refs


def generate(args: argparse.Namespace) -> Path:
    import torch
    from tqdm.auto import tqdm

    from .pipelines import make_scheduler
    from .pipelines.loading import load_story_pipeline

    story = load_story(args.story)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = args.model
    if model is None:
        if not (EMBEDDED_MODEL / "transformer").is_dir():
            raise UserError(f"--model: not given and the embedded demo model is missing ({EMBEDDED_MODEL})")
        model = EMBEDDED_MODEL
    branch = None if args.subject_branch == "none" else args.subject_branch
    pipe = load_story_pipeline(model, subject_branch=branch, vae=args.vae, text_encoder=args.text_encoder,
                               tokenizer=args.tokenizer, torch_dtype=dtype)
    pipe.to(device)
    pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    mode = args.mode or ("lay2story" if pipe.subject_branch is not None else "training_free")
    settings = {"mode": mode, "seed": args.seed, "steps": args.steps, "cfg": args.cfg, "scheduler": args.scheduler,
                "layout": not args.no_layout, "subject_captions": not args.no_subject_captions,
                "model": os.fspath(model), "chunk_size": args.chunk_size}
    bar = tqdm(total=None, desc="sampling", unit="step", disable=args.quiet)

    def progress(step: int, total: int, _latents) -> None:
        bar.total = total
        bar.update(step - bar.n)

    try:
        result = pipe(story, references=_references(args.reference) or None, mode=mode, layout=not args.no_layout,
                      subject_captions=not args.no_subject_captions, num_inference_steps=args.steps,
                      guidance_scale=args.cfg, height=args.height, width=args.width,
                      negative_prompt=args.negative_prompt, seed=args.seed, chunk_size=args.chunk_size,
                      identity_frames=args.identity_frames, callback=progress)
    finally:
        bar.close()
    return write_outputs(Path(args.out), story, result.images, settings)


def write_outputs(out: Path, story, images, settings: dict) -> Path:
    """Write frames (story + settings in PNG metadata), a contact sheet and the story; all or nothing."""
    from PIL import PngImagePlugin

    from .pipelines import contact_sheet

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lay2story-", dir=out))
    try:
        story_json = story.to_json()
        for i, image in enumerate(images):
            info = PngImagePlugin.PngInfo()
            info.add_text("lay2story:story", story_json)
            info.add_text("lay2story:settings", json.dumps({**settings, "frame": i}))
            image.save(staging / f"frame_{i:03d}.png", pnginfo=info)
        contact_sheet(list(images)).save(staging / "contact_sheet.png")
        (staging / "story.json").write_text(story_json + "\n", encoding="utf-8")
        (staging / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        for item in staging.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .loading import ModelLoadError

    try:
        if args.command == "generate":
            out = generate(args)
            sys.stdout.write(f"wrote {out}\n")
    except (UserError, LayoutError, ModelLoadError, ValueError, FileNotFoundError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing written\n")
        return 130
    return 0
