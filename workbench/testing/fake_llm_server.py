"""Test support: not used by the product.

A fake LLM HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API and the Anthropic
messages API (both with streaming), for contract tests, end-to-end tests and benchmarks.

The real SDKs are pointed at it through ``base_url`` (``http://127.0.0.1:PORT/v1`` for openai,
``http://127.0.0.1:PORT`` for anthropic). Replies come from a responder function of the request;
faults (429 with Retry-After, 5xx, a slow reply for timeouts, a malformed body) can be queued.

    with FakeLLMServer(responder=lambda req: "hello") as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key="test")
        srv.push_fault(status=429, retry_after=1)

Run standalone: ``python -m workbench.testing.fake_llm_server --port 8765 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A class attribute: the constructor calls listen() with it. (Set on the instance afterwards, it
    # left the backlog at socketserver's 5, so with 16 clients connecting at once some SYNs were
    # dropped and those calls started about 1 s late: TCP's retransmission timeout.)
    request_queue_size = 256


@dataclass
class FakeRequest:
    api: str  # "openai" | "anthropic"
    path: str
    body: dict
    headers: dict

    @property
    def messages(self) -> list[dict]:
        msgs = list(self.body.get("messages", []))
        if self.api == "anthropic" and self.body.get("system"):
            system = self.body["system"]
            if isinstance(system, list):
                system = "".join(b.get("text", "") for b in system)
            msgs.insert(0, {"role": "system", "content": system})
        return msgs

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                c = m.get("content")
                if isinstance(c, list):
                    return "".join(b.get("text", "") for b in c if isinstance(b, dict))
                return c or ""
        return ""


@dataclass
class Fault:
    status: int = 0  # HTTP status to return (0 = none)
    retry_after: float | None = None
    delay: float = 0.0  # seconds to wait before answering (for timeouts)
    malformed: bool = False  # answer 200 with a body that is not valid JSON
    body: dict | None = None


def default_responder(req: FakeRequest) -> str:
    n = sum(1 for m in req.messages if m.get("role") == "user")
    return f"Reply {n} to: {req.last_user_text[:60]}"


@dataclass
class FakeLLMServer:
    responder: Callable[[FakeRequest], str] = default_responder
    latency: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    requests: list = field(default_factory=list)
    _faults: deque = field(default_factory=deque)
    _server: Any = None
    _thread: Any = None
    _lock: Any = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ control
    def push_fault(self, **kw) -> None:
        """Queue a fault for the next request (faults are served first-in, first-out)."""
        self._faults.append(Fault(**kw))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> FakeLLMServer:
        handler = _make_handler(self)
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None


def _usage_counts(req: FakeRequest, text: str) -> tuple[int, int]:
    prompt = sum(len(str(m.get("content", ""))) for m in req.messages) // 4 + 1
    return prompt, max(1, len(text) // 4)


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to ``server`` (http.server builds one handler per request from a class)."""
    return type("Handler", (_Handler,), {"fake": server})


def _error_body(api: str, status: int) -> dict:
    """An error body shaped like the real API's, so the SDKs raise their own error types."""
    if api == "anthropic":
        kind = "rate_limit_error" if status == 429 else "api_error"
        return {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}
    return {"error": {"message": f"fake {status}", "type": "server_error", "code": None}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: a reply's headers and body are two writes, and with Nagle's algorithm the body
    # waited for the client's delayed ACK of the headers (up to 40 ms on Linux) on a kept-alive
    # connection, which the latency the server is asked for never included.
    disable_nagle_algorithm = True
    fake: FakeLLMServer  # set by _make_handler

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", "/v1/models"):
            self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        req = self._read_request()
        if req is None:
            return
        with self.fake._lock:
            self.fake.requests.append(req)
        fault = self.fake._next_fault()
        if self.fake.latency:
            time.sleep(self.fake.latency)
        if fault and self._serve_fault(fault, req.api):
            return
        try:
            text = self.fake.responder(req)
        except Exception as exc:  # a responder bug shows as a 500 with its message
            self._json(500, {"error": {"message": f"responder failed: {exc}"}})
            return
        if req.api == "openai":
            self._openai(req, text)
        else:
            self._anthropic(req, text)

    def _read_request(self) -> FakeRequest | None:
        """The request, or None after answering 400 (bad JSON) or 404 (unknown path)."""
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON"}})
            return None
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/chat/completions"):
            api = "openai"
        elif path.endswith("/messages"):
            api = "anthropic"
        else:
            self._json(404, {"error": {"message": f"unknown path {path}"}})
            return None
        return FakeRequest(
            api=api, path=path, body=body, headers={k.lower(): v for k, v in self.headers.items()}
        )

    def _serve_fault(self, fault: Fault, api: str) -> bool:
        """Apply a queued fault; True when it answered the request (an error status or a bad body)."""
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status:
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = str(fault.retry_after)
            self._json(fault.status, fault.body or _error_body(api, fault.status), headers)
            return True
        if fault.malformed:
            self._raw(200, b"{this is not json", "application/json")
            return True
        return False

    # ------------------------------------------------------------ OpenAI
    def _openai(self, req: FakeRequest, text: str) -> None:
        model = req.body.get("model", "fake-model")
        pt, ct = _usage_counts(req, text)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        if not req.body.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            self._json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
            return
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        self._start_sse()
        for n, piece in enumerate(_split(text)):
            delta = {"content": piece, "role": "assistant"} if n == 0 else {"content": piece}
            self._sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (req.body.get("stream_options") or {}).get("include_usage"):
            self._sse({**head, "choices": [], "usage": usage})
        self._write_chunk(b"data: [DONE]\n\n")
        self._end_chunks()

    # ------------------------------------------------------------ Anthropic
    def _anthropic(self, req: FakeRequest, text: str) -> None:
        model = req.body.get("model", "fake-model")
        pt, ct = _usage_counts(req, text)
        message = {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": pt, "output_tokens": ct},
        }
        if not req.body.get("stream"):
            self._json(200, message)
            return
        self._start_sse()
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": pt, "output_tokens": 1},
        }
        self._event("message_start", {"message": start})
        self._event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for piece in _split(text):
            self._event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        self._event("content_block_stop", {"index": 0})
        self._event(
            "message_delta",
            {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": ct}},
        )
        self._event("message_stop", {})
        self._end_chunks()

    def _event(self, kind: str, fields: dict) -> None:
        """An Anthropic stream event: the ``type`` field and the SSE event name are the same."""
        self._sse({"type": kind, **fields}, event=kind)

    # ------------------------------------------------------------ plumbing
    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._raw(status, json.dumps(obj).encode(), "application/json", headers)

    def _raw(self, status: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()

    def _sse(self, obj: dict, event: str | None = None) -> None:
        prefix = f"event: {event}\n" if event else ""
        self._write_chunk(f"{prefix}data: {json.dumps(obj)}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _split(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before every reply")
    args = ap.parse_args()
    srv = FakeLLMServer(port=args.port, latency=args.latency).start()
    print(f"fake LLM server on {srv.url} (openai base {srv.openai_base_url})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
