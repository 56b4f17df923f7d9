"""Build the embedded ShapeStory demo model with the project's own trainer (2 CPU cores: each stage under 150 min).

    # 0. the frozen tiny VAE / T5 / tokenizer: training/shapestory/train_vae.py and train_text.py (shipped assets)
    python -m training.shapestory_demo init --out runs/shapestory/model           # PixArt init + shipped assets
    python -m training.shapestory_demo data --out runs/shapestory/data --train 3000 --val 32 \
        --second-character 0.25 --third-character 0                               # stage-1 stories (16 s)
    python -m training.shapestory_demo data --out runs/shapestory/data2 --train 4000 --val 32 --seed 7  # stage 2
    python -m training.shapestory_demo data --out runs/shapestory/data3 --train 4000 --val 32 --seed 11 \
        --second-character 0.7 --third-character 0.5                              # stage 2b: more characters
    python -m training.shapestory_demo data --out runs/shapestory/data4 --train 4000 --val 32 --seed 13 \
        --second-character 0.7 --third-character 0.5                              # stage 2d: fresh stories
    python -m training.shapestory_demo data --out runs/shapestory/data5 --train 4000 --val 32 --seed 17 \
        --second-character 0.7 --third-character 0.5                              # stage 2e: fresh again
    python -m training.shapestory_demo data --out runs/shapestory/data6 --train 3000 --val 32 --seed 23 \
        --second-character 0.25 --third-character 0                               # stage 1b: the stage-1 mix
    python -m training.shapestory_demo data --out runs/shapestory/data7 --train 4000 --val 32 --seed 19 \
        --second-character 0.7 --third-character 0.5                              # stage 2f: fresh crowded
    python -m training.shapestory_demo data --out runs/shapestory/data8 --train 4000 --val 32 --seed 29 \
        --second-character 0.25 --third-character 0                               # stage 1c: the stage-1 mix
    python -m training.shapestory_demo data --out runs/shapestory/data9 --train 3000 --val 32 --seed 31 \
        --second-character 0.7 --third-character 0.5                              # stage 2g: fresh crowded
    python -m training.shapestory_demo data --out runs/shapestory/data15 --train 3000 --val 32 --seed 81 \
        --second-character 0 --third-character 0 --min-box 0.65 --max-box 0.9     # stage 1f: large lone characters
    python -m training.shapestory_demo data --out runs/shapestory/data16 --train 3000 --val 32 --seed 83 \
        --second-character 0 --third-character 0 --min-box 0.65 --max-box 0.9     # stage 1f: more of them
    python -m training.shapestory_demo data --out runs/shapestory/data13 --train 3000 --val 32 --seed 63 \
        --second-character 0.25 --third-character 0                               # stage 1f, 1g: the stage-1 mix
    python -m training.shapestory_demo data --out runs/shapestory/data17 --train 3000 --val 32 --seed 89 \
        --second-character 0 --third-character 0 --min-box 0.4 --max-box 0.9      # stage 1g: lone, every size
    python -m training.shapestory_demo data --out runs/shapestory/data14 --train 3000 --val 32 --seed 71 \
        --second-character 0.7 --third-character 0.5                              # stage 2j, 2k: fresh crowded
    python -m training.shapestory_demo data --out runs/shapestory/data18 --train 3000 --val 32 --seed 97 \
        --second-character 0.7 --third-character 0.5                              # stage 2l: more of them
    python training/cache.py --config training/configs/shapestory_stage1.yaml      # VAE/T5 features (45-90 s each)
    python training/cache.py --config training/configs/shapestory_stage2.yaml
    python training/cache.py --config training/configs/shapestory_stage2b.yaml
    python training/cache.py --config training/configs/shapestory_stage2d.yaml
    python training/cache.py --config training/configs/shapestory_stage2e_joint.yaml
    python training/cache.py --config training/configs/shapestory_stage1b.yaml
    python training/cache.py --config training/configs/shapestory_stage2f_joint.yaml
    python training/cache.py --config training/configs/shapestory_stage1c.yaml
    python training/cache.py --config training/configs/shapestory_stage2g.yaml
    python training/cache.py --config training/configs/shapestory_stage1f.yaml
    python training/cache.py --config training/configs/shapestory_stage1g.yaml
    python training/cache.py --config training/configs/shapestory_stage2j.yaml     # stage 2k reads the same cache
    python training/cache.py --config training/configs/shapestory_stage2l.yaml
    # both stages: one process per core (gloo data parallel), 1 thread each
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage1.yaml                           # global branch
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2.yaml                           # subject branch (box embedding)
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2b.yaml                          # ... continued on 2-3 characters
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2c.yaml                          # ... annealed (cosine to 0)
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2d.yaml                          # ... again, on fresh stories
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2e_joint.yaml                    # both branches, jointly
    # issue 24 (layout off / the plain global branch): stages 1b and 2f one process on one core, 1c and 2g two
    OMP_NUM_THREADS=1 python training/train.py --config training/configs/shapestory_stage1b.yaml  # global branch
    OMP_NUM_THREADS=1 python training/train.py --config training/configs/shapestory_stage2f_joint.yaml  # joint
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage1c.yaml                          # global branch, annealed alone
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2g.yaml                          # subject branch on it, frozen
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage1f.yaml                          # global branch, large characters
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage1g.yaml                          # ... back to every size
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2j.yaml                          # subject branch on 1f, frozen
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2k.yaml                          # ... on 1g
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py \
        --config training/configs/shapestory_stage2l.yaml                          # ... on twice the stories
    # the VAE's decoder alone, in three rounds, each from the one before (the encoder stays bit for bit)
    python -m training.shapestory.train_vae --out runs/shapestory/vae_ft --init runs/shapestory/model/vae \
        --decoder-only --latent-noise 0.2 --multi-character-stories 800 --steps 3000 --lr 1e-3
    python -m training.shapestory.train_vae --out runs/shapestory/vae_ft2 --init runs/shapestory/vae_ft \
        --decoder-only --latent-noise 0.2 --train-stories 3000 --multi-character-stories 2000 --steps 12000 \
        --batch 32 --lr 5e-4 --seed 1
    python -m training.shapestory.train_vae --out runs/shapestory/vae_ft3 --init runs/shapestory/vae_ft2 \
        --decoder-only --latent-noise 0.2 --train-stories 3000 --multi-character-stories 2000 --steps 12000 \
        --batch 32 --lr 3e-4 --seed 2
    python -m training.shapestory_demo assemble --model runs/shapestory/model --vae runs/shapestory/vae_ft3 \
        --stage1 runs/shapestory/stage1g --stage2 runs/shapestory/stage2l \
        --out lay2story_core/assets/shapestory/pipeline
    python -m bench.shapestory --grid docs/shapestory_grid.png                    # does it work? (ablations, bars)

Times and curves: training/shapestory/README.md. The demo transformer is PixArt's architecture at toy size
(``DEMO_TRANSFORMER``): 64 px frames, a 4x VAE (16x16 latents), patch 2 (64 tokens per frame), predicting v; the
subject branch adds a box embedding (where each token sits in its box), without which it did not learn shapes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("training.shapestory_demo")

DEMO_TRANSFORMER = dict(
    num_layers=8, num_attention_heads=4, attention_head_dim=48, in_channels=4, out_channels=8, patch_size=2,
    sample_size=16, cross_attention_dim=192, caption_channels=128, use_additional_conditions=False,
)


# Sampling settings written into the demo's lay2story.json (the pipeline's defaults). Guidance swept on held-out
# stories at 16 steps (6 per character count, seeds 3000 and 5000; /tmp-side sweep, numbers in the README): CFG 2
# beats 3 and 4.5 on box success, shape, pattern and consistency (4.5 over-saturates small characters into wrong
# shapes; 1-1.5 loses shape); 32 steps measured no better than 16.
DEMO_SAMPLING = {"num_inference_steps": 16, "guidance_scale": 2.0}
# The demo folder's scheduler (its default sampler): Euler ancestral beat DPM-Solver++ at the same 16 steps and CFG 2
# on both training and held-out characters (seed-3000 stories, 8 per count; numbers in the README).
DEMO_SCHEDULER = "euler_a"
# Auto layout for the demo's users (lay2story.json "auto_layout": layout off draws each character in a box the model
# chose; lay2story_core.pipelines.auto_layout). Swept on held-out stories the bench does not use (seed 3000, 8 per
# character count; numbers in training/shapestory/README.md): drafting 3 of 16 steps at threshold 0.6 beat 4-5 steps
# and 0.5-0.7; square boxes with a side of 0.4-0.65 of the frame, as the demo was trained on (smaller characters lose
# their outline in its 4x VAE: identity anywhere 0.65 -> 0.82 with the bounds).
DEMO_AUTO_LAYOUT = {"draft": 0.1875, "threshold": 0.6, "aspect": 1.0, "min_size": 0.4, "max_size": 0.65}


def demo_trained_for():
    """What the demo's lay2story.json declares it was trained for: ShapeStory's frame size and caption words (a story
    asking for another size or using other words gets one warning line, lay2story_core.pipelines.trained_for)."""
    from lay2story_core.pipelines.trained_for import TrainedFor
    from lay2story_core.shapestory import ShapeStoryConfig
    from lay2story_core.shapestory.vocab import caption_words

    size = ShapeStoryConfig().size
    return TrainedFor(size, size, caption_words())


def init_model(out: Path, seed: int = 0, vae: Path | None = None, prediction_type: str = "v_prediction") -> Path:
    """A pipeline folder: random-initialised demo PixArt (PixArt's initialisation) + the shipped ShapeStory VAE (or
    ``vae``), T5 encoder and tokenizer, and a scheduler whose ``prediction_type`` the trainer must be given too (the
    demo predicts v: with epsilon the toy model learned the high-noise steps, where scenes and colours are decided,
    several times slower; see training/shapestory/README.md)."""
    import torch
    from diffusers import PixArtTransformer2DModel

    from lay2story_core.pipelines import default_scheduler
    from lay2story_core.shapestory import TEXT_ENCODER_DIR, TOKENIZER_DIR, VAE_DIR

    out.mkdir(parents=True, exist_ok=True)
    from training.modeling import initialize_pixart_

    torch.manual_seed(seed)
    initialize_pixart_(PixArtTransformer2DModel(**DEMO_TRANSFORMER)).save_pretrained(out / "transformer")
    for name, src in (("vae", vae or VAE_DIR), ("text_encoder", TEXT_ENCODER_DIR), ("tokenizer", TOKENIZER_DIR)):
        if (out / name).exists():
            shutil.rmtree(out / name)
        shutil.copytree(src, out / name)
    scheduler = default_scheduler()
    type(scheduler).from_config(scheduler.config, prediction_type=prediction_type).save_pretrained(out / "scheduler")
    return out


def write_data(out: Path, train: int, val: int, seed: int, identity_dropout: float = 0.3,
               second_character: float = 0.35, third_character: float = 0.35, min_box: float | None = None,
               max_box: float | None = None) -> None:
    """Training stories (train characters, ``identity_dropout`` of the characters named only in part, a second
    character in ``second_character`` of the stories, a third in ``third_character`` of those; a lone character's
    box side drawn from ``[min_box, max_box]`` of the frame, ShapeStory's default when None) and validation stories
    (held-out characters, fully named, same box sizes)."""
    from lay2story_core.shapestory import ShapeStoryConfig, write_dataset

    sizes = {k: v for k, v in (("min_box", min_box), ("max_box", max_box)) if v is not None}
    config = ShapeStoryConfig(identity_dropout=identity_dropout, second_character_prob=second_character,
                              third_character_prob=third_character, **sizes)
    write_dataset(out / "train", train, split="train", seed=seed, config=config)
    write_dataset(out / "val", val, split="test", seed=seed + 1, config=ShapeStoryConfig(**sizes))


def check_same_encoder(vae: Path, model_vae: Path) -> None:
    """``vae`` (a decoder fine-tune) must encode exactly as ``model_vae``, whose latents both stages learned."""
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.safetensors"
    ours, theirs = load_file(str(vae / name)), load_file(str(model_vae / name))
    keys = [k for k in theirs if k.startswith(("encoder.", "quant_conv."))]
    if any(k not in ours or not ours[k].equal(theirs[k]) for k in keys):
        raise ValueError(f"vae: {os.fspath(vae)!r} encodes differently from {os.fspath(model_vae)!r}, whose latents "
                         "the model was trained on (only a decoder fine-tune may replace it)")
    for key in ("latents_mean", "latents_std", "scaling_factor"):
        a, b = (json.loads((v / "config.json").read_text()).get(key) for v in (vae, model_vae))
        if a != b:
            raise ValueError(f"vae: {key} {a!r} differs from the model's {b!r}")


def assemble(model: Path, stage1: Path, stage2: Path, out: Path, ema: bool = True, vae: Path | None = None) -> Path:
    """The demo pipeline folder: stage-1 global branch (``stage2``'s when that run fine-tuned it too) + stage-2
    subject branch + the frozen components (``vae``: a decoder fine-tune of the model's VAE, see
    :func:`check_same_encoder`)."""
    from lay2story_core.loading.folder import EMA_CONFIG_KEYS
    from lay2story_core.pipelines import make_scheduler
    from lay2story_core.pipelines.auto_layout import AutoLayout
    from lay2story_core.pipelines.loading import load_story_pipeline, write_manifest
    from lay2story_core.pipelines.manifest import SamplingDefaults

    if vae is not None:
        check_same_encoder(vae, model / "vae")

    staging = out.with_name(out.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)

    def pick(folder: Path, name: str) -> Path:
        return folder / f"{name}_ema" if ema and (folder / f"{name}_ema").is_dir() else folder / name

    # a stage-2 joint fine-tune (--train_transformer) exports the global branch it trained: it replaces stage 1's
    joint = (stage2 / "transformer").is_dir()
    if joint:
        logger.info("%s has a jointly fine-tuned global branch: using it in place of %s's", stage2, stage1)
    shutil.copytree(pick(stage2 if joint else stage1, "transformer"), staging / "transformer")
    shutil.copytree(pick(stage2, "subject_branch"), staging / "subject_branch")
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(vae if name == "vae" and vae is not None else model / name, staging / name)
    for folder in staging.iterdir():  # keep only what loads: config + weights (+ tokenizer files)
        for extra in folder.glob("shapestory_training.json"):
            extra.unlink()
    # EMA exports carry the EMA's own settings in their config; a from_pretrained/save_pretrained round trip (the
    # trainer's exports, a decoder fine-tune) records where it was loaded from
    for config_path in sorted(staging.glob("*/config.json")):
        config = json.loads(config_path.read_text())
        kept = {k: v for k, v in config.items() if k not in EMA_CONFIG_KEYS and k != "_name_or_path"}
        if kept != config:
            config_path.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    # lay2story.json and model_index.json as save_pretrained writes them, from the pipeline the folder loads as
    pipe = load_story_pipeline(staging)
    pipe.model_name, pipe.sampling_defaults = "ShapeStory demo", SamplingDefaults.from_dict(DEMO_SAMPLING)
    pipe.trained_for = demo_trained_for()
    pipe.auto_layout = AutoLayout.from_dict(DEMO_AUTO_LAYOUT)
    pipe.scheduler = make_scheduler(DEMO_SCHEDULER, pipe.scheduler.config)
    shutil.rmtree(staging / "scheduler")
    pipe.scheduler.save_pretrained(staging / "scheduler")
    write_manifest(pipe, staging)
    pipe.save_config(staging)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def main(argv: list[str] | None = None) -> int:
    from lay2story_core.shapestory import ShapeStoryConfig

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="write the initial pipeline folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae", type=Path, default=None, help="VAE folder (default: the shipped ShapeStory VAE)")
    p.add_argument("--prediction-type", default="v_prediction", choices=("epsilon", "v_prediction"))
    p = sub.add_parser("data", help="write the ShapeStory training and validation sets")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--val", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity-dropout", type=float, default=0.3,
                   help="share of training characters whose texts leave attributes out (the consistency protocol)")
    p.add_argument("--second-character", type=float, default=0.35, help="share of stories with a second character")
    p.add_argument("--third-character", type=float, default=0.35,
                   help="share of two-character stories with a third character")
    shapes = ShapeStoryConfig()  # the box-size defaults live there
    p.add_argument("--min-box", type=float, default=shapes.min_box,
                   help=f"smallest box side of a lone character, a share of the frame (default {shapes.min_box})")
    p.add_argument("--max-box", type=float, default=shapes.max_box,
                   help=f"largest box side of a lone character, a share of the frame (default {shapes.max_box})")
    p = sub.add_parser("assemble", help="put the trained parts together into a pipeline folder")
    p.add_argument("--model", type=Path, required=True, help="the init folder (frozen components)")
    p.add_argument("--stage1", type=Path, required=True, help="stage-1 output_dir")
    p.add_argument("--stage2", type=Path, required=True, help="stage-2 output_dir")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA ones")
    p.add_argument("--vae", type=Path, default=None,
                   help="a decoder fine-tune of the model's VAE (train_vae --init --decoder-only; same encoder)")
    args = parser.parse_args(argv)
    if args.command == "init":
        logger.info("wrote %s", init_model(args.out, args.seed, args.vae, args.prediction_type))
    elif args.command == "data":
        try:
            write_data(args.out, args.train, args.val, args.seed, args.identity_dropout, args.second_character,
                       args.third_character, args.min_box, args.max_box)
        except ValueError as err:  # ShapeStoryConfig names the field and the value
            parser.error(str(err))
    else:
        logger.info("wrote %s", assemble(args.model, args.stage1, args.stage2, args.out, ema=not args.no_ema,
                                         vae=args.vae))
    return 0


if __name__ == "__main__":
    sys.exit(main())
