"""A real HTTP server that speaks the OpenAI chat-completions wire format, for tests.

It listens on ``127.0.0.1`` (a free port), serves from a background thread until closed,
records every request it receives, answers from a function you give it, and can misbehave
on cue: a script of faults is consumed one per incoming request, in arrival order.

Usage::

    from fake_openai import FakeOpenAIServer, Fault, Reply

    def answer(request: dict) -> Reply | str:      # request = the parsed JSON body
        return Reply("yes", top_logprobs={"yes": -0.1, "no": -2.3})

    with FakeOpenAIServer(answer) as server:
        server.script(Fault.status(500), Fault.rate_limit(retry_after=1))
        ...  # point a client at server.base_url ("http://127.0.0.1:PORT/v1")
        server.requests[0].json["model"], server.requests[0].headers["authorization"]

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``, and Azure OpenAI's
``POST /openai/deployments/<deployment>/chat/completions?api-version=...`` (point an Azure
client at ``server.origin``). Anything else is a 404. A recorded request's ``path`` has no
query string; ``query`` holds its parameters.

Faults (see :class:`Fault`): an HTTP error status with a JSON error body (``status``), a 429
with ``Retry-After`` (``rate_limit``), a delay before the normal answer (``delay``; use it to
provoke client timeouts), a dropped connection with no response (``drop``), a 200 with a
body that is not JSON (``garbage``) or JSON that is not a completion (``json``). ``delay``
(the constructor argument) slows down every request; ``max_in_flight`` reports the most
requests the server was handling at once. Closing the server wakes any sleeping handler,
so shutdown is prompt even in the middle of a long delay.

Targeted faults: ``server.fault_when(predicate, *faults)`` gives the next of ``faults`` to
each request whose JSON body ``predicate`` accepts (checked before the arrival-order script),
so a test can make one item's request fail however the client orders its requests.

Structured output: ``reject_fields=("response_format",)`` makes the server answer HTTP 400
"Unrecognized request argument supplied: response_format" to any request carrying one of
those fields, as servers without structured output do; otherwise the fields are accepted
and left to ``respond`` (which sees the whole request).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeOpenAIServer", "Fault", "RecordedRequest", "Reply", "echo"]


_CHAT_PATHS = re.compile(r"^(?:/v1|/openai/deployments/[^/]+)/chat/completions$")


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of concurrent connections would
    # overflow it and wait for SYN retransmits (1 s), which real servers never make you do.
    request_queue_size = 512
    daemon_threads = True


@dataclass
class Reply:
    """What the server answers: ``text`` and, optionally, the first token's top logprobs.

    ``top_logprobs`` maps token -> logprob; when given, the completion carries an OpenAI
    ``logprobs.content`` entry for the first token (the chosen token is ``token`` if set,
    else ``text``) — but only if the request asked for ``logprobs``.

    ``tokens`` gives logprobs for every token of the reply instead: a list of
    ``(token text, {alternative: logprob})`` whose texts should concatenate to ``text``; the
    chosen token's own logprob is its entry among the alternatives (0.0 if absent), and the
    request's ``top_logprobs`` cuts each list, as a server does.
    """

    text: str
    top_logprobs: dict[str, float] | None = None
    token: str | None = None
    finish_reason: str = "stop"
    tokens: list[tuple[str, dict[str, float]]] | None = None


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; build them with the class methods."""

    kind: str
    code: int = 200
    seconds: float = 0.0
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def status(cls, code: int, body: str | None = None) -> Fault:
        """Answer with HTTP ``code`` and an OpenAI-style JSON error body (or ``body``)."""
        if body is None:
            body = json.dumps({"error": {"message": f"fake error {code}", "code": code}})
        return cls("status", code=code, body=body)

    @classmethod
    def rate_limit(cls, retry_after: float | str = 1) -> Fault:
        """A 429 with a ``Retry-After`` header (seconds, or any string you pass)."""
        body = json.dumps({"error": {"message": "rate limited", "type": "rate_limit"}})
        return cls("status", code=429, body=body, headers=(("Retry-After", str(retry_after)),))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before answering normally (a client timeout makes this a timeout)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending any response."""
        return cls("drop")

    @classmethod
    def garbage(cls, body: str = "<html><body>502 Bad Gateway</body></html>") -> Fault:
        """A 200 whose body is not JSON."""
        return cls("raw", code=200, body=body)

    @classmethod
    def json(cls, obj: Any, code: int = 200) -> Fault:
        """A response with arbitrary JSON (e.g. ``{}``: valid JSON, not a completion)."""
        return cls("raw", code=code, body=json.dumps(obj))


@dataclass
class RecordedRequest:
    """A request the server received. ``headers`` keys are lower-case; ``path`` is without
    the query string, whose parameters are in ``query``."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    fault: Fault | None
    received_at: float = field(default_factory=time.monotonic)
    query: dict[str, str] = field(default_factory=dict)


