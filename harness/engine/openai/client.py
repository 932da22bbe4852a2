"""Requests to an OpenAI-compatible server: JSON over HTTP (the standard library's), a timeout per request,
retries with exponential backoff on what a busy or restarting server answers (429, 5xx, a refused or dropped
connection, a timeout, a body that is not the JSON asked for), and a bounded number of requests in flight.
Everything else a server answers (a 4xx: a wrong model name, a prompt too long) is one line at once."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from harness.errors import HarnessError

Item = TypeVar("Item")
Result = TypeVar("Result")
RETRIED_STATUS = {408, 409, 429, 500, 502, 503, 504}
FIRST_WAIT_S = 0.5  # doubled after each failed try


class Retryable(Exception):
    """A failure that a later try may not meet."""


@dataclass(frozen=True)
class Client:
    base_url: str  # up to /v1, e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None  # the environment variable holding the key: the key itself is never in a config
    timeout_s: float
    max_retries: int
    concurrency: int

    def get(self, path: str) -> dict[str, Any]:
        return self._with_retries("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._with_retries("POST", path, body)

    def map(self, call: Callable[[Item], Result], items: Iterable[Item], most: int | None = None) -> Iterator[Result]:
        """call(item) for every item, at most `concurrency` (and `most`) at once, in the items' order. On an error or
        Ctrl-C the requests not started are dropped and the run does not wait for those in flight (up to timeout_s
        each)."""
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, most or self.concurrency))
        try:
            yield from pool.map(call, items)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _with_retries(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"
        for attempt in range(self.max_retries + 1):
            try:
                return self._once(method, url, body)
            except Retryable as failure:
                if attempt == self.max_retries:
                    tries = f"{attempt + 1} time{'s' if attempt else ''}"
                    raise HarnessError(f"the server at {self.base_url} failed {tries} ({failure}); "
                                       "the finished requests are kept: rerun the same command once it answers") from None
                time.sleep(FIRST_WAIT_S * 2**attempt)
        raise AssertionError("unreachable")

    def _once(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise HarnessError(f"model.api_key_env names {self.api_key_env}, which is not set")
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = " ".join(error.read().decode(errors="replace").split())[:300]
            if error.code in RETRIED_STATUS:
                raise Retryable(f"last: HTTP {error.code} {detail}") from None
            raise HarnessError(f"the server at {self.base_url} refused {method} {url}: HTTP {error.code} {detail}") \
                from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise Retryable(f"last: {type(reason).__name__} {reason}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise Retryable(f"last: a body that is not JSON: {raw[:80]!r}") from None
        if not isinstance(answer, dict):
            raise Retryable(f"last: a JSON body that is not an object: {raw[:80]!r}")
        return answer
