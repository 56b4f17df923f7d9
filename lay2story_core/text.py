"""T5 caption encoding shared by the pipeline, the trainer and the feature cache: each distinct text once."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

DEFAULT_MAX_LENGTH = 120  # PixArt-alpha's caption length (PixArt-Sigma: 300)
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")


def caption_words(text: str) -> list[str]:
    """The words of a caption, in order, as a vocabulary sees them: runs of letters and digits (inner apostrophes
    and hyphens kept), case kept, punctuation dropped (``"A red star, on the grass"`` -> ``A red star on the
    grass``)."""
    return _WORD.findall(text)


@torch.no_grad()
def encode_texts(
    texts: Sequence[str],
    tokenizer,
    text_encoder,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``texts`` with a T5 encoder; every distinct text is encoded once.

    Returns ``(embeds (n, max_length, C), mask (n, max_length))`` in the order of ``texts``. Texts are padded to
    ``max_length`` (PixArt's fixed caption length) and truncated beyond it.
    """
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got a single str")
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    device = torch.device(device) if device is not None else text_encoder.device
    tokens = tokenizer(
        unique, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
        return_tensors="pt",
    )
    ids = tokens.input_ids.to(text_encoder.device)
    mask = tokens.attention_mask.to(text_encoder.device)
    embeds = text_encoder(ids, attention_mask=mask)[0]
    order = torch.tensor([index[t] for t in texts], dtype=torch.long, device=embeds.device)
    embeds = embeds.index_select(0, order).to(device=device, dtype=dtype or embeds.dtype)
    return embeds, mask.index_select(0, order.to(mask.device)).to(device)
