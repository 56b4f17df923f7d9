"""TransformersCaptioner's message building and reply parsing, with a stand-in for the transformers pipeline (no
vision-language weights are available offline)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from training.data.captions import CaptionError
from training.data.transformers_captioner import TransformersCaptioner

GOOD = {"identity": "a red fox", "frames": [{"prompt": "it runs", "subject": "ears up"}]}


class FakePipe:
    def __init__(self, reply):
        self.reply = reply
        self.calls = []

    def __call__(self, text, **kwargs):
        self.calls.append((text, kwargs))
        return [{"generated_text": self.reply}]


def _captioner(reply):
    captioner = TransformersCaptioner.__new__(TransformersCaptioner)
    captioner.pipe = FakePipe(reply)
    captioner.max_new_tokens = 64
    captioner.max_image_side = 32
    return captioner


def test_builds_a_chat_message_and_parses_the_reply():
    captioner = _captioner("Here you go:\n```json\n" + json.dumps(GOOD) + "\n```")
    caps = captioner.caption([Image.new("RGB", (100, 50))], [(0.1, 0.1, 0.5, 0.5)])
    assert caps.identity == "a red fox" and caps.frame_prompts == ("it runs",)
    [(messages, kwargs)] = captioner.pipe.calls
    [message] = messages
    assert message["role"] == "user"
    image, text = message["content"]
    assert image["type"] == "image" and max(image["image"].size) == 32  # downscaled, box drawn on a copy
    assert text["type"] == "text" and "frame 1: [0.100, 0.100, 0.500, 0.500]" in text["text"]
    assert kwargs["max_new_tokens"] == 64 and kwargs["return_full_text"] is False


def test_chat_style_reply_and_bad_reply():
    chat = [{"role": "user", "content": "..."}, {"role": "assistant", "content": json.dumps(GOOD)}]
    assert _captioner(chat).caption([Image.new("RGB", (8, 8))], [(0, 0, 1, 1)]).identity == "a red fox"
    with pytest.raises(CaptionError, match="unusable reply.*not valid JSON") as err:
        _captioner("I cannot help with that.").caption([Image.new("RGB", (8, 8))], [(0, 0, 1, 1)])
    assert err.value.fatal is False


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a transformers model folder"):
        TransformersCaptioner(tmp_path)
