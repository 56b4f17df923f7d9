"""T5 tokenizer loader: spiece.model, tokenizer.json (bare and ComfyUI-style), pipeline folders, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm

from lay2story_core.loading import CorruptFileError, ModelNotFoundError, load_t5_tokenizer

TEXT = "a red fox meets a small cat on the hill"
PIECES = 32


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    """A tiny SentencePiece unigram model with T5's special ids (pad 0, eos 1, unk 2)."""
    root = tmp_path_factory.mktemp("spm")
    corpus = root / "corpus.txt"
    lines = ["the red fox jumps over the lazy dog", "a small cat sits on the hill", "story frame hero meets friend"]
    corpus.write_text("\n".join(lines * 40))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(root / "spiece"), vocab_size=PIECES, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )  # fmt: skip
    return root / "spiece.model"


def expected_ids(spiece):
    return spm.SentencePieceProcessor(model_file=str(spiece)).encode(TEXT) + [1]


def check(tokenizer, spiece, extra_ids=100):
    assert tokenizer(TEXT).input_ids == expected_ids(spiece)
    assert len(tokenizer) == PIECES + extra_ids
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    padded = tokenizer([TEXT, "fox"], padding="max_length", max_length=24, truncation=True).input_ids
    assert all(len(row) == 24 for row in padded) and padded[1][-1] == 0


def test_spiece_folder_and_file(spiece, tmp_path):
    (tmp_path / "tok").mkdir()
    shutil.copy(spiece, tmp_path / "tok" / "spiece.model")
    check(load_t5_tokenizer(tmp_path / "tok"), spiece)
    shutil.copy(spiece, tmp_path / "t5-v1_1.model")
    check(load_t5_tokenizer(tmp_path / "t5-v1_1.model"), spiece)


def test_comfyui_style_folder(spiece, tmp_path):
    """ComfyUI's comfy/text_encoders/t5_tokenizer: tokenizer.json + tokenizer_config.json, 100 sentinels."""
    (tmp_path / "spm").mkdir()
    shutil.copy(spiece, tmp_path / "spm" / "spiece.model")
    load_t5_tokenizer(tmp_path / "spm").save_pretrained(tmp_path / "saved")
    folder = tmp_path / "t5_tokenizer"
    folder.mkdir()
    shutil.copy(tmp_path / "saved" / "tokenizer.json", folder / "tokenizer.json")
    config = {
        "tokenizer_class": "T5Tokenizer", "extra_ids": 100, "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "model_max_length": 512, "legacy": False,
        "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)],
    }  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    check(load_t5_tokenizer(folder), spiece)
    check(load_t5_tokenizer(folder / "tokenizer.json"), spiece)

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folder / "tokenizer.json", bare / "tokenizer.json")  # sentinels must not be added twice
    check(load_t5_tokenizer(bare), spiece)


def test_pipeline_folder(spiece, tmp_path):
    (tmp_path / "pipe" / "tokenizer").mkdir(parents=True)
    shutil.copy(spiece, tmp_path / "pipe" / "tokenizer" / "spiece.model")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    check(load_t5_tokenizer(tmp_path / "pipe"), spiece)
    check(load_t5_tokenizer(tmp_path / "pipe", subfolder="tokenizer"), spiece)


def test_bad_input(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        load_t5_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"empty: holds no tokenizer files"):
        load_t5_tokenizer(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="broken"):
        load_t5_tokenizer(tmp_path / "broken")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "spiece.model").write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(CorruptFileError, match="garbage"):
        load_t5_tokenizer(tmp_path / "garbage")