def _last_user_text(request: dict) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def echo(request: dict) -> Reply:
    """The default answer: ``"echo: <text of the last user message>"``."""
    return Reply("echo: " + _last_user_text(request))


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 for tests (context manager).

    ``respond(request_json) -> Reply | str`` makes the answer (default :func:`echo`); it runs
    in the handler thread, so it may sleep to simulate slow generation. ``delay`` seconds are
    waited before every answer. See the module docstring for an example.
    """

    def __init__(
        self,
        respond: Callable[[dict], Reply | str] | None = None,
        *,
        delay: float = 0.0,
        reject_fields: Iterable[str] = (),
    ) -> None:
        self.respond = respond or echo
        self.delay = delay
        self.reject_fields = tuple(reject_fields)
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self.handler_errors: list[BaseException] = []
        self._faults: deque[Fault] = deque()
        self._rules: list[tuple[Callable[[Any], bool], deque[Fault]]] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closing = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._closing.clear()
        httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        httpd.handle_error = self._record_error  # client hang-ups are expected in fault tests
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake sleeping handlers, release the port. Safe to call twice."""
        self._closing.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``: what an Azure OpenAI client uses as its endpoint."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client uses as ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.origin}/v1"

    # -- scripting -------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults; each incoming request takes the next one, then answers normally."""
        with self._lock:
            self._faults.extend(faults)

    def fault_when(self, predicate: Callable[[Any], bool], *faults: Fault) -> None:
        """Give the next of ``faults`` to each request whose JSON body ``predicate`` accepts
        (before the arrival-order script); once they are used up, such requests go on to the
        script and then to a normal answer. ``predicate`` runs under the server's lock."""
        with self._lock:
            self._rules.append((predicate, deque(faults)))

    @property
    def pending_faults(self) -> int:
        """Faults not handed out yet: the script's and the targeted ones."""
        with self._lock:
            return len(self._faults) + sum(len(queue) for _, queue in self._rules)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (a delayed or held one included)."""
        with self._lock:
            return self._in_flight

    @property
    def completions(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far (faulted ones included)."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- internals -------------------------------------------------------------------------

    def _record_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.handler_errors.append(sys.exc_info()[1])

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server closes first; False when it did."""
        return not self._closing.wait(seconds) if seconds > 0 else True

    def _enter(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            fault = None
            for predicate, queue in self._rules:
                if queue and isinstance(request.json, dict) and predicate(request.json):
                    fault = queue.popleft()
                    break
            if fault is None and self._faults:
                fault = self._faults.popleft()
            request.fault = fault
            self.requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return fault

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _completion(self, request: dict, reply: Reply | str) -> dict:
        if isinstance(reply, str):
            reply = Reply(reply)
        with self._lock:
            n = len(self.requests)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": reply.text},
            "finish_reason": reply.finish_reason,
            "logprobs": None,
        }
        if request.get("logprobs") and reply.tokens is not None:
            k = int(request.get("top_logprobs") or 0)
            choice["logprobs"] = {"content": [_token_entry(t, top, k) for t, top in reply.tokens]}
        elif request.get("logprobs") and reply.top_logprobs is not None:
            token = reply.token if reply.token is not None else reply.text
            k = int(request.get("top_logprobs") or 0)
            top = sorted(reply.top_logprobs.items(), key=lambda kv: -kv[1])[:k]
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token,
                        "logprob": reply.top_logprobs.get(token, 0.0),
                        "bytes": list(token.encode()),
                        "top_logprobs": [
                            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top
                        ],
                    }
                ]
            }
        words = len(reply.text.split())
        return {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", ""),
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": words + 1},
        }


def _token_entry(token: str, top: dict[str, float], k: int) -> dict[str, Any]:
    best = sorted(top.items(), key=lambda kv: -kv[1])[:k]
    return {
        "token": token,
        "logprob": top.get(token, 0.0),
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in best],
    }


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: simple, prompt shutdown

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _send(self, status: int, body: str, headers: tuple[tuple[str, str], ...] = ()):
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, json.dumps({"object": "list", "data": []}))
            else:
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            url = urlsplit(self.path)
            recorded = RecordedRequest("POST", url.path, headers, body, None)
            recorded.query = dict(parse_qsl(url.query))
            fault = server._enter(recorded)
            try:
                self._handle(body, fault)
            finally:
                server._leave()

        def _handle(self, body: Any, fault: Fault | None) -> None:
            if not _CHAT_PATHS.match(urlsplit(self.path).path.rstrip("/")):
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                return
            if not isinstance(body, dict):
                self._send(400, json.dumps({"error": {"message": "body is not a JSON object"}}))
                return
            if fault is not None:
                if fault.kind == "drop":
                    self.close_connection = True
                    return
                if fault.kind in ("status", "raw"):
                    self._send(fault.code, fault.body, fault.headers)
                    return
                if fault.kind == "delay" and not server._sleep(fault.seconds):
                    return
            rejected = [f for f in server.reject_fields if f in body]
            if rejected:
                error = {
                    "message": f"Unrecognized request argument supplied: {rejected[0]}",
                    "type": "invalid_request_error",
                    "param": rejected[0],
                    "code": None,
                }
                self._send(400, json.dumps({"error": error}))
                return
            if not server._sleep(server.delay):
                return
            reply = server.respond(body)
            self._send(200, json.dumps(server._completion(body, reply)))

    return Handler
