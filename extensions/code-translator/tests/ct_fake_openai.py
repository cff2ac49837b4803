"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the code translator tests.

It speaks the chat-completions SSE format the way llama.cpp, Ollama's ``/v1``, vLLM and OpenAI do (chunked
transfer encoding, a role-only first chunk, content chunks, a finish chunk, a usage chunk with empty ``choices``,
``data: [DONE]``), and it can misbehave on purpose: a missing ``[DONE]``, a dropped connection mid-stream, error
statuses with OpenAI-shaped bodies, a slow first byte.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server answers to one chat-completions request."""

    deltas: list[str] = field(default_factory=list)
    status: int = 200
    error: dict[str, Any] | None = None  # the body's "error" object for a non-200 status
    done: bool = True  # send "data: [DONE]"
    usage: bool = True  # send a final usage chunk with empty "choices"
    disconnect_after: int | None = None  # drop the connection after this many content chunks
    delay_s: float = 0.0  # wait before the first byte


Responder = Callable[[dict[str, Any]], Reply]


class ScriptedChatServer:
    """``url`` is the OpenAI base URL (``http://127.0.0.1:<port>/v1``); ``requests`` holds each JSON body received."""

    def __init__(self, responder: Responder | list[Reply], models: tuple[str, ...] = ("test-model",),
                 api_key: str | None = None) -> None:
        self.models = list(models)
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self._script = list(responder) if isinstance(responder, list) else None
        self._responder = responder if callable(responder) else None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedChatServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self._script is not None:
                return self._script.pop(0) if self._script else Reply(["(no more scripted replies)"])
        assert self._responder is not None
        return self._responder(body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                server.auth_headers.append(header)
                if server.api_key is None or header == f"Bearer {server.api_key}":
                    return True
                self._json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
                return False

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if not self._authorised():
                    return
                if body.get("model") not in server.models:
                    self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                               "type": "invalid_request_error", "code": "model_not_found"}})
                    return
                reply = server._next_reply(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    self._json(reply.status, {"error": reply.error or {"message": "scripted failure"}})
                    return
                try:
                    self._stream(body, reply)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    self.close_connection = True

            def _chunk(self, data: str) -> None:
                payload = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()

            def _stream(self, body: dict[str, Any], reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
                        "model": body.get("model")}

                def choice(delta: dict[str, Any], finish: str | None = None) -> str:
                    return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

                self._chunk(choice({"role": "assistant"}))
                for n, delta in enumerate(reply.deltas):
                    if reply.disconnect_after is not None and n >= reply.disconnect_after:
                        self.close_connection = True
                        self.wfile.flush()
                        self.connection.shutdown(2)  # abrupt: no terminating zero-size chunk
                        return
                    self._chunk(choice({"content": delta}))
                self._chunk(choice({}, "stop"))
                if reply.usage:
                    self._chunk(json.dumps({**base, "choices": [], "usage": {"prompt_tokens": 1,
                                                                             "completion_tokens": len(reply.deltas),
                                                                             "total_tokens": 1 + len(reply.deltas)}}))
                if reply.done:
                    self._chunk("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler
