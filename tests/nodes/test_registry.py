"""Every node class follows the pack's conventions; the pack entry point exports the same mappings (no ComfyUI)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from nodes.registry import NODE_CLASS_MAPPINGS, NODE_CLASSES, NODE_DISPLAY_NAME_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = {"Lay2Story/loaders", "Lay2Story/story", "Lay2Story/layout", "Lay2Story/sampling", "Lay2Story/output",
              "Lay2Story/conditioning"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SOCKET_TYPES = {"L2S_MODEL", "L2S_TEXT_ENCODER", "L2S_STORY", "L2S_LAYOUT", "L2S_REFERENCE", "IMAGE", "MASK",
                "L2S_CAST", "L2S_STORY_RESULT", "LATENT", "L2S_SUBJECT_BRANCH", "MODEL", "CLIP", "VAE", "CONDITIONING"}
EXPECTED = {"L2S_ModelLoader", "L2S_TextEncoderLoader", "L2S_Story", "L2S_LayoutToggle", "L2S_ReferenceImage",
            "L2S_LayoutDetector", "L2S_LayoutPreview", "L2S_StorySampler", "L2S_ComicPage", "L2S_StoryToJSON",
            "L2S_StoryFromJSON", "L2S_LayoutEditor", "L2S_LayoutFromJSON", "L2S_LayoutToJSON",
            "L2S_SubjectBranchLoader", "L2S_Character", "L2S_SaveComic", "L2S_RedoFrames", "L2S_ApplyStory",
            "L2S_StoryConditioning", "L2S_EmptyStoryLatent"}


def test_the_registry_holds_every_node_once():
    ids = [cls.NODE_ID for cls in NODE_CLASSES]
    assert len(ids) == len(set(ids))
    assert set(ids) == EXPECTED == set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)
    assert len({cls.DISPLAY_NAME for cls in NODE_CLASSES}) == len(ids)


@pytest.mark.parametrize("cls", NODE_CLASSES, ids=lambda c: c.NODE_ID)
def test_node_conventions(cls):
    assert cls.NODE_ID.startswith("L2S_") and cls.__name__ == cls.NODE_ID
    assert NODE_CLASS_MAPPINGS[cls.NODE_ID] is cls
    assert NODE_DISPLAY_NAME_MAPPINGS[cls.NODE_ID] == cls.DISPLAY_NAME and cls.DISPLAY_NAME.startswith("Lay2Story ")
    assert cls.CATEGORY in CATEGORIES
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 30
    assert callable(getattr(cls, cls.FUNCTION))
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert all(isinstance(t, str) and t for t in cls.OUTPUT_TOOLTIPS)
    assert set(cls.RETURN_TYPES) <= SOCKET_TYPES | {"STRING"}


@pytest.mark.parametrize("cls", NODE_CLASSES, ids=lambda c: c.NODE_ID)
def test_input_types_are_well_formed(cls):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    json.dumps(spec)  # /object_info serialises it
    names = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            names.append(name)
            assert isinstance(entry, tuple) and len(entry) == 2, f"{cls.NODE_ID}.{name}"
            kind, options = entry
            assert isinstance(options, dict) and isinstance(options.get("tooltip"), str) and options["tooltip"], (
                f"{cls.NODE_ID}.{name} has no tooltip")
            if isinstance(kind, list):  # a combo: its default must be one of its values
                assert all(isinstance(v, str) for v in kind)
                if "default" in options:
                    assert options["default"] in kind, f"{cls.NODE_ID}.{name}"
            else:
                assert kind in WIDGET_TYPES | SOCKET_TYPES, f"{cls.NODE_ID}.{name}: {kind}"
            if kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], f"{cls.NODE_ID}.{name}"
    assert len(names) == len(set(names))
    # every declared input is a parameter of the node function
    import inspect

    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    assert set(names) <= set(params), f"{cls.NODE_ID}: inputs {set(names) - set(params)} not taken"


def test_seed_widgets_have_a_control_after_generate():
    for cls in NODE_CLASSES:
        for key, section in cls.INPUT_TYPES().items():
            for name, entry in section.items() if key != "hidden" else ():
                kind, options = entry
                if name == "seed":
                    assert kind == "INT" and options.get("control_after_generate") is True


def test_the_pack_entry_point_exports_the_mappings():
    spec = importlib.util.spec_from_file_location("lay2story_pack_entry", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert set(module.NODE_CLASS_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
        assert module.NODE_DISPLAY_NAME_MAPPINGS == NODE_DISPLAY_NAME_MAPPINGS
        assert (ROOT / module.WEB_DIRECTORY / "js").is_dir()
    finally:
        for name in [n for n in sys.modules if n == spec.name or n.startswith(spec.name + ".")]:
            del sys.modules[name]


def widget_names(cls) -> list[str]:
    """Widget inputs in the order a saved UI workflow stores their values (``widgets_values``)."""
    spec = cls.INPUT_TYPES()
    return [name for section in ("required", "optional") for name, (kind, _) in spec.get(section, {}).items()
            if isinstance(kind, list) or kind in WIDGET_TYPES]


def test_shipped_widgets_keep_their_positions():
    """Saved workflows store widget values by position: a shipped widget never moves or goes, new ones are appended
    (then added to tests/nodes/shipped_widgets.json)."""
    shipped = json.loads((ROOT / "tests" / "nodes" / "shipped_widgets.json").read_text(encoding="utf-8"))
    assert set(shipped) == set(NODE_CLASS_MAPPINGS), "a new node: add its widgets to shipped_widgets.json"
    for node_id, names in shipped.items():
        current = widget_names(NODE_CLASS_MAPPINGS[node_id])
        assert current[:len(names)] == names, f"{node_id}: widgets {names} became {current}"
        assert current == names, f"{node_id}: new widgets {current[len(names):]}: add them to shipped_widgets.json"
