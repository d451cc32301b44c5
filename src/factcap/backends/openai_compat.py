"""LLM, captioner and yes/no judge over any OpenAI-compatible chat-completions server.

Works with vLLM, SGLang, Ollama, llama.cpp's server, LM Studio and OpenAI itself: only the
``POST {base_url}/chat/completions`` wire format is used, through plain ``httpx`` (no ``openai``
package, no torch). The base URL comes from the argument or ``OPENAI_BASE_URL`` (default
``http://127.0.0.1:8000/v1``), the key from the argument or ``OPENAI_API_KEY`` (local servers
usually need none).

A batch becomes concurrent requests (a thread pool bounded by ``max_concurrency``); results
come back in input order. Rate limits (429), server errors (5xx), timeouts and dropped
connections are retried ``max_retries`` times with exponential backoff (a ``Retry-After``
header in seconds is honoured, capped at ``max_retry_wait``). When a request still fails, or
the server answers something that is not a chat completion, :class:`RemoteError` is raised:
a failure is never turned into an empty caption.

>>> llm = OpenAILLM("qwen2.5-7b-instruct", base_url="http://127.0.0.1:8000/v1")
>>> llm.base_url
'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

import base64
import io
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from factcap.backends.options import check_int, check_text, take_options
from factcap.backends.roles import (
    DEFAULT_CAPTION_PROMPT,
    JUDGE_INSTRUCTION,
    check_pairs,
    judge_prompt,
    yes_ratio,
)
from factcap.errors import FactcapError

if TYPE_CHECKING:
    from PIL import Image

    from factcap.backends.roles import ChatMessage

__all__ = ["OpenAICaptioner", "OpenAIJudge", "OpenAILLM", "RemoteError"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
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
    """Shared HTTP plumbing: options, retries, concurrent batches, response parsing."""

    # Options every class accepts (name -> default); subclasses extend OPTIONS.
    BASE_OPTIONS: dict[str, Any] = {
        "extra_body": None,  # dict merged into every request body (e.g. {"top_k": 1})
        "backoff": 0.5,  # first retry waits this many seconds, doubling after
        "max_retry_wait": 30.0,  # cap on any single wait, Retry-After included
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
        **options: Any,
    ) -> None:
        if not model:
            raise ValueError("an OpenAI-compatible backend needs a model name (openai:<model>)")
        opts = take_options(type(self).__name__, options, {**self.BASE_OPTIONS, **self.OPTIONS})
        self._check(opts)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        self.model = model
        self.name = f"openai:{model}"
        url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.options: dict[str, Any] = opts
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _check(self, options: dict[str, Any]) -> None:
        """Validate option values (subclasses extend); unknown names are already rejected."""

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Content-Type": "application/json"}
                if self.api_key:
                    headers["Authorization"] = f"Bearer {self.api_key}"
                self._client = httpx.Client(
                    timeout=self.timeout,
                    headers=headers,
                    limits=httpx.Limits(max_connections=self.max_concurrency),
                )
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> _OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _error(self, problem: str, status: int | None, body: str) -> RemoteError:
        """A RemoteError saying "<endpoint> <problem>", with the start of ``body``."""
        return RemoteError(
            f"{self.endpoint} {problem}", server=self.endpoint, status=status, body=_snippet(body)
        )

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        cap = float(self.options["max_retry_wait"])
        delay = retry_after if retry_after is not None else self.options["backoff"] * 2**attempt
        time.sleep(min(delay, cap))

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One chat completion, retried on 429/5xx/timeouts/connection errors."""
        body = {**payload, **(self.options["extra_body"] or {})}
        client = self._http()
        attempts = self.max_retries + 1
        status: int | None = None
        text = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                resp = client.post(self.endpoint, json=body)
            except httpx.TimeoutException:
                status, text = None, ""
                problem = f"timed out after {self.timeout:g} s"
            except httpx.TransportError as exc:
                status, text = None, ""
                problem = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                status, text = resp.status_code, resp.text
                if status < 400:
                    return self._parse(resp)
                problem = f"HTTP {status}: {_snippet(text)}"
                if status not in RETRY_STATUSES:
                    raise self._error(
                        f"rejected the request for model {self.model!r} with {problem}",
                        status,
                        text,
                    )
                retry_after = _retry_after(
                    resp.headers.get("Retry-After"), float(self.options["max_retry_wait"])
                )
            if attempt + 1 < attempts:
                self._wait(attempt, retry_after)
        raise self._error(
            f"failed for model {self.model!r} after {attempts} attempt(s): {problem}", status, text
        )

    def _parse(self, resp: httpx.Response) -> dict[str, Any]:
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
        """``fn`` over ``items`` with at most ``max_concurrency`` in flight; input order kept."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        workers = min(self.max_concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="factcap-openai") as ex:
            futures = [ex.submit(fn, item) for item in items]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _vision_message(self, image: Image.Image, text: str) -> dict[str, Any]:
        url = image_data_url(
            self._resize(image), self.options["image_format"], self.options["jpeg_quality"]
        )
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

    Options: ``extra_body`` (dict merged into each request), ``backoff``, ``max_retry_wait``.

    >>> llm = OpenAILLM("llama3.1", base_url="http://localhost:11434/v1")
    >>> llm.name
    'openai:llama3.1'
    >>> # llm.chat([[{"role": "user", "content": "Say hi"}]], max_new_tokens=8) -> ["Hi!"]
    """

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[str]:
        """One reply per conversation, requested concurrently, in input order."""

        def one(conversation: Sequence[ChatMessage]) -> str:
            payload = {
                "model": self.model,
                "messages": [dict(m) for m in conversation],
                "max_tokens": int(max_new_tokens),
                "temperature": float(temperature),
            }
            return self._text(self._post(payload))

        return self._map(one, list(conversations))


