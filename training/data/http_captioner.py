"""Captioning through an OpenAI-compatible ``/v1/chat/completions`` endpoint (the paper used GPT-4o mini).

Frames go as base64 JPEG data URLs with the character's box drawn in; the reply must be the JSON of
:func:`~training.data.captions.caption_instruction`. Server errors (5xx, 429), timeouts, connection failures and bad
JSON are retried with exponential backoff; other 4xx (bad key, unknown model) fail at once as fatal. Stdlib only.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from PIL import Image

from lay2story_core.vision.draw import draw_boxes

from .captions import (
    Box,
    CaptionError,
    CaptionFormatError,
    SequenceCaptions,
    caption_instruction,
    extract_json,
    parse_captions,
)

__all__ = ["HttpCaptioner", "chat_completions_url"]

logger = logging.getLogger(__name__)

_SYSTEM = "You annotate frames of cartoon videos for a story-generation dataset. You always answer with JSON only."


def chat_completions_url(url: str) -> str:
    """``https://host`` / ``https://host/v1`` / the full endpoint -> the full ``.../v1/chat/completions`` URL."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url: expected an http(s) URL, got {url!r}")
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HttpCaptioner:
    """Captions a sequence with one chat-completions request (all frames in one message).

    ``api_key_env`` names the environment variable holding the key (``None``: no Authorization header, e.g. a local
    server). Attempts = ``1 + max_retries``; the wait before retry ``r`` is ``backoff * 2**r`` seconds, at most
    ``max_backoff`` (or the server's Retry-After when longer).
    """

    def __init__(self, url: str, model: str = "gpt-4o-mini", api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_image_side: int = 512, temperature: float = 0.2, draw_box: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = chat_completions_url(url)
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model: expected a model name, got {model!r}")
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(f"api_key_env: environment variable {api_key_env!r} is not set or empty (it should "
                                 "hold the API key; pass no --api-key-env for a server without keys)")
        for name, value, low in (("timeout", timeout, 0.0), ("backoff", backoff, 0.0), ("max_backoff", max_backoff,
                                                                                        0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise ValueError(f"{name}: expected a number >= {low}, got {value!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: expected a non-negative integer, got {max_retries!r}")
        if isinstance(max_image_side, bool) or not isinstance(max_image_side, int) or max_image_side < 16:
            raise ValueError(f"max_image_side: expected an integer >= 16, got {max_image_side!r}")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_image_side = max_image_side
        self.temperature = float(temperature)
        self.draw_box = draw_box
        self.sleep = sleep

    # ----------------------------------------------------------------------------------------------- request
    def _data_url(self, image: Image.Image, box: Box) -> str:
        image = draw_boxes(image, [box]) if self.draw_box else image.convert("RGB")
        image.thumbnail((self.max_image_side, self.max_image_side), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    def request_body(self, frames: Sequence[Image.Image], boxes: Sequence[Box]) -> dict:
        content: list[dict] = [{"type": "text", "text": caption_instruction(boxes)}]
        content += [{"type": "image_url", "image_url": {"url": self._data_url(f, b)}} for f, b in zip(frames, boxes)]
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": content}],
            "temperature": self.temperature,
            "response_format": {"type": "json_object"},
        }

    def _post(self, payload: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # http(s) only (see __init__)
                raw = response.read()
        except urllib.error.HTTPError as err:
            body = err.read()[:300].decode("utf-8", "replace")
            if err.code == 429 or err.code >= 500:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                try:
                    wait = float(retry_after) if retry_after is not None else None
                except ValueError:
                    wait = None
                raise _Retryable(f"HTTP {err.code}: {body}", wait) from err
            raise CaptionError(f"HttpCaptioner: {self.url} answered HTTP {err.code} (not retried): {body}",
                               fatal=True) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise _Retryable(f"connection failed: {getattr(err, 'reason', err)}") from err
        try:
            reply = json.loads(raw)
            return reply["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as err:
            raise _Retryable(f"unexpected response body: {raw[:200]!r}") from err

    def caption(self, frames: Sequence[Image.Image], boxes: Sequence[Box]) -> SequenceCaptions:
        if len(frames) != len(boxes) or not frames:
            raise ValueError(f"frames/boxes: expected the same non-zero number, got {len(frames)} and {len(boxes)}")
        payload = json.dumps(self.request_body(frames, boxes)).encode("utf-8")
        attempts = 1 + self.max_retries
        last = ""
        retry_after: float | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                if retry_after is not None:
                    delay = max(delay, min(self.max_backoff, retry_after))
                logger.info("HttpCaptioner: retry %d/%d in %.1fs after: %s", attempt, self.max_retries, delay, last)
                self.sleep(delay)
            try:
                return parse_captions(extract_json(self._post(payload)), len(frames))
            except _Retryable as err:
                last, retry_after = str(err), err.retry_after
            except CaptionFormatError as err:
                last, retry_after = f"bad captions: {err}", None
        raise CaptionError(f"HttpCaptioner: {self.url} failed after {attempts} attempt(s); last error: {last}")
