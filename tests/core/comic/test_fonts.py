"""lay2story_core.comic.fonts: the built-in font, user font files, and text the font cannot draw."""

from __future__ import annotations

import os

import pytest
from PIL import ImageFont

from lay2story_core.comic import BUILTIN_FONT, ComicFont, ComicStyle

DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def test_the_built_in_font_is_aileron_and_scalable():
    font = ComicFont()
    assert "Aileron" in BUILTIN_FONT and "CC0" in BUILTIN_FONT
    assert isinstance(font.at(20), ImageFont.FreeTypeFont) and font.at(20).getname()[0] == "Aileron"
    assert font.at(30).getbbox("Hello")[2] > font.at(15).getbbox("Hello")[2]
    assert font.at(20) is font.at(20)  # cached per instance
    assert font.missing("Hello, world! 'quotes' \u201cand\u201d \u2026") == []


def test_missing_glyphs_fail_with_one_line_naming_them_and_a_font():
    font = ComicFont()
    assert font.missing("caf\u00e9 \u65e5\u672c\u65e5") == ["\u00e9", "\u65e5", "\u672c"]
    with pytest.raises(ValueError) as err:
        font.check({"ok": "plain", "dialogue[2].lines[0]": "\u3053\u3093\u306b\u3061\u306f"})
    message = str(err.value)
    assert "\n" not in message and message.startswith("dialogue[2].lines[0]: the built-in font (Aileron")
    assert "\u3053\u3093\u306b\u3061\u306f" in message and "Noto Sans CJK" in message and "font" in message
    with pytest.raises(ValueError, match=r"DejaVu Sans or Noto Sans\)$"):
        font.check({"t": "na\u00efve"}, option="--font")


@pytest.mark.skipif(not os.path.isfile(DEJAVU), reason="DejaVu Sans not installed here")
def test_a_font_file_draws_what_the_built_in_cannot():
    font = ComicFont(DEJAVU)
    assert font.missing("caf\u00e9 na\u00efve \u00bfs\u00ed? \u03a9") == []
    assert font.missing("\u65e5\u672c") == ["\u65e5", "\u672c"]  # DejaVu has no CJK: still caught
    assert ComicStyle(font=DEJAVU).font == DEJAVU


def test_bad_font_files(tmp_path):
    with pytest.raises(ValueError, match="^font: expected a .ttf, .otf or .ttc file, got 'x.woff'"):
        ComicStyle(font="x.woff")
    with pytest.raises(ValueError, match="^font: file .* does not exist"):
        ComicStyle(font=str(tmp_path / "none.ttf"))
    junk = tmp_path / "junk.ttf"
    junk.write_bytes(b"not a font")
    with pytest.raises(ValueError, match="^font: cannot read .*junk.ttf.* as a TrueType/OpenType font"):
        ComicFont(str(junk))
    assert ComicStyle(font="").font is None
