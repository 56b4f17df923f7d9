"""Caption validation, JSON extraction and the template captioner."""

from __future__ import annotations

import pickle

import pytest
from PIL import Image

from training.data.captions import (
    Captioner,
    CaptionError,
    CaptionFormatError,
    SequenceCaptions,
    TemplateCaptioner,
    caption_instruction,
    extract_json,
    parse_captions,
)


def _reply(n=2):
    return {"identity": " a small red fox ", "frames": [{"prompt": f"runs {i}", "subject": f"ears up {i}"}
                                                         for i in range(n)]}


def test_parse_valid_captions():
    caps = parse_captions(_reply(3), 3)
    assert caps.identity == "a small red fox"
    assert caps.frame_prompts == ("runs 0", "runs 1", "runs 2")
    assert caps.subject_captions == ("ears up 0", "ears up 1", "ears up 2")
    data = _reply(2)
    data["frames"][1]["subject"] = None
    data["frames"][0]["subject"] = "   "
    assert parse_captions(data, 2).subject_captions == (None, None)
    assert parse_captions(caps.to_dict(), 3) == caps


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("identity"), r"missing key\(s\) \['identity'\]"),
    (lambda d: d.update(identity=""), "identity: must not be empty"),
    (lambda d: d.update(identity=5), "identity: expected a string, got int 5"),
    (lambda d: d.update(frames="x"), "frames: expected a list, got str"),
    (lambda d: d["frames"].pop(), "frames: expected 2 entries"),
    (lambda d: d["frames"].__setitem__(1, "x"), r"frames\[1\]: expected an object"),
    (lambda d: d["frames"][0].pop("prompt"), r"frames\[0\]: missing key 'prompt'"),
    (lambda d: d["frames"][1].update(prompt=" "), r"frames\[1\].prompt: must not be empty"),
    (lambda d: d["frames"][1].update(subject=3), r"frames\[1\].subject: expected a string"),
    (lambda d: d["frames"][0].update(prompt="x" * 1001), r"frames\[0\].prompt: is 1001 characters"),
])
def test_parse_rejects_bad_captions_naming_the_field(mutate, message):
    data = _reply(2)
    mutate(data)
    with pytest.raises(CaptionFormatError, match=message):
        parse_captions(data, 2)
    with pytest.raises(CaptionFormatError, match="expected a JSON object"):
        parse_captions([1, 2], 2)


def test_extract_json():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert extract_json('Sure! Here it is: {"a": {"b": 2}} Hope this helps.') == {"a": {"b": 2}}
    with pytest.raises(CaptionFormatError, match="not valid JSON"):
        extract_json("no json here")
    with pytest.raises(CaptionFormatError, match="not valid JSON"):
        extract_json('{"a": 1')


def test_sequence_captions_validates_lengths():
    with pytest.raises(CaptionFormatError, match="subject_captions"):
        SequenceCaptions("fox", ("a", "b"), ("x",))


def test_template_captioner_is_deterministic_and_follows_boxes():
    red = Image.new("RGB", (80, 60), (200, 30, 30))
    blue = Image.new("RGB", (80, 60), (30, 60, 210))
    captioner = TemplateCaptioner("a fox")
    assert isinstance(captioner, Captioner)
    boxes = [(0.0, 0.0, 0.2, 0.2), (0.4, 0.4, 0.6, 0.6), (0.1, 0.1, 0.95, 0.95)]
    caps = captioner.caption([red, blue, red], boxes)
    assert caps == captioner.caption([red, blue, red], boxes)
    assert caps.identity == "a fox"
    assert "on the left at the top" in caps.frame_prompts[0] and "wide shot" in caps.frame_prompts[0]
    assert "in the middle" in caps.frame_prompts[1]
    assert "close-up" in caps.frame_prompts[2]
    assert "red" in caps.subject_captions[0] and "blue" in caps.subject_captions[1]
    assert len(set(caps.frame_prompts)) == 3
    with pytest.raises(ValueError, match="frames/boxes"):
        captioner.caption([red], boxes)


def test_instruction_lists_boxes_and_the_json_form():
    text = caption_instruction([(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.9, 0.9)])
    assert "frame 2: [0.500, 0.500, 0.900, 0.900]" in text
    assert '"identity"' in text and "exactly 2 entries" in text


def test_caption_error_keeps_fatal_across_pickling():
    err = pickle.loads(pickle.dumps(CaptionError("bad key", fatal=True)))
    assert err.fatal is True and str(err) == "bad key"
    assert pickle.loads(pickle.dumps(CaptionError("later"))).fatal is False
