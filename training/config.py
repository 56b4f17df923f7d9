"""Command-line options of the trainer and the YAML config files that set them.

A config file is a YAML mapping whose keys are exactly the option names (``learning_rate: 1.0e-5``); options given
on the command line override it. Every key and value is checked before any work starts: an unknown key, a value of
the wrong type or out of range raises :class:`ConfigError` naming the key (and the closest known name).
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections.abc import Mapping, Sequence

__all__ = ["ConfigError", "build_parser", "load_config_file", "parse_args", "validate_args"]

STAGE_LEARNING_RATES = {1: 2e-5, 2: 1e-5}  # Lay2Story paper: AdamW 2e-5 (global branch), 1e-5 (subject branch)
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
DEVICE_CHOICES = ("accelerator", "cpu")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


class ConfigError(ValueError):
    """A bad option or config entry; the message names the key and the value."""


def _bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default, help=help)


def build_parser(description: str = "Train Lay2Story (stage 1: global branch, stage 2: subject branch).",
                 *, require: bool = True) -> argparse.ArgumentParser:
    """The trainer's parser. ``require=False`` leaves the run-only checks (stage, data, output) to the caller."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=None, help="YAML file of option values (keys = option names)")
    g = p.add_argument_group("model")
    g.add_argument("--stage", type=int, choices=(1, 2), default=None,
                   help="1: fine-tune the global branch (PixArt); 2: freeze it and train the subject branch")
    g.add_argument("--pretrained_model_name_or_path", default=None,
                   help="a local PixArt pipeline folder (transformer/, text_encoder/, tokenizer/, vae/)")
    g.add_argument("--transformer_path", default=None, help="PixArt transformer (folder or single file); overrides")
    g.add_argument("--text_encoder_path", default=None, help="T5 encoder (folder or single file); overrides")
    g.add_argument("--tokenizer_path", default=None, help="T5 tokenizer folder or file; overrides")
    g.add_argument("--vae_path", default=None, help="VAE (folder or single file); overrides")
    g.add_argument("--subject_branch_path", default=None,
                   help="stage 2: start from this SubjectBranch save_pretrained folder (default: initialise from "
                        "the global branch)")
    g.add_argument("--subject_branch_layers", type=int, default=None,
                   help="stage 2: subject blocks (default: half the global depth, one per two global blocks)")
    _bool_flag(g, "box_embedding", False, "stage 2: give the subject branch a box embedding (where each token sits in "
               "its box; added zero-initialised to a --subject_branch_path branch that has none)")
    _bool_flag(g, "train_transformer", False, "stage 2: also fine-tune the global branch (a joint fine-tune); "
               "exported as transformer/ beside subject_branch/, to use in place of stage 1's")
    g.add_argument("--transformer_learning_rate", type=float, default=None,
                   help="stage 2 with --train_transformer: the global branch's learning rate (default: learning_rate)")
    g = p.add_argument_group("data")
    g.add_argument("--train_data", nargs="+", default=None,
                   help="story JSONL files, tar shards, folders of them or glob patterns")
    g.add_argument("--validation_data", nargs="*", default=None,
                   help="held-out stories for the validation loss (no value: none)")
    g.add_argument("--validation_stories", nargs="*", default=None,
                   help="story JSON files rendered every --validation_steps (no value: none)")
    g.add_argument("--feature_cache", default=None,
                   help="folder of precomputed T5/VAE features (training/cache.py); then T5 is not loaded")
    g.add_argument("--resolution", type=int, default=512, help="training resolution in pixels (PixArt: 512/1024)")
    _bool_flag(g, "aspect_ratio_buckets", True, "bucket stories by aspect ratio as PixArt does (else square)")
    g.add_argument("--max_frames", type=int, default=6, help="frames per story used (longer stories are cut)")
    g.add_argument("--max_length", type=int, default=120, help="T5 tokens per caption (PixArt-alpha: 120)")
    g.add_argument("--train_batch_size", type=int, default=1, help="stories per device per micro-step")
    g.add_argument("--dataloader_num_workers", type=int, default=0, help="data loading worker processes")
    g.add_argument("--max_skip_fraction", type=float, default=0.05,
                   help="stop with an error when more than this fraction of the stories read cannot be loaded "
                        "(missing/corrupt images, invalid story lines); 1 = never stop")
    g = p.add_argument_group("optimisation")
    g.add_argument("--seed", type=int, default=0, help="seed of data order, noise, timesteps and dropout")
    g.add_argument("--num_train_epochs", type=int, default=1)
    g.add_argument("--max_train_steps", type=int, default=None, help="optimizer steps; overrides num_train_epochs")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--learning_rate", type=float, default=None, help="default: 2e-5 (stage 1), 1e-5 (stage 2)")
    g.add_argument("--lr_scheduler", choices=LR_SCHEDULERS, default="constant")
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_weight_decay", type=float, default=0.03, help="paper: 0.03")
    g.add_argument("--adam_epsilon", type=float, default=1e-10, help="PixArt: 1e-10")
    g.add_argument("--max_grad_norm", type=float, default=0.01, help="gradient clipping (PixArt: 0.01; 0 = off)")
    g.add_argument("--num_timesteps", type=int, default=1000, help="diffusion steps of the training schedule")
    g.add_argument("--timestep_range", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="draw training timesteps uniformly from [LO, HI) only (default: the whole schedule)")
    g.add_argument("--branch_off_share", type=float, default=0.0,
                   help="stage 2: probability a story is trained with the subject branch off (its caption kept, no "
                        "subject slots: the global branch alone, as mode='none' samples it); 0 = never")
    g.add_argument("--branch_off_timestep_range", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="stage 2: timesteps of the branch-off stories from [LO, HI) (default: as timestep_range)")
    g.add_argument("--prediction_type", default="epsilon", choices=("epsilon", "v_prediction"),
                   help="what the model predicts (diffusers' names; PixArt-alpha: epsilon). Must match the "
                        "prediction_type of the model's scheduler config, which inference reads")
    g.add_argument("--caption_dropout", type=float, default=0.1,
                   help="probability a story is trained unconditionally (empty caption, no subject branch) for CFG")
    g.add_argument("--mask_dropout", type=float, default=0.25, help="probability a frame's boxes become full-frame")
    g.add_argument("--subject_caption_dropout", type=float, default=0.25,
                   help="probability a frame's subject captions are replaced by its global caption")
    g.add_argument("--reference_dropout", type=float, default=0.0,
                   help="probability a story is trained without its reference images (stage 2; 0 = always use them)")
    g.add_argument("--subject_loss_weight", type=float, default=1.0,
                   help="stage 2: weight of the loss inside the boxes of a frame's subjects relative to the rest of "
                        "the frame (1 = uniform; each frame's weighted mean keeps the loss's scale)")
    g.add_argument("--outline_loss_weight", type=float, default=0.0,
                   help="stage 2: extra loss weight inside the subjects' boxes where the clean latent has detail "
                        "(outline, corners): 1 + W * detail / its mean over the boxes (0 = none)")
    _bool_flag(g, "use_ema", False, "keep an exponential moving average of the trained weights (PixArt: yes)")
    g.add_argument("--ema_decay", type=float, default=0.9999)
    g = p.add_argument_group("memory and speed")
    g.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
                   help="default: accelerate's config")
    g.add_argument("--frozen_dtype", choices=DTYPE_CHOICES, default="auto",
                   help="dtype of frozen parts (T5, VAE, stage-2 global branch); auto = the mixed-precision dtype")
    g.add_argument("--text_encoder_device", choices=DEVICE_CHOICES, default="accelerator",
                   help="keep T5 on the accelerator or on the CPU")
    g.add_argument("--vae_device", choices=DEVICE_CHOICES, default="accelerator")
    _bool_flag(g, "gradient_checkpointing", False, "recompute activations in backward (less memory)")
    _bool_flag(g, "torch_compile", False, "compile the global branch blocks with torch.compile")
    _bool_flag(g, "allow_tf32", False, "allow TF32 matmuls on Ampere+ GPUs")
    g = p.add_argument_group("output, checkpoints, logging, validation")
    g.add_argument("--output_dir", default=None, help="checkpoints, logs and the exported weights")
    g.add_argument("--logging_dir", default="logs", help="tracker logs, relative to output_dir")
    g.add_argument("--report_to", default="tensorboard", help="accelerate tracker: tensorboard, wandb, all, none")
    g.add_argument("--tracker_project_name", default="lay2story")
    g.add_argument("--checkpointing_steps", type=int, default=500, help="save a resumable checkpoint every N steps")
    g.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints")
    g.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder or "latest"')
    g.add_argument("--validation_steps", type=int, default=None, help="validate every N steps (default: never)")
    g.add_argument("--validation_batches", type=int, default=8, help="batches of --validation_data per validation")
    g.add_argument("--validation_num_inference_steps", type=int, default=25)
    g.add_argument("--validation_guidance_scale", type=float, default=4.5)
    p.set_defaults(_require=require)
    return p


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "config") and not a.dest.startswith("_")}


