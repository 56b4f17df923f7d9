"""Tiny components of the real classes, shared by tests (importable: ``tests`` is on pytest's pythonpath)."""

from __future__ import annotations

import torch

TINY_PIXART = {
    # PixArt-alpha 512 layout at toy size: no micro-conditions
    "alpha512": dict(sample_size=8, num_layers=4, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                     out_channels=8, cross_attention_dim=16, caption_channels=12, patch_size=2),
    # PixArt-alpha 1024-MS: resolution/aspect-ratio conditions need sample_size 128 and a width divisible by 3
    "alpha1024ms": dict(sample_size=128, num_layers=4, num_attention_heads=2, attention_head_dim=12, in_channels=4,
                        out_channels=8, cross_attention_dim=24, caption_channels=12, patch_size=2,
                        use_additional_conditions=True),
    # PixArt-Sigma 1024: no micro-conditions, interpolation scale 2
    "sigma": dict(sample_size=128, num_layers=4, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                  out_channels=8, cross_attention_dim=16, caption_channels=12, patch_size=2,
                  use_additional_conditions=False, interpolation_scale=2),
}


def make_pixart(kind: str = "alpha512", seed: int = 0):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(**TINY_PIXART[kind]).eval()



TINY_WORDS = (
    "a the red blue green fox cat hero villain in on at under reading tree bridge walking small big book sitting "
    "standing running sky grass night indoor top left right bottom scarf smiling sad"
).split()


def make_tokenizer():
    """A tiny offline T5 tokenizer (unigram vocab from a word list; characters as fall-back pieces)."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i * 0.01) for i, w in enumerate(TINY_WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,.-'0123456789"] + [("\u2581", -4.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_t5(d_model: int = 12, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(TINY_WORDS) + 64, d_model=d_model, d_kv=4, d_ff=24, num_layers=2, num_heads=3,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=8)
    return T5EncoderModel(config).eval()


def make_vae(seed: int = 0):
    """A tiny AutoencoderKL with 2 levels (8x8 latents for 16x16 images)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                         norm_num_groups=4, layers_per_block=1, sample_size=16).eval()


def make_pipeline(kind: str = "alpha512", subject_branch: bool = True, trained: bool = True, seed: int = 0):
    """A tiny StoryPipeline (PixArt 4 blocks, T5 2 layers, VAE 2x) whose subject branch has non-zero outputs."""
    from lay2story_core.models import SubjectBranch
    from lay2story_core.pipelines import StoryPipeline

    pixart = make_pixart(kind, seed)
    branch = None
    if subject_branch:
        branch = SubjectBranch.from_transformer(pixart)
        if trained:
            gen = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                for block in branch.blocks:
                    block.proj_out.weight.copy_(torch.randn(block.proj_out.weight.shape, generator=gen) * 0.3)
    return StoryPipeline(tokenizer=make_tokenizer(), text_encoder=make_t5(pixart.config.caption_channels),
                         vae=make_vae(seed), transformer=pixart, subject_branch=branch)


def pixart_inputs(pixart, frames=2, h=8, w=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cfg = pixart.config
    latents = torch.randn(frames, cfg.in_channels, h, w, generator=gen)
    text = torch.randn(frames, 5, cfg.caption_channels, generator=gen)
    mask = torch.ones(frames, 5)
    mask[:, 4] = 0
    t = torch.randint(0, 1000, (frames,), generator=gen)
    added = None
    if pixart.use_additional_conditions:
        added = {"resolution": torch.tensor([[h * 8.0, w * 8.0]] * frames),
                 "aspect_ratio": torch.tensor([[h / w]] * frames)}
    return latents, text, mask, t, added


def subject_inputs(pixart, frames, h, w, coverage="box", refs=0, seed=1):
    """One-slot-per-image :class:`SubjectInputs` (a half-size box, or the whole image) with random captions."""
    from lay2story_core.attention import SubjectSlots
    from lay2story_core.models import SubjectInputs

    gen = torch.Generator().manual_seed(seed)
    p = pixart.config.patch_size
    gh, gw = h // p, w // p
    masks = torch.zeros(frames + refs, gh, gw, dtype=torch.bool)
    if coverage == "full":
        masks[:] = True
    else:
        for i in range(frames + refs):
            masks[i, i % gh: i % gh + max(1, gh // 2), : max(1, gw // 2)] = True
    slots = SubjectSlots.one_per_image(masks.view(frames + refs, -1))
    captions = torch.randn(frames + refs, 4, pixart.config.caption_channels, generator=gen)
    ref_kwargs = {}
    if refs:
        ref_kwargs = dict(reference_images=torch.randn(refs, 4, h, w, generator=gen),
                          reference_image_masks=torch.ones(refs, 1, h, w))
    return SubjectInputs(
        slots=slots, caption_embeds=captions, caption_mask=torch.ones(frames + refs, 4),
        reference_latents=torch.randn(frames, 4, h, w, generator=gen), reference_masks=torch.ones(frames, 1, h, w),
        **ref_kwargs,
    )


def randomise_branch_outputs(branch):
    """Give a zero-initialised subject branch non-zero outputs (an untrained branch changes nothing)."""
    with torch.no_grad():
        for block in branch.blocks:
            block.proj_out.weight.normal_(std=0.2)
