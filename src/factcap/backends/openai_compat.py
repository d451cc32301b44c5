"""LLM, captioner, yes/no VQA and grader over any OpenAI-compatible chat-completions server.

Works with vLLM, SGLang, Ollama, llama.cpp's server, LM Studio, OpenAI itself and Azure OpenAI:
only ``POST {base_url}/chat/completions`` is used, sent by the official ``openai`` SDK
(``pip install 'factcap[openai]'``; imported at the first request, never by ``import
factcap``; no torch). The SDK's client makes the request (authentication, Azure's routing, the
HTTP client and its proxy settings); this module keeps what the SDK does not do the way a
captioning job needs: the response cache, bounded concurrent batches, the retry policy below,
structured output with a fallback, and the checks on what comes back. Requests go through the
SDK's ``client.post`` with the body as it is (the typed ``chat.completions.create`` costs
about 1.5 ms of CPU per request in its parameter transform, which concurrent batches pay
under the GIL), and the completion is read as JSON (the cache stores it as it came).

``api_type="openai"`` (the default): the base URL comes from the argument or
``OPENAI_BASE_URL`` (default ``http://127.0.0.1:8000/v1``), the key from the argument or
``OPENAI_API_KEY`` (local servers usually need none: no ``Authorization`` header is sent
then). ``api_type="azure"``: Azure OpenAI's deployment API through the SDK's ``AzureOpenAI``.
``base_url`` is then the resource endpoint (``https://<resource>.openai.azure.com``, else
``AZURE_OPENAI_ENDPOINT``), the model name is the *deployment* name, ``api_version`` (else
``OPENAI_API_VERSION``) is required, and the key (else ``AZURE_OPENAI_API_KEY``, or an Entra
ID token in ``AZURE_OPENAI_AD_TOKEN``) is sent as the ``api-key`` header to
``{base_url}/openai/deployments/<model>/chat/completions?api-version=...``. (Azure's newer
``/openai/v1`` API takes the plain client: ``api_type="openai"`` with ``base_url`` ending in
``/openai/v1``.)

**Concurrency.** A batch becomes concurrent requests (a thread pool bounded by
``max_concurrency``); results come back in input order. Every request of a batch runs to
its end even when another fails; then :class:`RemoteBatchError` reports which failed
(``errors``) and holds the answers of the others (``results``). At most ``max_concurrency``
requests of one backend are in flight at once, also when several batches call it together.

**Retries.** Rate limits (429), server errors (5xx but 501/505), timeouts and dropped
connections are retried ``max_retries`` times. The wait before retry ``n`` (from 0) is drawn
uniformly from ``[(1 - jitter) * d, d]`` with ``d = min(backoff * 2**n, max_retry_wait)``
("equal jitter" at the default ``jitter=0.5``, "full jitter" at 1.0, none at 0): requests
that failed together do not come back together. A ``Retry-After`` header (seconds) is never
shortened: up to ``jitter * backoff`` seconds is added, and the total is capped at
``max_retry_wait``. See :meth:`retry_delay`. When a request still fails, or the server answers
something that is not a chat completion, :class:`RemoteError` is raised: a failure is never
turned into an empty caption. The SDK's own retries are off (``max_retries=0`` on its
client): it has no setting for its waits (0.5 s doubling to 8 s, a quarter of each random),
no cap of its own on a ``Retry-After`` (it follows one up to a fixed limit, 60 s in 1.x and
120 s in 3.x, beyond which it backs off or gives up), and it retries 501 and 505 too.

**Response cache.** Deterministic requests (``temperature`` 0) are answered from a SQLite
cache when the same request was answered before, so a resumed or retried job does not pay
twice (:mod:`factcap.backends.request_cache`: the key is a hash of the path and the request
body, never the API key; only responses that parsed and passed the backend's checks are
stored). ``cache_dir`` sets where (default ``$FACTCAP_CACHE/requests``, else
``~/.cache/factcap/requests``); ``cache=False`` switches it off. Sampled requests
(``temperature > 0``) are never cached: their answers are meant to differ.

**Structured output.** ``OpenAILLM.chat(..., json_schema=schema)`` asks the server to answer
JSON that follows ``schema``: as ``response_format = {"type": "json_schema", ...}`` (OpenAI,
vLLM, SGLang, Ollama, llama.cpp) or, with ``structured_output="guided_json"``, as vLLM's
``guided_json`` field. A server that rejects it (HTTP 400/422 naming the field, or saying
"unsupported") is asked once more without it, and is not asked for it again by this backend
(a warning is logged); the caller's tolerant parser reads the plain answer.

>>> llm = OpenAILLM("qwen2.5-7b-instruct", base_url="http://127.0.0.1:8000/v1", cache=False)
>>> llm.base_url
'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

import base64
import importlib
import io
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from factcap.backends.options import check_int, check_text, take_options
from factcap.backends.request_cache import RequestCache, cacheable, request_key
from factcap.errors import FactcapError, require
from factcap.roles import (
    DEFAULT_CAPTION_PROMPT,
    JUDGE_INSTRUCTION,
    Generation,
    TokenLogprobs,
    check_pairs,
    judge_prompt,
    yes_ratio,
)

if TYPE_CHECKING:
    import openai
    from PIL import Image

    from factcap.roles import ChatMessage

__all__ = [
    "OpenAICaptioner",
    "OpenAIGrader",
    "OpenAIVQA",
    "OpenAILLM",
    "RemoteBatchError",
    "RemoteError",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
CHAT_PATH = "/chat/completions"
API_TYPES = ("openai", "azure")
# The SDK wants a key; with none (a local server), this one is never sent (see _send).
_NO_KEY = "no-key"
# 501 Not Implemented and 505 HTTP Version Not Supported will not change on a retry.
RETRY_STATUSES = frozenset({408, 409, 429}) | (frozenset(range(500, 600)) - {501, 505})
STRUCTURED_MODES = ("response_format", "guided_json", "off")
# A rejection of structured output: one of these statuses, and a body naming the feature.
_STRUCTURED_REJECT_STATUSES = frozenset({400, 422, 501})
_STRUCTURED_REJECT_WORDS = re.compile(
    r"response_format|json_schema|guided_json|guided|structured|unsupported|not supported|"
    r"unrecognized|not permitted|extra (?:inputs|fields)|unknown (?:field|parameter)",
    re.I,
)
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SNIPPET = 300

T = TypeVar("T")
R = TypeVar("R")


class RemoteError(FactcapError):
    """An OpenAI-compatible server failed to answer, or answered something unusable.

    ``server`` is the endpoint URL, ``status`` the last HTTP status (``None`` for timeouts and
    connection errors) and ``body`` the start of the last response body.
    """

    def __init__(self, message: str, *, server: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.server = server
        self.status = status
        self.body = body


class RemoteBatchError(RemoteError):
    """Some requests of a batch failed; the others were answered.

    ``results`` has one entry per input, in order: the answer, or the exception of a failed
    request; ``errors`` maps the index of each failed input to its exception. ``server``,
    ``status`` and ``body`` (and the message) are those of the first failure, plus how many
    of the batch failed. A caller can keep the answers and fail only the inputs in
    ``errors``.
    """

    def __init__(self, results: list[Any], errors: dict[int, RemoteError]):
        first = errors[min(errors)]
        super().__init__(
            f"{first} ({len(errors)} of {len(results)} requests of the batch failed)",
            server=first.server,
            status=first.status,
            body=first.body,
        )
        self.results = results
        self.errors = errors


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a ``Retry-After`` header (the delta-seconds form), capped; else None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # the HTTP-date form: fall back to our own backoff
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def _server(
    api_type: str, base_url: str | None, api_key: str | None, api_version: str | None
) -> tuple[str, str | None, str | None]:
    """``(base_url, api_key, api_version)`` for ``api_type``, from the arguments and the
    environment variables the SDK reads; a ``ValueError`` for what Azure lacks.

    >>> _server("openai", "http://gpu:8000/v1/", "sk-1", None)
    ('http://gpu:8000/v1', 'sk-1', None)
    >>> _server("azure", "https://res.openai.azure.com/", "k", "2024-10-21")
    ('https://res.openai.azure.com', 'k', '2024-10-21')
    """
    env = os.environ.get
    if api_type == "openai":
        if api_version is not None:
            raise ValueError("api_version is for api_type 'azure' (Azure OpenAI) only")
        url = base_url or env("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        return url.rstrip("/"), api_key if api_key is not None else env("OPENAI_API_KEY"), None
    if api_type != "azure":
        raise ValueError(f"api_type must be one of {', '.join(API_TYPES)}, not {api_type!r}")
    url = base_url or env("AZURE_OPENAI_ENDPOINT")
    version = api_version or env("OPENAI_API_VERSION")
    key = api_key if api_key is not None else env("AZURE_OPENAI_API_KEY")
    missing = [
        what
        for what, value in [
            ("base_url (the resource endpoint, or AZURE_OPENAI_ENDPOINT)", url),
            ("api_version (or OPENAI_API_VERSION)", version),
            (
                "api_key (or AZURE_OPENAI_API_KEY, or AZURE_OPENAI_AD_TOKEN)",
                key or env("AZURE_OPENAI_AD_TOKEN"),
            ),
        ]
        if not value
    ]
    if missing:
        raise ValueError(f"api_type 'azure' needs {'; '.join(missing)}")
    return url.rstrip("/"), key or None, version  # type: ignore[union-attr]


def _response_type(openai: Any) -> type:
    """The response class of the HTTP library under the SDK (``httpx`` in openai 1.x and 2.x,
    ``httpx2`` in 3.x): ``client.post(..., cast_to=<it>)`` returns the response unparsed."""
    for cls in openai.DefaultHttpxClient.__mro__:
        package = cls.__module__.split(".")[0]
        if package not in ("openai", "builtins"):
            return importlib.import_module(package).Response
    raise RuntimeError("cannot tell which HTTP library the openai SDK uses")


def _omit(openai: Any) -> Any:
    """The SDK's marker for a header not to send (``openai.Omit``; older 1.x SDKs have it in
    ``openai._types`` only)."""
    omit = getattr(openai, "Omit", None) or importlib.import_module("openai._types").Omit
    return omit()


def _rejects_structured(err: RemoteError) -> bool:
    """Whether ``err`` is a server refusing structured output (rather than the request)."""
    if err.status not in _STRUCTURED_REJECT_STATUSES:
        return False
    return bool(_STRUCTURED_REJECT_WORDS.search(f"{err.body} {err}"))


def structured_fields(schema: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The request fields that ask for JSON following ``schema``, in ``mode``.

    ``"response_format"``: the OpenAI form (also vLLM, SGLang, Ollama, llama.cpp), named after
    the schema's ``title`` when that is a valid name; ``"guided_json"``: vLLM's own field;
    ``"off"``: nothing.

    >>> structured_fields({"title": "claims", "type": "object"}, "response_format")
    {'response_format': {'type': 'json_schema', 'json_schema': {'name': 'claims', 'schema': {'title': 'claims', 'type': 'object'}}}}
    >>> structured_fields({"type": "array"}, "guided_json")
    {'guided_json': {'type': 'array'}}
    """
    if mode == "off":
        return {}
    if mode == "guided_json":
        return {"guided_json": dict(schema)}
    title = schema.get("title")
    name = title if isinstance(title, str) and _SCHEMA_NAME.match(title) else "response"
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": dict(schema)},
        }
    }


