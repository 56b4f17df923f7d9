"""``generate --from OUT --redo 2,5 [--seed S] [--story EDITED.json] [--insert 3] [--append N]``: sample frames of a
finished story again, or add frames, keeping every other frame's PNG byte for byte (:mod:`.pipelines.redo`).

The folder ``generate`` wrote holds what a redo needs: ``story.json``, ``settings.json`` (how it was sampled: the
redo samples with the same settings) and ``latents.safetensors`` (every frame's final latents and initial noise).
The result replaces ``--out`` (default: the ``--from`` folder itself) as a whole, as ``generate`` does.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .cli_output import EMBEDDED_MODEL, OutputFolder, UserError, write_outputs
from .pipelines.redo import TENSORS_FILE, FinishedStory, parse_frame_list, prepare_redo, redo_story

logger = logging.getLogger("lay2story_core.cli")

__all__ = ["add_redo_arguments", "redo_frames"]

FIELDS = {"previous": "--from", "frames": "--redo", "story": "--story", "seed": "--seed", "insert": "--insert",
          "append": "--append", "identity_frames": "--identity-frames"}
# sampling settings a redo takes from settings.json: giving them with --from is a mistake, not an override
_FIXED = (("mode", "--mode"), ("steps", "--steps"), ("cfg", "--cfg"), ("scheduler", "--scheduler"),
          ("no_layout", "--no-layout"), ("no_subject_captions", "--no-subject-captions"),
          ("subject_scale", "--subject-scale"), ("reference", "--reference"), ("height", "--height"),
          ("width", "--width"), ("negative_prompt", "--negative-prompt"), ("consistency_rate", "--consistency-rate"),
          ("consistency_blocks", "--consistency-blocks"), ("max_sequence_length", "--max-sequence-length"),
          ("box_strength", "--box-strength"))


def add_redo_arguments(gen: argparse.ArgumentParser) -> None:
    """The redo options of ``generate``."""
    gen.add_argument("--from", dest="from_dir", default=None, metavar="OUT",
                     help="redo frames of the story a previous generate wrote to OUT (its settings are used; "
                          "--out defaults to OUT, kept frames stay byte for byte); --story then gives the edited "
                          "story (new prompts, captions, boxes; the new frames of --insert/--append)")
    gen.add_argument("--redo", default=None, metavar="FRAMES",
                     help="with --from: frames to sample again, e.g. 2,5 or 2-4 (numbered as in OUT); they get "
                          "--seed (default: one more than the largest seed the story used)")
    gen.add_argument("--insert", default=None, metavar="FRAMES",
                     help="with --from and --story: a new frame before each of these frames of OUT (e.g. 3 or 3,3; "
                          "the frame count: at the end)")
    gen.add_argument("--append", type=int, default=0, metavar="N",
                     help="with --from and --story: N new frames at the end")


def _check_args(args: argparse.Namespace, parser_defaults: dict) -> None:
    given = [flag for dest, flag in _FIXED if dest in parser_defaults and getattr(args, dest, None) !=
             parser_defaults[dest]]
    if given:
        raise UserError(f"{given[0]}: not used with --from (a redo samples with the settings the story was "
                        "generated with, its settings.json)")
    if getattr(args, "comic", None):
        raise UserError("--comic: not used with --from (a redo writes the frames; typeset them afterwards)")
    if not args.redo and not args.insert and not args.append:
        raise UserError("--from: name frames to sample again with --redo, or add frames with --insert/--append")


def _insert_positions(text: str) -> list[int]:
    """``"3"`` / ``"3,3,8"`` -> ``[3, 3, 8]`` (a repeat inserts one more frame there)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--insert: expected frame numbers like 3 or 3,3, got {text!r}")
    return [int(p) for p in parts]


def redo_frames(args: argparse.Namespace, parser_defaults: dict) -> Path:
    """Run ``generate --from``; returns the folder written."""
    from tqdm.auto import tqdm

    from .devices import pick_device, pick_dtype
    from .pipelines import make_scheduler, scheduler_label
    from .pipelines.loading import load_story_pipeline
    from .pipelines.schedulers import SCHEDULERS
    from .story import load_story

    # 0. Everything checkable without a model: the finished story, the edits, --out
    _check_args(args, parser_defaults)
    previous = FinishedStory.load(args.from_dir, field="--from")
    kept_bytes = [path.read_bytes() for path in previous.files]
    frames = parse_frame_list(args.redo or "", "--redo")
    insert = _insert_positions(args.insert or "")
    if (insert or args.append) and args.story is None:
        raise UserError(f"{'--insert' if insert else '--append'}: give the story with the new frames in --story")
    story = load_story(args.story) if args.story is not None else None
    prepare_redo(previous, frames, story=story, seed=args.seed, insert=insert, append=args.append,
                 identity_frames=args.identity_frames, fields=FIELDS)  # every mistake before a model is loaded
    device = pick_device(args.device, field="--device")
    dtype = pick_dtype(args.dtype, device, field="--dtype")
    model = args.model or previous.settings.get("model") or EMBEDDED_MODEL
    output = OutputFolder(args.out or args.from_dir)
    try:
        # 1. The model, with the sampler the story was sampled with
        branch = None if args.subject_branch == "none" else args.subject_branch
        pipe = load_story_pipeline(model, subject_branch=branch, vae=args.vae, text_encoder=args.text_encoder,
                                   tokenizer=args.tokenizer, torch_dtype=dtype)
        pipe.to(device)
        sampler = previous.settings.get("scheduler")
        if sampler in SCHEDULERS and sampler != scheduler_label(pipe.scheduler):
            pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
        bar = tqdm(total=None, desc="redo", unit="step", disable=args.quiet)

        def progress(step: int, total: int, _latents) -> None:
            bar.total = total
            bar.update(step - bar.n)

        # 2. Sample the redone and new frames against the kept ones
        try:
            result = redo_story(pipe, previous, frames, story=story, seed=args.seed, insert=insert,
                                append=args.append, identity_frames=args.identity_frames, chunk_size=args.chunk_size,
                                fields=FIELDS, callback=progress, **previous.call_kwargs())
        finally:
            bar.close()
        # 3. Write: every frame, then the kept ones' original bytes over theirs, the latents
        record = result.record
        try:
            write_outputs(output.staging, record.story, result.images, record.settings)
            for j, i in enumerate(result.sources):  # (the staging folder is swapped in whole: plain writes)
                if i is not None:
                    (output.staging / f"frame_{j:03d}.png").write_bytes(kept_bytes[i])
            (output.staging / TENSORS_FILE).write_bytes(record.tensor_bytes())
        except OSError as err:
            raise UserError(f"--out: could not write the frames ({err.strerror or err}); nothing was "
                            "replaced") from err
    except BaseException:
        output.discard()
        raise
    logger.info("redo: sampled frames %s of %s", list(result.sampled), os.fspath(args.from_dir))
    return output.commit()

