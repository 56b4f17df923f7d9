"""Command line: ``python -m lay2story_core generate --story story.json --out DIR [--model PATH_OR_ID ...]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .cli_output import EMBEDDED_MODEL, OutputFolder, UserError, write_outputs
from .comic.command import ComicRequest, add_comic_arguments
from .consistency import SECOND_HALF, ConsistencyConfig
from .consistency.box_control import BOX_STRENGTH
from .pipelines.auto_layout import AUTO_LAYOUT_CHOICES
from .pipelines.manifest import (
    MAX_INFERENCE_STEPS,
    MAX_SEQUENCE_LENGTH,
    check_guidance_scale,
    check_max_sequence_length,
    check_num_inference_steps,
)
from .pipelines.modes import AUTO, MODE_NAMES, resolve_mode
from .pipelines.schedulers import SCHEDULERS, scheduler_label
from .story import LayoutError, load_story

logger = logging.getLogger("lay2story_core.cli")

# Denoising steps: at most the schedule's training timesteps (1000 for PixArt; also checked against the loaded
# scheduler); one rule with the pipeline, the sampler node and manifests (pipelines.manifest)
MAX_STEPS = MAX_INFERENCE_STEPS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lay2story_core", description="Lay2Story consistent storytelling.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sample every frame of a story",
                         description="Sample every frame of a story file and write one PNG per frame.")
    gen.add_argument("--story", default=None,
                     help="story JSON file (the project's story schema); required unless --from")
    gen.add_argument("--out", default=None,
                     help="output folder: created, or replaced as a whole once the new one is complete (only a "
                          "folder written by this command, or an empty one, is replaced); required unless --from")
    gen.add_argument("--model", default=None,
                     help="pipeline folder, or a PixArt transformer (folder, .safetensors/.pth, hub id); default: the "
                          "embedded ShapeStory demo model")
    gen.add_argument("--subject-branch", default="auto",
                     help="subject-branch folder, 'auto' (the pipeline folder's) or 'none'")
    gen.add_argument("--vae", default=None, help="VAE folder or single file (when --model is not a pipeline folder)")
    gen.add_argument("--text-encoder", default=None, help="T5 encoder folder or single file")
    gen.add_argument("--tokenizer", default=None, help="T5 tokenizer folder or file")
    gen.add_argument("--mode", choices=(AUTO, *MODE_NAMES), default=AUTO,
                     help="consistency: trained subject branch, training-free attention, or plain PixArt "
                          "(default auto: lay2story when a subject branch is loaded, else training_free)")
    gen.add_argument("--subject-scale", action="append", default=[], metavar="SCALE|CHARACTER=SCALE",
                     help="layout strength of the subject branch (lay2story mode): one number for the story, or "
                          "per character (repeatable); 0 = the global branch alone, 1 = as trained (default 1)")
    gen.add_argument("--no-layout", action="store_true", help="ignore the story's boxes (layout off)")
    gen.add_argument("--no-subject-captions", action="store_true", help="ignore the subject captions")
    gen.add_argument("--auto-layout", choices=AUTO_LAYOUT_CHOICES, default="model",
                     help="lay2story mode, characters without a box (e.g. --no-layout): 'on' lets the model place "
                          "each one in the first steps and draws it in that box (the placed boxes are written to the "
                          "output's story.json), 'off' samples them without a box (the paper's w/o lc); default "
                          "'model': the model folder's choice (the embedded demo: on)")
    gen.add_argument("--reference", action="append", default=[], metavar="CHARACTER=IMAGE",
                     help="reference image of a character (repeatable); default: the story's reference paths")
    gen.add_argument("--steps", type=int, default=None,
                     help=f"denoising steps, 1..{MAX_STEPS} (default: the model's lay2story.json, else 25)")
    gen.add_argument("--cfg", type=float, default=None,
                     help="classifier-free guidance scale (default: the model's lay2story.json, else 4.5)")
    gen.add_argument("--scheduler", choices=tuple(SCHEDULERS), default=None,
                     help="sampler (default: the model's own, i.e. its scheduler folder: dpmsolver++ for PixArt, "
                          "euler_a for the embedded demo)")
    gen.add_argument("--max-sequence-length", type=int, default=None, metavar="TOKENS",
                     help=f"caption length in T5 tokens, 1..{MAX_SEQUENCE_LENGTH}; captions are cut beyond it "
                          "(default: the model's: 300 for PixArt-Sigma, 120 for PixArt-alpha)")
    gen.add_argument("--seed", type=int, default=None,
                     help="random seed (default 0; with --from: the sampled frames', default one more than the "
                          "largest seed the story used)")
    gen.add_argument("--height", type=int, default=None, help="image height (default: the story's)")
    gen.add_argument("--width", type=int, default=None, help="image width (default: the story's)")
    gen.add_argument("--negative-prompt", default=None, help="negative prompt (default: the story's)")
    gen.add_argument("--chunk-size", type=int, default=None,
                     help="frames per denoising pass for long stories (default: all frames jointly)")
    gen.add_argument("--identity-frames", type=int, default=None,
                     help="frames generated first that later chunks attend to (default: min(chunk, 4))")
    gen.add_argument("--consistency-rate", type=float, default=0.5,
                     help="training_free mode: share of the identity frames' tokens each frame attends to, 0..1 "
                          "(default 0.5, StoryDiffusion's)")
    gen.add_argument("--consistency-blocks", default=SECOND_HALF,
                     help="training_free mode: blocks with consistent self-attention: second_half (default, "
                          "StoryDiffusion's), all (a shallow model needs it), or indices like 0,2,5")
    gen.add_argument("--box-strength", type=float, default=BOX_STRENGTH,
                     help="training_free mode: box control, the share of the first steps drawn box by box so the "
                          f"characters land in their boxes, 0..1 (default {BOX_STRENGTH:g}; 0: the boxes only steer "
                          "the region captions and the sharing)")
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    gen.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                     help="weights dtype (default: bfloat16 on CUDA, float32 on CPU)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    add_comic_arguments(gen)
    from .cli_redo import add_redo_arguments  # (cli_redo builds on this module)

    add_redo_arguments(gen)
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


def _subject_scale(items: list[str]) -> float | dict[str, float]:
    """``--subject-scale`` values: one number, or ``CHARACTER=NUMBER`` items (not both)."""
    if not items:
        return 1.0
    per_character: dict[str, float] = {}
    story_scale = None
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"--subject-scale: expected a number or CHARACTER=NUMBER, got {item!r}") from None
        if sep:
            per_character[name] = number
        else:
            story_scale = number
    if story_scale is not None and (per_character or len(items) > 1):
        raise UserError(f"--subject-scale: give one number or CHARACTER=NUMBER items, not both: {items!r}")
    return per_character if per_character else story_scale


def check_steps(steps: int, limit: int = MAX_STEPS) -> None:
    try:
        check_num_inference_steps(steps, "--steps", limit)
    except ValueError as err:
        raise UserError(str(err)) from None


def check_cfg(cfg: float) -> None:
    try:
        check_guidance_scale(cfg, "--cfg")
    except ValueError as err:
        raise UserError(str(err)) from None


def check_tokens(tokens: int) -> None:
    try:
        check_max_sequence_length(tokens, "--max-sequence-length")
    except ValueError as err:
        raise UserError(str(err)) from None


def generate(args: argparse.Namespace) -> Path:
    from tqdm.auto import tqdm

    from .devices import pick_device, pick_dtype
    from .pipelines import make_scheduler
    from .pipelines.loading import load_story_pipeline

    if args.from_dir is not None:  # redo frames of a finished story (cli_redo)
        from .cli_redo import redo_frames

        return redo_frames(args, vars(build_parser().parse_args(["generate"])))
    for flag, value in (("--redo", args.redo), ("--insert", args.insert), ("--append", args.append)):
        if value:
            raise UserError(f"{flag}: only with --from (the folder of the story to change)")
    for flag, value in (("--story", args.story), ("--out", args.out)):
        if value is None:
            raise UserError(f"{flag}: required (unless --from)")
    args.seed = 0 if args.seed is None else args.seed
    # 0. Everything checkable without a model: story, steps, references, --out (its staging folder is made now)
    story = load_story(args.story)
    if args.steps is not None:
        check_steps(args.steps)
    if args.cfg is not None:
        check_cfg(args.cfg)
    if args.max_sequence_length is not None:
        check_tokens(args.max_sequence_length)
    references = _references(args.reference) or None
    comic = ComicRequest.from_args(args, story)
    subject_scale = _subject_scale(args.subject_scale)
    if isinstance(subject_scale, dict):  # the sampler node's rule: unnamed characters keep 1, ids must exist
        from .pipelines.scales import story_scales

        subject_scale = story_scales(story, 1.0, ", ".join(f"{k}={v}" for k, v in subject_scale.items()),
                                     field="--subject-scale", characters_field="--subject-scale")
    consistency = ConsistencyConfig.from_user(args.consistency_rate, args.consistency_blocks, args.box_strength,
                                              rate_field="--consistency-rate", blocks_field="--consistency-blocks",
                                              box_strength_field="--box-strength")
    device = pick_device(args.device, field="--device")
    dtype = pick_dtype(args.dtype, device, field="--dtype")
    model = args.model
    if model is None:
        if not (EMBEDDED_MODEL / "transformer").is_dir():
            raise UserError(f"--model: not given and the embedded demo model is missing ({EMBEDDED_MODEL})")
        model = EMBEDDED_MODEL
    output = OutputFolder(args.out)
    try:
        # 1. Model
        branch = None if args.subject_branch == "none" else args.subject_branch
        pipe = load_story_pipeline(model, subject_branch=branch, vae=args.vae, text_encoder=args.text_encoder,
                                   tokenizer=args.tokenizer, torch_dtype=dtype)
        steps, cfg = pipe.sampling_defaults.resolve(args.steps, args.cfg)
        check_steps(steps, pipe.max_inference_steps)
        tokens = pipe.max_sequence_length if args.max_sequence_length is None else args.max_sequence_length
        pipe.to(device)
        if args.scheduler is not None:
            pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
        mode = resolve_mode(args.mode, pipe.subject_branch is not None, field="--mode").name
        settings = {"mode": mode, "seed": args.seed, "steps": steps, "cfg": cfg,
                    "scheduler": scheduler_label(pipe.scheduler), "max_sequence_length": tokens,
                    "layout": not args.no_layout,
                    "subject_captions": not args.no_subject_captions, "model": os.fspath(model),
                    "chunk_size": args.chunk_size, "subject_scale": subject_scale,
                    "identity_frames": args.identity_frames, "negative_prompt": args.negative_prompt}
        if references:  # what a redo (--from) encodes again
            settings["references"] = {c: os.path.abspath(ref.image) for c, ref in references.items()}
        if mode == "training_free":
            settings["consistency"] = {"rate": consistency.rate, "blocks": args.consistency_blocks,
                                       "box_strength": consistency.box_strength}
        bar = tqdm(total=None, desc="sampling", unit="step", disable=args.quiet)

        def progress(step: int, total: int, _latents) -> None:
            bar.total = total
            bar.update(step - bar.n)

        # 2. Sample
        try:
            result = pipe(story, references=references, mode=mode, layout=not args.no_layout,
                          subject_captions=not args.no_subject_captions, num_inference_steps=steps,
                          guidance_scale=cfg, height=args.height, width=args.width,
                          negative_prompt=args.negative_prompt, seed=args.seed, chunk_size=args.chunk_size,
                          identity_frames=args.identity_frames, callback=progress, subject_scale=subject_scale,
                          consistency=consistency, max_sequence_length=tokens,
                          auto_layout=AUTO_LAYOUT_CHOICES[args.auto_layout])
        finally:
            bar.close()
        placed = result.story is not None and result.story != story
        if placed:  # the boxes the model chose: written to story.json, so a redo (--from) draws with them
            story = result.story
            settings["layout"], settings["auto_layout"] = True, True
        # 3. Write into the staging folder, then swap it in whole
        try:
            write_outputs(output.staging, story, result.images, settings)
            _save_latents(output.staging, story, result.latents, args.seed)
        except OSError as err:
            raise UserError(f"--out: could not write the frames ({err.strerror or err}); nothing was "
                            "replaced") from err
        pages = None if comic is None else comic.compose(story, list(result.images),
                                                         layout=not args.no_layout or placed)
    except BaseException:
        output.discard()
        raise
    committed = output.commit()
    if comic is not None:
        comic.write(pages)
    return committed


def _save_latents(out: Path, story, latents, seed: int) -> None:
    """``latents.safetensors``: every frame's final latents and initial noise, what a redo (``--from``) needs."""
    from .pipelines.redo import TENSORS_FILE, FinishedStory, initial_noise

    latents = latents.detach().float().cpu()
    record = FinishedStory(story, latents, initial_noise(latents.shape, seed))
    (Path(out) / TENSORS_FILE).write_bytes(record.tensor_bytes())  # (the staging folder is swapped in whole)


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