class OpenAICaptioner(_OpenAIClient):
    """A vision chat model behind an OpenAI-compatible server, used as a captioner.

    Each image is sent as a base64 data URL in an OpenAI vision message, followed by the
    prompt. Options: ``prompt`` (default "Describe this image in detail."),
    ``max_new_tokens`` (256), ``temperature`` (0.0), ``image_format`` ("jpeg" | "png"),
    ``jpeg_quality`` (90), ``max_image_side`` (None: send the original size), plus
    ``extra_body``, ``backoff``, ``max_retry_wait``.

    >>> cap = OpenAICaptioner("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://gpu:8000/v1")
    >>> cap.options["prompt"]
    'Describe this image in detail.'
    >>> # cap.caption([Image.open("cat.jpg")]) -> ["A tabby cat sits on ..."]
    """

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
            return self._text(self._post(payload)).strip()

        return self._map(one, list(images))


def _yes_no(token: str) -> str | None:
    word = token.strip().strip(".,!:;\"'").lower()
    return word if word in ("yes", "no") else None


class OpenAIJudge(_OpenAIClient):
    """A vision chat model as a yes/no judge (VQA role): P("yes") from logprobs.

    Asks ``"<question> <instruction>"`` (the instruction defaults to "Answer yes or no.") with ``max_tokens=1, logprobs=true,
    top_logprobs=20`` and returns P(yes) / (P(yes) + P(no)), summing every spelling of yes
    and no ("Yes", " yes", "YES", "no.", ...) among the first token's top logprobs.

    Fallback: when the server returns no logprobs at all (some servers ignore the field),
    the answer text decides: 1.0 for yes, 0.0 for no — a hard answer, not a probability.
    Set ``require_logprobs=True`` to raise :class:`RemoteError` instead. When neither yes
    nor no appears (in the logprobs, or in the text without them), the result is
    ``float("nan")``: the question went unanswered, which is not the same as "no".

    Options: ``instruction`` ("Answer yes or no."), ``top_logprobs`` (20),
    ``require_logprobs`` (False), ``image_format``,
    ``jpeg_quality``, ``max_image_side``, ``extra_body``, ``backoff``, ``max_retry_wait``.

    >>> judge = OpenAIJudge("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://gpu:8000/v1")
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

    def yes_probability(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> list[float]:
        """P(yes) for each (image, question) pair, requested concurrently, in input order."""
        check_pairs(images, questions)

        def one(pair: tuple[Image.Image, str]) -> float:
            image, question = pair
            payload = {
                "model": self.model,
                "messages": [
                    self._vision_message(image, judge_prompt(question, self.options["instruction"]))
                ],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": int(self.options["top_logprobs"]),
            }
            data = self._post(payload)
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

        return self._map(one, list(zip(images, questions, strict=True)))