def _coerce(action: argparse.Action, key: str, value: object, source: str) -> object:
    """Check a config value the way argparse checks a command-line one (type, choices, list-ness)."""
    if value is None:
        return None
    if isinstance(action.nargs, int) and action.nargs > 1:  # a fixed-length list (flags have nargs 0)
        if not isinstance(value, list) or len(value) != action.nargs:
            raise ConfigError(f"{source}: {key}: expected a list of {action.nargs} values, got {value!r}")
        return [_coerce_one(action, key, v, source) for v in value]
    if action.nargs in ("+", "*"):
        items = [value] if isinstance(value, (str, os.PathLike)) else value
        if not isinstance(items, list) or (action.nargs == "+" and not items):
            raise ConfigError(f"{source}: {key}: expected a {'non-empty ' if action.nargs == '+' else ''}list, "
                              f"got {value!r}")
        return [_coerce_one(action, key, v, source) for v in items]
    return _coerce_one(action, key, value, source)


def _coerce_one(action: argparse.Action, key: str, value: object, source: str) -> object:
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected true or false, got {value!r}")
        return value
    kind = action.type or str
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
            except ValueError as err:
                raise ConfigError(f"{source}: {key}: expected a number, got {value!r}") from err
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
        value = float(value)
    if kind is str:
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
        value = os.fspath(value)
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{source}: {key}: {value!r} is not one of {list(action.choices)}")
    return value


