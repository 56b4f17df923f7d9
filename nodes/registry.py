"""The one list of node classes shipped by the pack. Node ids never change once shipped."""

from __future__ import annotations

from .cast import L2S_Character
from .comic_page import L2S_ComicPage
from .detector import L2S_LayoutDetector
from .layout_editor import L2S_LayoutEditor, L2S_LayoutFromJSON, L2S_LayoutToJSON
from .loaders import L2S_ModelLoader, L2S_SubjectBranchLoader, L2S_TextEncoderLoader
from .preview import L2S_LayoutPreview
from .redo import L2S_RedoFrames
from .reference import L2S_ReferenceImage
from .sampler import L2S_StorySampler
from .save_comic import L2S_SaveComic
from .story_apply import L2S_ApplyStory
from .story_conditioning import L2S_EmptyStoryLatent, L2S_StoryConditioning
from .story_nodes import L2S_LayoutToggle, L2S_Story, L2S_StoryFromJSON, L2S_StoryToJSON

NODE_CLASSES: tuple[type, ...] = (
    L2S_ModelLoader,
    L2S_TextEncoderLoader,
    L2S_SubjectBranchLoader,
    L2S_Story,
    L2S_Character,
    L2S_StoryFromJSON,
    L2S_StoryToJSON,
    L2S_ReferenceImage,
    L2S_LayoutEditor,
    L2S_LayoutFromJSON,
    L2S_LayoutToJSON,
    L2S_LayoutDetector,
    L2S_LayoutToggle,
    L2S_LayoutPreview,
    L2S_StorySampler,
    L2S_RedoFrames,
    L2S_ComicPage,
    L2S_SaveComic,
    L2S_ApplyStory,
    L2S_StoryConditioning,
    L2S_EmptyStoryLatent,
)


def _mappings(classes: tuple[type, ...]) -> tuple[dict[str, type], dict[str, str]]:
    class_map: dict[str, type] = {}
    names: dict[str, str] = {}
    for cls in classes:
        node_id = cls.NODE_ID
        if node_id in class_map:
            raise RuntimeError(f"duplicate node id {node_id!r}")
        class_map[node_id] = cls
        names[node_id] = cls.DISPLAY_NAME
    return class_map, names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _mappings(NODE_CLASSES)
