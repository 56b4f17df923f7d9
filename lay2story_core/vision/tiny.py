"""Tiny random Grounding DINO and CLIP folders, for tests and offline smoke runs (no hub, no downloads).

They are the real transformers classes at toy sizes, saved with ``save_pretrained`` exactly like the real folders, so
:class:`~lay2story_core.vision.GroundingDinoDetector` and :class:`~lay2story_core.vision.ClipEmbedder` load them
through the same code path. Their outputs are random: use thresholds of 0 (or patch scores) in tests.
"""

from __future__ import annotations

import os

import torch

__all__ = ["TINY_WORDS", "save_tiny_clip", "save_tiny_grounding_dino"]

TINY_WORDS = ("the", "main", "character", "a", "an", "person", "cat", "dog", "red", "blue", "green", "square",
              "circle", "man", "woman", "girl", "boy", "animal", "cartoon", "hero")

# transformers' Grounding DINO hard-codes the bert-base-uncased ids of [CLS], [SEP], "." and "?".
_BERT_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
_BERT_VOCAB_SIZE = 1100


def _bert_tokenizer():
    from transformers import BertTokenizer

    vocab = [f"[unused{i}]" for i in range(_BERT_VOCAB_SIZE)]
    for index, token in _BERT_SPECIAL.items():
        vocab[index] = token
    for k, word in enumerate(TINY_WORDS):
        vocab[200 + k] = word
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


def save_tiny_grounding_dino(folder: str | os.PathLike, seed: int = 0, image_size: int = 96) -> str:
    """Writes a ~0.2M-parameter ``GroundingDinoForObjectDetection`` + processor folder; returns its path.

    ``image_size`` (the processor's shortest edge) must stay above 64: the extra feature level is 1/64 of the image
    and GroupNorm fails on a 1x1 map of a single image."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino import GroundingDinoImageProcessorPil

    path = os.fspath(folder)
    backbone = SwinConfig(image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 1, 1], window_size=4, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=_BERT_VOCAB_SIZE, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, num_queries=10, encoder_layers=1, decoder_layers=2, d_model=32,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        max_text_len=32, encoder_n_points=2, decoder_n_points=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": image_size,
                                                             "longest_edge": image_size * 3 // 2}),
        tokenizer=_bert_tokenizer(),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_clip(folder: str | os.PathLike, seed: int = 0, image_size: int = 32, projection_dim: int = 16) -> str:
    """Writes a tiny ``CLIPModel`` + ``CLIPProcessor`` folder (character-level tokenizer); returns its path."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = os.fspath(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789.,":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    model.save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path
