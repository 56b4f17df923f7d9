"""The canvas's JS layout validation (web/js/layout_schema.js) and the Python schema agree on generated layout texts:
random edits of a valid layout (fields set to values of every JSON type, keys dropped or added, subjects and
dialogue lines repeated, duplicate keys, cut text). Same verdict for every text, and the same field path for every
refusal, so the editor never shows "ok" for text the node refuses (and never refuses what it accepts)."""

from __future__ import annotations

import copy
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from lay2story_core.story import Layout, LayoutError

HERE = Path(__file__).resolve().parent
BASE = {
    "version": 2, "characters": ["hero", "friend"],
    "frames": [
        {"subjects": [{"character": "hero", "box": [0.1, 0.2, 0.5, 0.9], "caption": "red coat"},
                      {"character": "friend", "box": [0.6, 0.1, 0.95, 0.8]}],
         "dialogue": [{"text": "Look!", "speaker": "hero", "style": "shout"}, {"text": "Later that day."}]},
        {"subjects": [], "dialogue": []},
        {"subjects": [{"character": "friend"}]},
    ],
}
VALUES = [None, "", " hero", "hero", "ghost", 0, -1, 0.5, 1.5, 2, True, [], {}, [0, 0, 1], [0.5, 0, 0.2, 1],
          [0, 0, 1, 1], [0.2, 0.2, 0.2, 0.4], [-0.0005, 0, 1.0005, 1], ["a", "a"], "x" * 200, {"subjects": []},
          "speech", "thought", "whisper", {"text": "Hi"}, [{"text": "Hi", "speaker": "friend"}], 1]


def _slots(data, path=()):
    """Every (container, key) in the JSON value."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield data, key
        yield from _slots(value, (*path, key))


def _mutate(rng: random.Random) -> str:
    data = copy.deepcopy(BASE)
    for _ in range(rng.randint(1, 3)):
        slots = list(_slots(data))
        container, key = rng.choice(slots)
        op = rng.random()
        if op < 0.6:
            container[key] = copy.deepcopy(rng.choice(VALUES))
        elif op < 0.75 and isinstance(container, dict):
            del container[key]
        elif op < 0.85 and isinstance(container, dict):
            container[rng.choice(["extra", "boxes", "subject", "Version", "dialogue", "style"])] = 1
        elif isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
    text = json.dumps(data)
    op = rng.random()
    if op < 0.1:  # a duplicate key somewhere
        for key in ('"box": ', '"character": ', '"frames": ', '"subjects": '):
            at = text.find(key)
            if at >= 0:
                end = text.find(", ", at)
                if end > at:
                    text = text[:end] + ", " + text[at:end] + text[end:]
                break
    elif op < 0.15:
        text = text[: rng.randint(0, len(text) - 1)]
    return text


def _python(text: str) -> dict:
    try:
        Layout.from_json(text)
    except LayoutError as err:
        return {"ok": False, "path": err.path}
    return {"ok": True, "path": None}


def test_js_and_python_layout_validation_agree_on_generated_texts(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (bash .ci/install_browser.sh installs it)")
    rng = random.Random(1234)
    texts = [_mutate(rng) for _ in range(600)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    proc = subprocess.run([node, str(HERE / "check_layout_texts.mjs"), str(tmp_path / "texts.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    js = json.loads(proc.stdout)
    python = [_python(t) for t in texts]
    differ = [(t, p, j) for t, p, j in zip(texts, python, js) if p["ok"] != j["ok"] or p["path"] != j["path"]]
    assert not differ, f"{len(differ)} differ:\n" + "\n".join(f"{t}\n  python {p}\n  js {j}" for t, p, j in differ[:6])
    assert sum(p["ok"] for p in python) > 25 and sum(not p["ok"] for p in python) > 300  # both outcomes covered
    assert len({p["path"] for p in python}) > 15  # refusals all over the schema
