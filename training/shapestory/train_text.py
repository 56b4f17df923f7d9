"""Build the ShapeStory tokenizer (a sentencepiece unigram model trained on ShapeStory captions, loaded as a T5
tokenizer) and the tiny frozen T5 text encoder.

    nice -n 10 .venv/bin/python -m training.shapestory.train_text \
        --tokenizer-out lay2story_core/assets/shapestory/pipeline/tokenizer \
        --encoder-out lay2story_core/assets/shapestory/pipeline/text_encoder

Tokenizer: the corpus is every identity x scene global caption, every identity's subject captions over a grid of
boxes, two-character captions, and one line of all ASCII letters, digits and punctuation (so any typed text
encodes without <unk> for those). sentencepiece 0.2's seed-piece miner finds almost no whole words in such a small,
repetitive corpus, so the whole words are given as seed pieces (``seed_sentencepieces_file``); the unigram EM then
scores them and the characters. Ids follow T5: pad 0, eos 1, unk 2, no extra ids.

Text encoder: a ``T5EncoderModel`` (T5 v1.1 style, gated-GELU) initialised at random with ``--seed`` and frozen. The
denoiser trains its own caption projection (as PixArt does), so the encoder only has to give different captions
different token features; ``--seed`` makes it reproducible. How different is measured and saved in
``shapestory_training.json`` (token-level: relative change of the features at the differing word and at the other
words; sequence-level: cosine of mean-pooled features).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import string
import sys
import tempfile
import time

import numpy as np
import sentencepiece as spm
import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from lay2story_core.shapestory.vocab import (
    COLOURS,
    PARTIAL_FORMS,
    PATTERNS,
    SHAPES,
    CharacterSpec,
    all_character_specs,
    all_scene_specs,
    identity_text,
    scene_prompt,
    subject_caption,
)

from .common import save_folder_atomic

__all__ = ["build_text_encoder", "caption_corpus", "embedding_report", "main", "train_tokenizer"]

logger = logging.getLogger(__name__)
MAX_LENGTH = 120  # PixArt-alpha's caption length


def caption_corpus() -> list[str]:
    """Every caption form the generator writes, over the whole vocabulary (deterministic)."""
    specs = all_character_specs()
    scenes = all_scene_specs()
    grid = [(x, y, x + s, y + s) for s in (0.3, 0.45, 0.6) for x in (0.0, 0.2, 0.4) for y in (0.0, 0.2, 0.4)
            if x + s <= 1 and y + s <= 1]
    lines = []
    for k, spec in enumerate(specs):
        lines += [f"{identity_text(spec)}, {scene_prompt(scene)}" for scene in scenes]
        lines += [subject_caption(spec, box) for box in grid]
        for form in PARTIAL_FORMS:  # identity dropout: texts that leave attributes out
            lines.append(f"{identity_text(spec, form)}, {scene_prompt(scenes[(k + 3) % len(scenes)])}")
            lines.append(subject_caption(spec, grid[k % len(grid)], form))
        other = specs[(7 * k + 13) % len(specs)]
        lines.append(f"{identity_text(spec)}, {identity_text(other)}, {scene_prompt(scenes[k % len(scenes)])}")
    return lines


def _alphabet_line() -> str:
    return " ".join(string.ascii_letters + string.digits + string.punctuation)


def train_tokenizer(folder: str, lines: list[str]) -> None:
    """Train the unigram model into ``folder/spiece.model``."""
    words = collections.Counter(w for line in lines for w in line.replace(",", " ,").split())
    seeds = os.path.join(folder, "seeds.tsv")
    with open(seeds, "w", encoding="utf-8") as f:
        for word, count in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"\u2581{word}\t{count}\n")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*lines, _alphabet_line()]),
        model_prefix=os.path.join(folder, "spiece"),
        model_type="unigram",
        vocab_size=256,
        hard_vocab_limit=False,
        character_coverage=1.0,
        seed_sentencepieces_file=seeds,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )


def build_text_encoder(vocab_size: int, d_model: int, layers: int, heads: int, seed: int) -> T5EncoderModel:
    """A T5 v1.1-style encoder with random weights from ``seed``, frozen."""
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=2 * d_model,
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval().requires_grad_(False)


@torch.no_grad()
def _encode(tokenizer, encoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer(texts, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    hidden = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return hidden, batch.attention_mask


@torch.no_grad()
def embedding_report(tokenizer, encoder) -> dict:
    """How far apart captions that differ in one attribute are, at token level and pooled."""
    rng = np.random.default_rng(0)
    specs = all_character_specs()
    rows = collections.defaultdict(list)
    changes = {
        "colour": lambda s: CharacterSpec(s.shape, COLOURS[(COLOURS.index(s.colours) + 1) % len(COLOURS)].name,
                                          s.pattern),
        "shape": lambda s: CharacterSpec(SHAPES[(SHAPES.index(s.shape) + 1) % len(SHAPES)], s.colour, s.pattern),
        "pattern": lambda s: CharacterSpec(s.shape, s.colour,
                                           PATTERNS[1 + PATTERNS.index(s.pattern) % (len(PATTERNS) - 1)]),
    }
    scene = scene_prompt(all_scene_specs()[0])
    for k in rng.choice(len(specs), size=64, replace=False):
        spec = specs[int(k)]
        for what, change in changes.items():
            texts = [f"{identity_text(spec)}, {scene}", f"{identity_text(change(spec))}, {scene}"]
            ids = tokenizer(texts).input_ids
            if len(ids[0]) != len(ids[1]):  # e.g. solid -> striped adds a word: compare pooled only
                hidden, mask = _encode(tokenizer, encoder, texts)
                pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                rows[f"{what}_pooled_cosine"].append(float(torch.cosine_similarity(pooled[0], pooled[1], dim=0)))
                continue
            hidden, mask = _encode(tokenizer, encoder, texts)
            n = int(mask[0].sum())
            a, b = hidden[0, :n], hidden[1, :n]
            diff = np.asarray(ids[0]) != np.asarray(ids[1])
            rel = ((a - b).norm(dim=-1) / a.norm(dim=-1)).numpy()
            rows[f"{what}_changed_token_rel_diff"].append(float(rel[diff].mean()))
            rows[f"{what}_other_tokens_rel_diff"].append(float(rel[~diff].mean()))
            pooled = a.mean(0), b.mean(0)
            rows[f"{what}_pooled_cosine"].append(float(torch.cosine_similarity(*pooled, dim=0)))
    texts = [f"{identity_text(s)}, {scene}" for s in specs]
    hidden, mask = _encode(tokenizer, encoder, texts)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    flat = (hidden * mask[..., None]).flatten(1)
    distances = torch.cdist(flat, flat) + torch.eye(len(texts)) * 1e9
    report = {key: round(float(np.mean(v)), 4) for key, v in sorted(rows.items())}
    report["identities"] = len(texts)
    report["identities_min_token_feature_distance"] = round(float(distances.min()), 4)
    report["token_feature_rms"] = round(float(hidden[mask.bool()].pow(2).mean().sqrt()), 4)
    cos = torch.cosine_similarity(pooled[:, None], pooled[None], dim=-1)
    report["identities_mean_pooled_cosine"] = round(float(cos[~torch.eye(len(texts), dtype=torch.bool)].mean()), 4)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer-out", required=True)
    parser.add_argument("--encoder-out", required=True)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    t0 = time.monotonic()
    lines = caption_corpus()
    with tempfile.TemporaryDirectory() as work:
        train_tokenizer(work, lines)
        sp = spm.SentencePieceProcessor(model_file=os.path.join(work, "spiece.model"))
        tokenizer = T5Tokenizer.from_pretrained(work, extra_ids=0, model_max_length=MAX_LENGTH)
        # transformers 5 rebuilds the tokenizer from the .model: check it segments exactly like sentencepiece.
        probe = [*lines[:: max(1, len(lines) // 500)], "The Quick brown fox, 42 zebras!"]
        for text in probe:
            if tokenizer(text).input_ids != [*sp.encode(text), 1]:
                raise RuntimeError(f"T5Tokenizer and sentencepiece disagree on {text!r}")
        tokenizer_seconds = time.monotonic() - t0

        def write_tokenizer(folder: str) -> None:
            tokenizer.save_pretrained(folder)
            # transformers 5 writes only tokenizer.json; keep the sentencepiece model too, for sentencepiece users.
            shutil.copyfile(os.path.join(work, "spiece.model"), os.path.join(folder, "spiece.model"))

        save_folder_atomic(args.tokenizer_out, write_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_out, local_files_only=True)

    vocab = -(-len(tokenizer) // 8) * 8  # rounded up to a multiple of 8; unused rows are never looked up
    encoder = build_text_encoder(vocab, args.d_model, args.layers, args.heads, args.seed)
    report = {
        "command": " ".join(["python -m training.shapestory.train_text", *(sys.argv[1:] if argv is None else argv)]),
        "tokenizer_pieces": len(tokenizer),
        "tokenizer_seconds": round(tokenizer_seconds, 2),
        "corpus_lines": len(lines),
        "encoder": f"random init (frozen), seed {args.seed}",
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "embedding": embedding_report(tokenizer, encoder),
        "total_seconds": round(time.monotonic() - t0, 2),
        "torch": torch.__version__,
    }

    def write(folder: str) -> None:
        encoder.save_pretrained(folder, safe_serialization=True)
        with open(os.path.join(folder, "shapestory_training.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)

    save_folder_atomic(args.encoder_out, write)
    logger.info("saved: %s", json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
