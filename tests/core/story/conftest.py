import copy

import pytest

_STORY = {
    "version": 2,
    "width": 512,
    "height": 384,
    "negative_prompt": "blurry",
    "characters": [
        {
            "id": "hero",
            "identity": "a red fox in a blue scarf",
            "reference": {"image": "ref.png", "box": [0.1, 0.1, 0.9, 0.9]},
        },
        {"id": "villain", "identity": "a grey wolf in a top hat"},
    ],
    "frames": [
        {
            "prompt": "reading under a tree",
            "subjects": [
                {"character": "hero", "box": [0.1, 0.2, 0.5, 0.9], "caption": "the fox sitting, holding a book"}
            ],
            "image": "f0.png",
        },
        {
            "prompt": "a chase through the woods",
            "subjects": [
                {"character": "villain", "box": [0.6, 0.1, 0.95, 0.8]},
                {"character": "hero", "caption": "the fox running"},
            ],
        },
        {
            "prompt": "dinner together",
            "subjects": [],
            "dialogue": [
                {"text": "Pass the salt.", "speaker": "villain", "style": "speech"},
                {"text": "And so they became friends.", "style": "caption"},
            ],
        },
    ],
}


@pytest.fixture
def story_dict():
    """A fresh, valid story dict (two characters, three frames, mixed layout, dialogue in the last frame)."""
    return copy.deepcopy(_STORY)
