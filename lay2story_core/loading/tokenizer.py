"""Load the T5 tokenizer from local files: ``spiece.model`` (SentencePiece) or ``tokenizer.json`` (tokenizers).

Checked against transformers 5: ``T5Tokenizer(vocab_file=...)`` silently ignores the file and returns a 4-token
vocabulary, and ``T5Tokenizer.from_pretrained`` of a path it cannot read (or an unreachable hub id) silently returns
the same default. So this module always checks that the files exist, goes through ``from_pretrained`` on a folder
(which converts ``spiece.model``), and verifies the vocabulary afterwards. A bare ``tokenizer.json`` already lists
the ``<extra_id_N>`` sentinels; they are counted so none are added twice (transformers would add 100 more).
ComfyUI's bundled ``comfy/text_encoders/t5_tokenizer/`` (tokenizer.json + tokenizer_config.json) loads as is.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import CorruptFileError, ModelLoadError, ModelNotFoundError
from .sources import call_hub, resolve_source

__all__ = ["load_t5_tokenizer"]

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
_T5_SPECIALS = 3  # <pad>, </s>, <unk>


def load_t5_tokenizer(path_or_id: str | os.PathLike, *, subfolder: str | None = None):
    """Load a T5 tokenizer (``T5Tokenizer``, the tokenizers-backed class in transformers 5).

    Args:
        path_or_id: a folder holding ``spiece.model`` and/or ``tokenizer.json`` (+ optional
            ``tokenizer_config.json``); a pipeline folder (uses ``tokenizer/``); one of those files itself (any
            ``*.model`` SentencePiece file or a ``tokenizer.json``); or a hub id (its ``tokenizer/`` folder or root).
        subfolder: tokenizer folder inside a pipeline folder / hub repo (default ``"tokenizer"``).

    Raises:
        ModelNotFoundError: no such path, or no tokenizer files in the folder.
        CorruptFileError: the files could not be parsed or give an empty vocabulary.
    """
    raw = os.fspath(path_or_id)
    path = Path(raw).expanduser()
    if path.is_file():
        return _load_file(path)
    if path.is_dir():
        return _load_folder(_tokenizer_folder(path, subfolder))
    source = resolve_source(raw, "tokenizer", subfolder)  # raises ModelNotFoundError unless it is a hub id
    return _load_folder(Path(call_hub(source.path, "T5 tokenizer", lambda: _download(source.path, subfolder))))


def _tokenizer_folder(path: Path, subfolder: str | None) -> Path:
    if subfolder:
        path = path / subfolder
        if not path.is_dir():
            raise ModelNotFoundError(path, "no such tokenizer subfolder")
    if any((path / name).is_file() for name in _TOKENIZER_FILES):
        return path
    if (path / "tokenizer").is_dir():
        return path / "tokenizer"
    raise ModelNotFoundError(
        path, "holds no tokenizer files (spiece.model or tokenizer.json), nor a tokenizer/ folder"
    )


def _download(hub_id: str, subfolder: str | None) -> str:
    from huggingface_hub import snapshot_download

    patterns = [
        f"{sub}{name}" for sub in ([f"{subfolder}/"] if subfolder else ["tokenizer/", ""]) for name in _TOKENIZER_FILES
    ]
    patterns += [p.replace("tokenizer_config.json", "special_tokens_map.json") for p in patterns]
    root = Path(snapshot_download(hub_id, allow_patterns=patterns))
    return str(_tokenizer_folder(root, subfolder))


def _load_file(path: Path):
    if path.name in ("tokenizer_config.json", "special_tokens_map.json"):
        return _load_folder(path.parent)
    if path.suffix.lower() in (".json", ".model"):
        with tempfile.TemporaryDirectory(prefix="l2s_tok_") as tmp:
            name = "tokenizer.json" if path.suffix.lower() == ".json" else "spiece.model"
            shutil.copyfile(path, Path(tmp) / name)
            config = path.parent / "tokenizer_config.json"
            if name == "tokenizer.json" and config.is_file():
                shutil.copyfile(config, Path(tmp) / "tokenizer_config.json")
            return _load_folder(Path(tmp), shown=path)
    raise ModelLoadError(path, "is not a tokenizer file: expected a SentencePiece .model file or a tokenizer .json")


def _extra_ids_in(tokenizer_json: Path, shown: Path) -> int:
    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptFileError(shown, f"tokenizer.json is not valid JSON ({err})") from err
    return sum(1 for tok in data.get("added_tokens", []) if str(tok.get("content", "")).startswith("<extra_id_"))


def _load_folder(folder: Path, shown: Path | None = None):
    from transformers import AutoTokenizer, T5Tokenizer

    shown = shown or folder
    has_json, has_spm = (folder / "tokenizer.json").is_file(), (folder / "spiece.model").is_file()
    if not (has_json or has_spm):
        raise ModelNotFoundError(shown, "holds no tokenizer files (spiece.model or tokenizer.json)")
    tokenizer = None
    try:
        if (folder / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            if tokenizer.pad_token is None or tokenizer.eos_token is None:  # a config without T5's specials
                tokenizer = None
        if tokenizer is None:
            kwargs = {"extra_ids": _extra_ids_in(folder / "tokenizer.json", shown)} if has_json else {}
            tokenizer = T5Tokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, ImportError) as err:
        raise CorruptFileError(shown, f"could not read the tokenizer files ({type(err).__name__}: {err})") from err
    extra = sum(1 for tok in tokenizer.get_vocab() if tok.startswith("<extra_id_"))
    if len(tokenizer) <= _T5_SPECIALS + 1 + extra:
        raise CorruptFileError(shown, f"the tokenizer files gave an empty vocabulary ({len(tokenizer)} tokens)")
    if tokenizer.pad_token is None or tokenizer.eos_token is None:
        raise CorruptFileError(shown, "the tokenizer has no <pad>/</s> tokens, so it is not a T5 tokenizer")
    logger.info("%s: loaded %s with %d tokens", shown, type(tokenizer).__name__, len(tokenizer))
    return tokenizer