def load_config_file(path: str | os.PathLike, parser: argparse.ArgumentParser | None = None) -> dict:
    """Read a YAML config and check every key/value against ``parser``'s options (default: the trainer's)."""
    import yaml

    parser = parser or build_parser()
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError as err:
        raise ConfigError(f"config: file not found: {name!r}") from err
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"config: cannot read {name!r}: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: expected a mapping of option names to values, got {type(data).__name__}")
    actions = _actions(parser)
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in actions:
            raise ConfigError(f"{name}: unknown key {key!r}{_suggest(str(key), sorted(actions))}")
        out[key] = _coerce(actions[key], key, value, name)
    return out


def _check(cond: bool, key: str, value: object, detail: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {detail}, got {value!r}")


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Semantic checks (ranges, required options, paths that must exist); fills stage-dependent defaults."""
    for key in ("validation_data", "validation_stories"):
        if getattr(args, key) == []:
            setattr(args, key, None)
    if getattr(args, "_require", True):
        _check(args.stage is not None, "stage", args.stage, "required (1 or 2)")
        _check(bool(args.train_data), "train_data", args.train_data, "required: story JSONL files or tar shards")
        _check(bool(args.output_dir), "output_dir", args.output_dir, "required")
    if not (args.pretrained_model_name_or_path or args.transformer_path):
        raise ConfigError("pretrained_model_name_or_path: required (or transformer_path), got None")
    for key in ("resolution", "max_frames", "max_length", "train_batch_size", "num_train_epochs",
                "gradient_accumulation_steps", "checkpointing_steps", "num_timesteps", "validation_batches",
                "validation_num_inference_steps"):
        value = getattr(args, key)
        _check(isinstance(value, int) and value >= 1, key, value, "expected an integer >= 1")
    _check(args.resolution % 16 == 0, "resolution", args.resolution, "expected a multiple of 16")
    _check(args.num_timesteps >= 2, "num_timesteps", args.num_timesteps, "expected an integer >= 2")
    if args.timestep_range is not None:
        lo, hi = args.timestep_range
        _check(0 <= lo < hi <= args.num_timesteps, "timestep_range", args.timestep_range,
               f"expected [LO, HI] with 0 <= LO < HI <= num_timesteps ({args.num_timesteps})")
    if args.branch_off_timestep_range is not None:
        lo, hi = args.branch_off_timestep_range
        _check(0 <= lo < hi <= args.num_timesteps, "branch_off_timestep_range", args.branch_off_timestep_range,
               f"expected [LO, HI] with 0 <= LO < HI <= num_timesteps ({args.num_timesteps})")
        _check(args.branch_off_share > 0, "branch_off_timestep_range", args.branch_off_timestep_range,
               "only used with branch_off_share > 0")
    for key in ("max_train_steps", "checkpoints_total_limit", "validation_steps", "subject_branch_layers"):
        value = getattr(args, key)
        _check(value is None or value >= 1, key, value, "expected an integer >= 1 or null")
    for key in ("dataloader_num_workers", "lr_warmup_steps", "seed"):
        _check(getattr(args, key) >= 0, key, getattr(args, key), "expected an integer >= 0")
    for key in ("caption_dropout", "mask_dropout", "subject_caption_dropout", "reference_dropout",
                "max_skip_fraction", "branch_off_share"):
        value = getattr(args, key)
        _check(0.0 <= value <= 1.0, key, value, "expected a probability in [0, 1]")
    for key in ("adam_beta1", "adam_beta2", "ema_decay"):
        value = getattr(args, key)
        _check(0.0 <= value < 1.0 or (key == "ema_decay" and value == 1.0), key, value, "expected a value in [0, 1)")
    for key in ("adam_weight_decay", "max_grad_norm", "validation_guidance_scale"):
        _check(getattr(args, key) >= 0, key, getattr(args, key), "expected a number >= 0")
    _check(args.adam_epsilon > 0, "adam_epsilon", args.adam_epsilon, "expected a number > 0")
    _check(math.isfinite(args.subject_loss_weight) and args.subject_loss_weight > 0, "subject_loss_weight",
           args.subject_loss_weight, "expected a finite number > 0 (1 = uniform)")
    _check(math.isfinite(args.outline_loss_weight) and args.outline_loss_weight >= 0, "outline_loss_weight",
           args.outline_loss_weight, "expected a finite number >= 0 (0 = none)")
    if args.learning_rate is None and args.stage is not None:
        args.learning_rate = STAGE_LEARNING_RATES[args.stage]
    if args.learning_rate is not None:
        _check(args.learning_rate > 0, "learning_rate", args.learning_rate, "expected a number > 0")
    if args.stage == 1:
        for key in ("subject_branch_path", "subject_branch_layers"):
            _check(getattr(args, key) is None, key, getattr(args, key), "only used by stage 2")
        _check(not args.box_embedding, "box_embedding", args.box_embedding, "only used by stage 2")
        _check(args.subject_loss_weight == 1.0, "subject_loss_weight", args.subject_loss_weight,
               "only used by stage 2")
        _check(args.outline_loss_weight == 0.0, "outline_loss_weight", args.outline_loss_weight,
               "only used by stage 2")
        _check(args.branch_off_share == 0.0, "branch_off_share", args.branch_off_share, "only used by stage 2")
        _check(not args.train_transformer, "train_transformer", args.train_transformer,
               "only used by stage 2 (stage 1 trains the global branch anyway)")
    if args.transformer_learning_rate is not None:
        _check(args.train_transformer, "transformer_learning_rate", args.transformer_learning_rate,
               "only used with train_transformer")
        _check(math.isfinite(args.transformer_learning_rate) and args.transformer_learning_rate > 0,
               "transformer_learning_rate", args.transformer_learning_rate, "expected a finite number > 0")
    # the cache writer reads only the frozen VAE / T5: a stage's cache is written before the stage it starts from
    # has trained (the recipes' order), so neither the branch to continue nor the cache itself must exist yet
    must_exist = [] if getattr(args, "_writes_cache", False) else ["subject_branch_path", "feature_cache"]
    for key in must_exist:
        value = getattr(args, key)
        _check(value is None or os.path.isdir(value), key, value, "expected an existing folder")
    resume = args.resume_from_checkpoint
    if resume is not None and resume != "latest":
        _check(os.path.isdir(resume), "resume_from_checkpoint", resume, 'expected "latest" or an existing folder')
    if args.validation_steps is not None:
        _check(bool(args.validation_data or args.validation_stories), "validation_steps", args.validation_steps,
               "needs validation_data and/or validation_stories")
    return args


def parse_args(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) over the values of ``--config``; the command line wins.

    Raises :class:`ConfigError` for a bad config file or value (before any model or data is touched).
    """
    parser = parser or build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        parser.set_defaults(**load_config_file(known.config, parser))
    args = parser.parse_args(argv)
    return validate_args(args)
