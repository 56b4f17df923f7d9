"""HttpCaptioner against a fake OpenAI-compatible server on loopback (http.server in a thread)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from training.data.captions import CaptionError
from training.data.http_captioner import HttpCaptioner, chat_completions_url

FRAMES = [Image.new("RGB", (64, 48), (200, 40, 40)), Image.new("RGB", (64, 48), (40, 40, 200))]
BOXES = [(0.1, 0.1, 0.5, 0.6), (0.4, 0.2, 0.9, 0.9)]
GOOD = {"identity": "a red fox", "frames": [{"prompt": "it runs", "subject": "ears up"},
                                            {"prompt": "it sleeps", "subject": None}]}


def _completion(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class FakeServer:
    """Answers POSTs from a script: each entry is ``(status, body bytes)`` or ``("sleep", seconds)`` (then 200)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                status, payload = outer.script.pop(0) if outer.script else (500, b"script exhausted")
                if status == "sleep":
                    time.sleep(payload)
                    status, payload = 200, _completion(json.dumps(GOOD))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _captioner(url, sleeps, **kwargs):
    return HttpCaptioner(url, api_key_env=None, backoff=0.5, max_backoff=4.0, sleep=sleeps.append, **kwargs)


def test_success_and_request_format(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    with FakeServer([(200, _completion(json.dumps(GOOD)))]) as server:
        captioner = HttpCaptioner(server.url, model="gpt-4o-mini", api_key_env="FAKE_KEY", sleep=None)
        caps = captioner.caption(FRAMES, BOXES)
    assert caps.identity == "a red fox" and caps.frame_prompts == ("it runs", "it sleeps")
    assert caps.subject_captions == ("ears up", None)
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "gpt-4o-mini" and body["response_format"] == {"type": "json_object"}
    content = body["messages"][-1]["content"]
    assert content[0]["type"] == "text" and "frame 2: [0.400, 0.200, 0.900, 0.900]" in content[0]["text"]
    urls = [c["image_url"]["url"] for c in content[1:]]
    assert len(urls) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
    image = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert image.size == (64, 48)
    assert image.convert("RGB").getpixel((40, 15))[0] > 150  # the frame's red, not the box outline


def test_server_error_then_success_is_retried_with_backoff():
    sleeps = []
    script = [(500, b'{"error": "overloaded"}'), (503, b"busy"), (200, _completion(json.dumps(GOOD)))]
    with FakeServer(script) as server:
        caps = _captioner(server.url, sleeps).caption(FRAMES, BOXES)
    assert caps.identity == "a red fox"
    assert len(server.requests) == 3 and sleeps == [0.5, 1.0]
    assert "Authorization" not in server.requests[0]["headers"]


def test_bad_json_is_retried():
    sleeps = []
    bad_frames = {"identity": "fox", "frames": [{"prompt": "only one"}]}
    script = [(200, _completion("not json at all")), (200, _completion(json.dumps(bad_frames))),
              (200, b"<html>gateway</html>"), (200, _completion("```json\n" + json.dumps(GOOD) + "\n```"))]
    with FakeServer(script) as server:
        caps = _captioner(server.url, sleeps).caption(FRAMES, BOXES)
    assert caps.frame_prompts == ("it runs", "it sleeps")
    assert len(server.requests) == 4 and sleeps == [0.5, 1.0, 2.0]


def test_final_failure_names_the_last_error():
    sleeps = []
    with FakeServer([(502, b"bad gateway")] * 3) as server:
        expected = r"failed after 3 attempt\(s\); last error: HTTP 502: bad gateway"
        with pytest.raises(CaptionError, match=expected) as err:
            _captioner(server.url, sleeps, max_retries=2).caption(FRAMES, BOXES)
    assert err.value.fatal is False
    assert len(server.requests) == 3 and sleeps == [0.5, 1.0]


def test_client_errors_are_fatal_and_not_retried():
    sleeps = []
    with FakeServer([(401, b'{"error": "invalid api key"}')]) as server:
        with pytest.raises(CaptionError, match="HTTP 401.*invalid api key") as err:
            _captioner(server.url, sleeps).caption(FRAMES, BOXES)
    assert err.value.fatal is True and len(server.requests) == 1 and sleeps == []


def test_rate_limit_and_timeout_are_retried():
    sleeps = []
    with FakeServer([(429, b"slow down"), ("sleep", 1.0), (200, _completion(json.dumps(GOOD)))]) as server:
        caps = _captioner(server.url, sleeps, timeout=0.3).caption(FRAMES, BOXES)
    assert caps.identity == "a red fox" and len(server.requests) == 3 and len(sleeps) == 2


def test_connection_refused_is_retried_then_fails():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = []
    with pytest.raises(CaptionError, match="connection failed"):
        _captioner(f"http://127.0.0.1:{port}", sleeps, max_retries=1).caption(FRAMES, BOXES)
    assert sleeps == [0.5]


def test_configuration_errors(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        HttpCaptioner("http://127.0.0.1:1", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ValueError, match="url"):
        HttpCaptioner("ftp://example", api_key_env=None)
    with pytest.raises(ValueError, match="max_retries"):
        HttpCaptioner("http://127.0.0.1:1", api_key_env=None, max_retries=-1)
    assert chat_completions_url("https://api.openai.com") == "https://api.openai.com/v1/chat/completions"
    assert chat_completions_url("http://h:8/v1/") == "http://h:8/v1/chat/completions"
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