def image_data_url(image: Image.Image, fmt: str = "jpeg", quality: int = 90) -> str:
    """Encode a PIL image as a ``data:`` URL (base64 JPEG or PNG) for a vision message.

    >>> from PIL import Image
    >>> image_data_url(Image.new("RGB", (4, 4)), "png")[:22]
    'data:image/png;base64,'
    """
    fmt = fmt.lower()
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', not {fmt!r}")
    buf = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if fmt == "jpeg":
        rgb.save(buf, format="JPEG", quality=quality)
    else:
        rgb.save(buf, format="PNG")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _OpenAIClient:
    """Shared HTTP plumbing: options, retries, cache, concurrent batches, response parsing."""

    # Options every class accepts (name -> default); subclasses extend OPTIONS.
    BASE_OPTIONS: dict[str, Any] = {
        "extra_body": None,  # dict merged into every request body (e.g. {"top_k": 1})
        "backoff": 0.5,  # first retry waits about this many seconds, doubling after
        "jitter": 0.5,  # fraction of each backoff wait drawn at random (0: none, 1: full)
        "max_retry_wait": 30.0,  # cap on any single wait, Retry-After included
        "cache": True,  # answer deterministic requests from the response cache
        "cache_dir": None,  # default: $FACTCAP_CACHE/requests or ~/.cache/factcap/requests
    }
    OPTIONS: dict[str, Any] = {}

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 8,
        max_retries: int = 2,
        api_type: str = "openai",
        api_version: str | None = None,
        **options: Any,
    ) -> None:
        if not model:
            raise ValueError("an OpenAI-compatible backend needs a model name (openai:<model>)")
        opts = take_options(type(self).__name__, options, {**self.BASE_OPTIONS, **self.OPTIONS})
        self._check_base(opts)
        self._check(opts)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        require("openai", "openai")
        self.model = model
        self.name = f"openai:{model}"
        self.api_type = api_type
        self.base_url, self.api_key, self.api_version = _server(
            api_type, base_url, api_key, api_version
        )
        self.timeout = float(timeout)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.options: dict[str, Any] = opts
        self.cache: RequestCache | None = RequestCache(opts["cache_dir"]) if opts["cache"] else None
        self.structured_ok = True  # False once the server rejected structured output
        self.rng = random.Random()  # draws the jitter; seed it for reproducible waits
        self._client: openai.OpenAI | None = None
        self._response_type: type | None = None  # the SDK's HTTP response class
        self._pool: ThreadPoolExecutor | None = None  # sends a batch's requests
        self._lock = threading.Lock()
        # bounds the requests in flight, also across batches that call this backend together
        self._gate = threading.BoundedSemaphore(self.max_concurrency)

    def _check_base(self, options: dict[str, Any]) -> None:
        owner = type(self).__name__
        for name in ("backoff", "max_retry_wait"):
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{owner}: {name} must be a number >= 0, got {value!r}")
        jitter = options["jitter"]
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
            raise ValueError(f"{owner}: jitter must be a number in [0, 1], got {jitter!r}")
        if not isinstance(options["cache"], bool):
            raise ValueError(f"{owner}: cache must be true or false, got {options['cache']!r}")
        if options["cache_dir"] is not None and not isinstance(
            options["cache_dir"], (str, os.PathLike)
        ):
            raise ValueError(
                f"{owner}: cache_dir must be a path or None, got {options['cache_dir']!r}"
            )
        extra = options["extra_body"]
        if extra is not None and not isinstance(extra, Mapping):
            raise ValueError(f"{owner}: extra_body must be a mapping or None, got {extra!r}")

    def _check(self, options: dict[str, Any]) -> None:
        """Validate option values (subclasses extend); unknown names are already rejected."""

    @property
    def endpoint(self) -> str:
        """The URL requests go to (without Azure's ``api-version`` query)."""
        if self.api_type == "azure":
            return f"{self.base_url}/openai/deployments/{self.model}{CHAT_PATH}"
        return f"{self.base_url}{CHAT_PATH}"

    def _sdk(self) -> tuple[openai.OpenAI, type]:
        """The SDK's client (made at the first request) and its HTTP response class."""
        with self._lock:
            if self._client is None:
                import openai

                common = {"timeout": self.timeout, "max_retries": 0}  # retries are ours
                if self.api_type == "azure":
                    self._client = openai.AzureOpenAI(
                        azure_endpoint=self.base_url,
                        api_version=self.api_version,
                        api_key=self.api_key,
                        **common,
                    )
                else:
                    self._client = openai.OpenAI(
                        base_url=self.base_url, api_key=self.api_key or _NO_KEY, **common
                    )
                self._response_type = _response_type(openai)
            return self._client, self._response_type  # type: ignore[return-value]

    def _workers(self) -> ThreadPoolExecutor:
        """The threads that send a batch's requests: ``max_concurrency`` of them, started as
        needed and kept for the next batch (starting 16 threads anew costs a batch's stage
        about 4 ms of wall time, more than the SDK adds to its 16 requests)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="factcap-openai"
                )
            return self._pool

    def close(self) -> None:
        """Close the connection pool, the worker threads and the cache file (a later call
        opens them again)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> _OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_client", "_response_type", "_pool", "_lock", "_gate"):
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._gate = threading.BoundedSemaphore(self.max_concurrency)

    def _error(self, problem: str, status: int | None, body: str) -> RemoteError:
        """A RemoteError saying "<endpoint> <problem>", with the start of ``body``."""
        return RemoteError(
            f"{self.endpoint} {problem}", server=self.endpoint, status=status, body=_snippet(body)
        )

    # -- retries ---------------------------------------------------------------------------

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0 for the first retry).

        Without ``retry_after``: uniform in ``[(1 - jitter) * d, d]``, ``d = min(backoff *
        2**attempt, max_retry_wait)``. With it (the server's ``Retry-After``): that many
        seconds plus up to ``jitter * backoff``, capped at ``max_retry_wait``. The random
        part comes from ``self.rng`` (a :class:`random.Random`; seed it for reproducible
        waits).

        >>> client = OpenAILLM("m", backoff=1.0, jitter=0.5, max_retry_wait=30, cache=False)
        >>> all(1.0 <= client.retry_delay(1) <= 2.0 for _ in range(100))
        True
        >>> all(3.0 <= client.retry_delay(0, retry_after=3.0) <= 3.5 for _ in range(100))
        True
        """
        backoff = float(self.options["backoff"])
        jitter = float(self.options["jitter"])
        cap = float(self.options["max_retry_wait"])
        u = self.rng.random()
        if retry_after is not None:
            return min(retry_after + u * jitter * backoff, cap)
        return min(backoff * 2.0**attempt, cap) * (1.0 - jitter * u)

    def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion through the SDK, retried on 429/5xx/timeouts/connection errors."""
        import openai

        client, response_type = self._sdk()
        # no key: the placeholder the SDK wants is not sent, nor any Authorization header
        keyless = self.api_type == "openai" and not self.api_key
        headers = {"Authorization": _omit(openai)} if keyless else {}
        attempts = self.max_retries + 1
        status: int | None = None
        text = ""
        problem = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                with self._gate:
                    resp = client.post(
                        CHAT_PATH, body=body, cast_to=response_type, options={"headers": headers}
                    )
            except openai.APITimeoutError:
                status, text = None, ""
                problem = f"timed out after {self.timeout:g} s"
            except openai.APIConnectionError as exc:
                status, text = None, ""
                cause = exc.__cause__ or exc  # the HTTP client's own error says more
                problem = f"connection failed ({type(cause).__name__}: {cause})"
            except openai.APIStatusError as exc:
                resp = exc.response
                status, text = resp.status_code, resp.text
                problem = f"HTTP {status}: {_snippet(text)}"
                if status not in RETRY_STATUSES:
                    raise self._error(
                        f"rejected the request for model {self.model!r} with {problem}",
                        status,
                        text,
                    ) from None
                retry_after = _retry_after(
                    resp.headers.get("Retry-After"), float(self.options["max_retry_wait"])
                )
            else:
                return self._parse(resp)
            if attempt + 1 < attempts:
                time.sleep(self.retry_delay(attempt, retry_after))
        raise self._error(
            f"failed for model {self.model!r} after {attempts} attempt(s): {problem}", status, text
        )

    # -- one request: cache, structured output, HTTP ---------------------------------------

    def _complete(
        self,
        payload: dict[str, Any],
        extract: Callable[[dict[str, Any]], R],
        structured: Mapping[str, Any] | None = None,
    ) -> R:
        """``extract(completion)`` for one request (``payload`` + ``extra_body`` +
        ``structured`` fields), from the cache when possible; see the module docstring."""
        plain = {**payload, **(self.options["extra_body"] or {})}
        if not structured or not self.structured_ok:
            return self._cached(plain, extract)
        try:
            return self._cached({**plain, **structured}, extract)
        except RemoteError as err:
            if not _rejects_structured(err):
                raise
            with self._lock:
                first, self.structured_ok = self.structured_ok, False
            if first:
                log.warning(
                    "%s rejected structured output (%s); asking without it from now on and "
                    "parsing the answers tolerantly",
                    self.endpoint,
                    err.body or err,
                )
            return self._cached(plain, extract)

    def _cached(self, body: dict[str, Any], extract: Callable[[dict[str, Any]], R]) -> R:
        key = None
        if self.cache is not None and cacheable(body):
            key = request_key(CHAT_PATH, body)
            data = self.cache.get(key)
            if data is not None:
                try:
                    return extract(data)
                except RemoteError:  # an entry this backend cannot use: ask the server
                    pass
        data = self._send(body)
        result = extract(data)  # raises for unusable answers, which are then not stored
        if key is not None:
            self.cache.put(key, data)  # type: ignore[union-attr]
        return result

    def _parse(self, resp: Any) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            data = None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise self._error(
                f"(HTTP {resp.status_code}) did not return a chat completion for model "
                f"{self.model!r}: {_snippet(resp.text) or '<empty body>'}",
                resp.status_code,
                resp.text,
            )
        return data

    def _text(self, data: dict[str, Any]) -> str:
        """The assistant's reply text from a completion; RemoteError when it has none."""
        message = data["choices"][0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise self._error(
                f"returned a completion without message content for model {self.model!r}: "
                f"{_snippet(str(data))}",
                200,
                str(data),
            )
        return content

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` with at most ``max_concurrency`` in flight; input order kept.

        Every item runs to its end; if any raised :class:`RemoteError`, a
        :class:`RemoteBatchError` with the others' results follows (any other exception is
        raised as it is)."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        pool = self._workers()
        futures = [pool.submit(fn, item) for item in items]
        try:
            wait(futures)
        except BaseException:  # e.g. KeyboardInterrupt: do not start the rest
            for f in futures:
                f.cancel()
            raise
        results: list[Any] = []
        errors: dict[int, RemoteError] = {}
        for i, f in enumerate(futures):
            err = f.exception()
            if err is None:
                results.append(f.result())
                continue
            if not isinstance(err, RemoteError):
                raise err
            errors[i] = err
            results.append(err)
        if errors:
            raise RemoteBatchError(results, errors)
        return results

    def _image_url(self, image: Image.Image) -> str:
        """``image`` (resized as configured) as a data URL in the configured format."""
        return image_data_url(
            self._resize(image), self.options["image_format"], self.options["jpeg_quality"]
        )

    def _vision_message(
        self, image: Image.Image, text: str, url: str | None = None
    ) -> dict[str, Any]:
        """One user turn: the image (``url`` when already encoded), then ``text``."""
        url = url or self._image_url(image)
        return {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        }

    def _resize(self, image: Image.Image) -> Image.Image:
        side = self.options.get("max_image_side")
        if side and max(image.size) > side:
            image = image.copy()
            image.thumbnail((side, side))
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"


_VISION_OPTIONS: dict[str, Any] = {
    "image_format": "jpeg",  # "jpeg" or "png"
    "jpeg_quality": 90,
    "max_image_side": None,  # downscale (keeping aspect) before upload when set
}


class OpenAILLM(_OpenAIClient):
    """A chat LLM behind an OpenAI-compatible server (LLM role).

    ``chat(..., json_schema=schema)`` asks for JSON following ``schema`` (structured output;
    see the module docstring). Options: ``structured_output`` (``"response_format"``, the
    default; ``"guided_json"`` for vLLM's own field; ``"off"`` never to ask), plus
    ``extra_body``, ``backoff``, ``jitter``, ``max_retry_wait``, ``cache``, ``cache_dir``.

    >>> llm = OpenAILLM("llama3.1", base_url="http://localhost:11434/v1", cache=False)
    >>> llm.name
    'openai:llama3.1'
    >>> # llm.chat([[{"role": "user", "content": "Say hi"}]], max_new_tokens=8) -> ["Hi!"]
    >>> # llm.chat(conversations, json_schema={"type": "object", ...}) -> ['{"claims": [...]}']
    """

    OPTIONS = {"structured_output": "response_format"}

    def _check(self, options: dict[str, Any]) -> None:
        mode = options["structured_output"]
        if mode not in STRUCTURED_MODES:
            raise ValueError(
                f"OpenAILLM: structured_output must be one of {', '.join(STRUCTURED_MODES)}, "
                f"got {mode!r}"
            )

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """One reply per conversation, requested concurrently, in input order.

        With ``json_schema``, the server is asked to answer JSON following it (unless it
        rejected structured output before, or ``structured_output="off"``); the reply is
        still returned as text, for the caller's parser.
        """
        structured = (
            structured_fields(json_schema, self.options["structured_output"])
            if json_schema is not None
            else None
        )

        def one(conversation: Sequence[ChatMessage]) -> str:
            payload = {
                "model": self.model,
                "messages": [dict(m) for m in conversation],
                "max_tokens": int(max_new_tokens),
                "temperature": float(temperature),
            }
            return self._complete(payload, self._text, structured)

        return self._map(one, list(conversations))


class OpenAICaptioner(_OpenAIClient):
    """A vision chat model behind an OpenAI-compatible server, used as a captioner.

    Each image is sent as a base64 data URL in an OpenAI vision message, followed by the
    prompt. Options: ``prompt`` (default "Describe this image in detail."),
    ``max_new_tokens`` (256), ``temperature`` (0.0), ``image_format`` ("jpeg" | "png"),
    ``jpeg_quality`` (90), ``max_image_side`` (None: send the original size), plus
    ``extra_body``, ``backoff``, ``jitter``, ``max_retry_wait``, ``cache``, ``cache_dir``.

    >>> cap = OpenAICaptioner("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://gpu:8000/v1")
    >>> cap.options["prompt"]
    'Describe this image in detail.'
    >>> # cap.caption([Image.open("cat.jpg")]) -> ["A tabby cat sits on ..."]
    """

    #: ``caption(images, prompt=...)`` asks this prompt instead of the configured one.
    accepts_prompt = True
    OPTIONS = {
        "prompt": DEFAULT_CAPTION_PROMPT,
        "max_new_tokens": 256,
        "temperature": 0.0,
        **_VISION_OPTIONS,
    }

    def _check(self, options: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_text(owner, "prompt", options["prompt"], nonempty=True)
        check_int(owner, "max_new_tokens", options["max_new_tokens"], 1)

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        """One caption per image (concurrent requests, input order)."""
        text = prompt or self.options["prompt"]

        def one(image: Image.Image) -> str:
            payload = {
                "model": self.model,
                "messages": [self._vision_message(image, text)],
                "max_tokens": int(self.options["max_new_tokens"]),
                "temperature": float(self.options["temperature"]),
            }
            return self._complete(payload, lambda data: self._text(data).strip())

        return self._map(one, list(images))


def _yes_no(token: str) -> str | None:
    word = token.strip().strip(".,!:;\"'").lower()
    return word if word in ("yes", "no") else None


class OpenAIVQA(_OpenAIClient):
    """A vision chat model as the VQA role, asked yes or no: P("yes") from logprobs.

    Asks ``"<question> <instruction>"`` (the instruction defaults to "Answer yes or no.") with
    ``max_tokens=1, logprobs=true, top_logprobs=20`` and returns P(yes) / (P(yes) + P(no)), summing every spelling of yes
    and no ("Yes", " yes", "YES", "no.", ...) among the first token's top logprobs.

    Fallback: when the server returns no logprobs at all (some servers ignore the field),
    the answer text decides: 1.0 for yes, 0.0 for no — a hard answer, not a probability.
    Set ``require_logprobs=True`` to raise :class:`RemoteError` instead. When neither yes
    nor no appears (in the logprobs, or in the text without them), the result is
    ``float("nan")``: the question went unanswered, which is not the same as "no".

    Options: ``instruction`` ("Answer yes or no."), ``top_logprobs`` (20),
    ``require_logprobs`` (False), ``image_format``, ``jpeg_quality``, ``max_image_side``,
    ``extra_body``, ``backoff``, ``jitter``, ``max_retry_wait``, ``cache``, ``cache_dir``.

    >>> judge = OpenAIVQA("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://gpu:8000/v1")
    >>> judge.probability_from_logprobs({"Yes": -0.1, "No": -2.3})
    0.9002495108803148
    """

    OPTIONS = {
        "instruction": JUDGE_INSTRUCTION,
        "top_logprobs": 20,
        "require_logprobs": False,
        **_VISION_OPTIONS,
    }

    def _check(self, options: dict[str, Any]) -> None:
        check_text(type(self).__name__, "instruction", options["instruction"])

    @staticmethod
    def probability_from_logprobs(top: dict[str, float]) -> float:
        """Renormalised P(yes) over the yes/no spellings in ``{token: logprob}``; NaN if none."""
        mass = {"yes": 0.0, "no": 0.0}
        for token, logprob in top.items():
            word = _yes_no(token)
            if word is not None and logprob is not None and math.isfinite(logprob):
                mass[word] += math.exp(logprob)
        return yes_ratio(mass["yes"], mass["no"])

    def _first_token_logprobs(self, data: dict[str, Any]) -> dict[str, float] | None:
        logprobs = data["choices"][0].get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not content or not isinstance(content, list) or not isinstance(content[0], dict):
            return None
        first = content[0]
        top: dict[str, float] = {}
        for entry in first.get("top_logprobs") or []:
            if isinstance(entry, dict) and "token" in entry:
                top.setdefault(entry["token"], entry.get("logprob"))
        if "token" in first and first["token"] not in top:
            top[first["token"]] = first.get("logprob")
        return top or None

    def _probability(self, data: dict[str, Any]) -> float:
        """P(yes) from one completion: its logprobs, else (unless required) its text."""
        top = self._first_token_logprobs(data)
        if top is not None:
            return self.probability_from_logprobs(top)
        if self.options["require_logprobs"]:
            raise self._error(
                f"returned no logprobs for model {self.model!r} (require_logprobs=True)",
                200,
                str(data),
            )
        words = self._text(data).strip().split()
        word = _yes_no(words[0]) if words else None
        return {"yes": 1.0, "no": 0.0}.get(word or "", float("nan"))

    def yes_probability(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> list[float]:
        """P(yes) for each (image, question) pair, requested concurrently, answered in input
        order.

        The requests go out image by image (:func:`image_order`), each distinct image encoded
        once into one data URL string, so the questions about an image arrive one after
        another with the same bytes before the question (the image, then the question and
        instruction): a server with prefix caching (vLLM's ``--enable-prefix-caching``)
        computes that image's prefix once. A :class:`RemoteBatchError` indexes the inputs.
        """
        check_pairs(images, questions)
        urls: dict[int, str] = {}
        for image in images:
            if id(image) not in urls:
                urls[id(image)] = self._image_url(image)
        instruction = self.options["instruction"]

        def one(pair: tuple[Image.Image, str]) -> float:
            image, question = pair
            payload = {
                "model": self.model,
                "messages": [
                    self._vision_message(
                        image, judge_prompt(question, instruction), urls[id(image)]
                    )
                ],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": int(self.options["top_logprobs"]),
            }
            return self._complete(payload, self._probability)

        order = image_order(images)
        try:
            answers = self._map(one, [(images[i], questions[i]) for i in order])
        except RemoteBatchError as err:
            results: list[Any] = [None] * len(order)
            for sent, i in enumerate(order):
                results[i] = err.results[sent]
            raise RemoteBatchError(
                results, {order[sent]: e for sent, e in err.errors.items()}
            ) from err
        out = [0.0] * len(order)
        for sent, i in enumerate(order):
            out[i] = answers[sent]
        return out


def image_order(images: Sequence[object]) -> list[int]:
    """The order to send (image, question) pairs in: grouped by image (the same object), the
    groups in order of each image's first use, input order within a group.

    >>> a, b = object(), object()
    >>> image_order([a, b, a, b, a])
    [0, 2, 4, 1, 3]
    """
    groups: dict[int, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(id(image), []).append(i)
    return [i for group in groups.values() for i in group]


class OpenAIGrader(_OpenAIClient):
    """A vision chat model as a grader (the ``judge`` role): the answer text and, per
    generated token, its top logprobs.

    Each (image, prompt) pair is one request (image as a data URL, then the prompt;
    ``temperature`` 0) with ``logprobs=true, top_logprobs=N``. A server that returns no
    logprobs still gives the text: the :class:`~factcap.roles.Generation` then has
    ``tokens=None`` and the caller parses the text alone (``vlm_judge`` says
    ``"scoring": "parsed"``).

    Options: ``top_logprobs`` (20; OpenAI allows at most 20), ``image_format``,
    ``jpeg_quality``, ``max_image_side``, ``extra_body``, ``backoff``, ``jitter``,
    ``max_retry_wait``, ``cache``, ``cache_dir``.

    >>> grader = OpenAIGrader("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://gpu:8000/v1")
    >>> grader.tokens_from({"choices": [{"logprobs": {"content": [
    ...     {"token": "4", "logprob": -0.5, "top_logprobs": [{"token": "5", "logprob": -1.0}]}
    ... ]}}]})
    [TokenLogprobs(text='4', top={'5': -1.0, '4': -0.5})]
    """

    OPTIONS = {"top_logprobs": 20, **_VISION_OPTIONS}

    def _check(self, options: dict[str, Any]) -> None:
        check_int(type(self).__name__, "top_logprobs", options["top_logprobs"], 1)

    @staticmethod
    def tokens_from(data: dict[str, Any]) -> list[TokenLogprobs] | None:
        """Per-token logprobs of a completion (``choices[0].logprobs.content``), the chosen
        token among each one's alternatives; None when the server sent none."""
        logprobs = data["choices"][0].get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not isinstance(content, list) or not content:
            return None
        tokens = []
        for entry in content:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                return None
            top: dict[str, float] = {}
            for alt in entry.get("top_logprobs") or []:
                if isinstance(alt, dict) and isinstance(alt.get("token"), str):
                    logprob = alt.get("logprob")
                    if isinstance(logprob, (int, float)):
                        top.setdefault(alt["token"], float(logprob))
            if isinstance(entry.get("logprob"), (int, float)):
                top.setdefault(entry["token"], float(entry["logprob"]))
            tokens.append(TokenLogprobs(entry["token"], top))
        return tokens

    def _generation(self, data: dict[str, Any]) -> Generation:
        return Generation(self._text(data), self.tokens_from(data))

    def generate(
        self, images: Sequence[Image.Image], prompts: Sequence[str], max_new_tokens: int = 128
    ) -> list[Generation]:
        """One answer per (image, prompt) pair, requested concurrently, in input order."""
        check_pairs(images, prompts)

        def one(pair: tuple[Image.Image, str]) -> Generation:
            image, prompt = pair
            payload = {
                "model": self.model,
                "messages": [self._vision_message(image, prompt)],
                "max_tokens": int(max_new_tokens),
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": int(self.options["top_logprobs"]),
            }
            return self._complete(payload, self._generation)

        return self._map(one, list(zip(images, prompts, strict=True)))
