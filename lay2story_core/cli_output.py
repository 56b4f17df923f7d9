"""What ``generate`` writes and how: the output folder swapped in whole, the frames with their story and settings,
and the one error type of the command line (shared by :mod:`.cli` and :mod:`.cli_redo`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["EMBEDDED_MODEL", "OutputFolder", "UserError", "write_outputs"]

EMBEDDED_MODEL = Path(__file__).resolve().parent / "assets" / "shapestory" / "pipeline"
_OUTPUT_NAME = re.compile(
    r"^(frame_\d{3,}\.png|contact_sheet\.png|story\.json|settings\.json|latents\.safetensors)$")


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


class OutputFolder:
    """Where ``generate`` writes, checked before anything is loaded or sampled.

    The frames go to a staging folder beside ``out`` (same file system), made at once so an unwritable place fails
    early; :meth:`commit` swaps it in whole (an existing ``out`` is renamed away first and restored if the swap
    fails), :meth:`discard` removes it and any parent folders made for it.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(os.path.abspath(os.fspath(out)))
        self.parent = self.out.parent
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out: {os.fspath(self.out)!r} exists and is not a folder")
        if self.out.is_dir():
            foreign = sorted(p.name for p in self.out.iterdir() if not _OUTPUT_NAME.match(p.name))
            if foreign:
                raise UserError(f"--out: {os.fspath(self.out)!r} holds files this command did not write "
                                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); it would be "
                                "replaced as a whole, so give a new or empty folder")
        self.made: list[Path] = []
        try:
            missing = [p for p in [self.parent, *self.parent.parents] if not p.exists()]
            for folder in reversed(missing):
                folder.mkdir()
                self.made.append(folder)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.lay2story-", dir=self.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.staging, 0o777 & ~umask)
        except OSError as err:
            self._remove_made()
            raise UserError(f"--out: cannot create a folder in {os.fspath(self.parent)!r} "
                            f"({err.strerror or type(err).__name__})") from err

    def commit(self) -> Path:
        old = None
        try:
            if self.out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.parent))
                os.replace(self.out, old)
            os.replace(self.staging, self.out)
        except OSError as err:
            if old is not None and not self.out.exists() and old.exists():
                os.replace(old, self.out)
                old = None
            self.discard()
            raise UserError(f"--out: could not replace {os.fspath(self.out)!r} "
                            f"({err.strerror or type(err).__name__}); the previous contents are kept") from err
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:
                break
        self.made = []


def write_outputs(out: Path, story, images, settings: dict) -> Path:
    """Write frames (story + settings in PNG metadata), a contact sheet and the story into the folder ``out``
    (created); all or nothing: on failure ``out`` is left as it was."""
    from PIL import PngImagePlugin

    from .pipelines import contact_sheet

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lay2story-", dir=out))
    try:
        story_json = story.to_json()
        for i, image in enumerate(images):
            info = PngImagePlugin.PngInfo()
            info.add_text("lay2story:story", story_json)
            info.add_text("lay2story:settings", json.dumps({**settings, "frame": i}))
            image.save(staging / f"frame_{i:03d}.png", pnginfo=info)
        contact_sheet(list(images)).save(staging / "contact_sheet.png")
        (staging / "story.json").write_text(story_json + "\n", encoding="utf-8")
        (staging / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        for item in staging.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
