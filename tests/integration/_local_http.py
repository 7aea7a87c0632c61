"""A local HTTP service on 127.0.0.1 for the real-client tests (stdlib http.server in a thread).

Routes:
- ``GET /status/<code>``: that status, ``Retry-After: 7`` and a JSON error body;
- ``GET /slow``: answers after 2 s (client timeouts);
- ``GET /orders/<id>``: a JSON order whose keys are not sorted;
- ``POST /v1/chat/completions``: an OpenAI-compatible endpoint, see `chat_completion`;
- ``POST /v1/messages``: an Anthropic-compatible endpoint, see `anthropic_message`.

The model endpoints decide deterministically from the messages: with no tool result yet they ask
for the tools the user's ticket needs; with tool results they answer from them. A model name
``error-<code>`` answers that HTTP status; ``slow`` answers late.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _order(order_id: str) -> dict[str, Any]:
    n = int(re.sub(r"\D", "", order_id) or 0)
    return {
        "order_id": order_id,
        "status": "shipped" if n % 2 else "pending",
        "total": round(10 + n * 1.25, 2),
        "items": [{"sku": f"SKU-{n}", "qty": 1 + n % 3}],
        "customer": {"tier": "gold" if n % 5 == 0 else "basic"},
    }


def _chat_answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    messages = body.get("messages", [])
    user = next((m.get("content") for m in messages if m.get("role") == "user"), "") or ""
    tool_results = [m for m in messages if m.get("role") == "tool"]
    created = 1_700_000_000
    if not tool_results:
        order_ids = re.findall(r"A-\d+", user)
        calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "get_order", "arguments": json.dumps({"order_id": oid})},
            }
            for i, oid in enumerate(order_ids)
        ]
        if "status page" in user:
            calls.append(
                {
                    "id": f"call_{len(calls)}",
                    "type": "function",
                    "function": {"name": "status_page", "arguments": json.dumps({"code": 503})},
                }
            )
        if calls:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": "How can I help?"}
            finish = "stop"
    else:
        # Answers from the exact text of the tool results: a change in what the agent sent shows.
        digest = sum(len(m.get("content") or "") for m in tool_results)
        message = {
            "role": "assistant",
            "content": f"Resolved {len(tool_results)} lookup(s) [{digest}].",
        }
        finish = "stop"
    n_in = sum(len(json.dumps(m)) for m in messages) // 4
    return 200, {
        "id": f"chatcmpl-{len(messages)}",
        "object": "chat.completion",
        "created": created,
        "model": body.get("model", "local"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": n_in, "completion_tokens": 12, "total_tokens": n_in + 12},
    }


def _anthropic_answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    messages = body.get("messages", [])
    first = messages[0]["content"] if messages else ""
    user = first if isinstance(first, str) else ""
    results = [
        b
        for m in messages
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    if not results:
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": f"toolu_{i}",
                "name": "get_order",
                "input": {"order_id": oid},
            }
            for i, oid in enumerate(re.findall(r"A-\d+", user))
        ] or [{"type": "text", "text": "How can I help?"}]
        stop = "tool_use" if content[0]["type"] == "tool_use" else "end_turn"
    else:
        digest = sum(len(json.dumps(r.get("content"))) for r in results)
        content = [{"type": "text", "text": f"Resolved {len(results)} lookup(s) [{digest}]."}]
        stop = "end_turn"
    return 200, {
        "id": f"msg_{len(messages)}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 8},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # a client that timed out or went away
            pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", "req_local_1")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first, as intended
            pass

    def _error(self, status: int) -> None:
        self._send(
            status,
            {
                "error": {
                    "message": f"upstream said {status}",
                    "type": "server_error",
                    "code": f"E{status}",
                }
            },
            {"retry-after": "7"},
        )

    def do_GET(self) -> None:
        m = re.fullmatch(r"/status/(\d{3})", self.path)
        if m:
            self._error(int(m.group(1)))
        elif self.path == "/slow":
            time.sleep(2)
            self._send(200, {"slow": True})
        elif self.path.startswith("/orders/"):
            self._send(200, _order(self.path.rsplit("/", 1)[1]))
        else:
            self._send(404, {"error": "no such route"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        model = str(body.get("model", ""))
        m = re.fullmatch(r"error-(\d{3})", model)
        if m:
            self._error(int(m.group(1)))
            return
        if model == "slow":
            time.sleep(2)
        if self.path.endswith("/chat/completions"):
            self._send(*_chat_answer(body))
        elif self.path.endswith("/messages"):
            self._send(*_anthropic_answer(body))
        else:
            self._send(404, {"error": "no such route"})


class LocalService:
    """The service running in a daemon thread; ``url`` uses ``localhost`` (not an IP: nothing to
    pseudonymise).
    """

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://localhost:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
