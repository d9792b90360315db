"""Shared HTTP pieces of the inference clients: the error type and the retry schedule."""

from __future__ import annotations

import httpx


class InferenceHTTPError(RuntimeError):
    """A server answered with an error status; `status` and `body` say which and why."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        hint = " (client error: check the request, it will not succeed on retry)" if status < 500 else ""
        super().__init__(f"{method} {url} -> HTTP {status}{hint}: {body[:2000]}")
        self.status = status
        self.body = body


def check(response: httpx.Response) -> httpx.Response:
    """Return the response if it is 2xx, else raise InferenceHTTPError with the server's reason."""
    if response.is_success:
        return response
    req = response.request
    raise InferenceHTTPError(req.method, str(req.url), response.status_code, response.text)


def retryable(err: BaseException) -> bool:
    """Connection-level failures and 5xx answers may succeed on another try (or replica); 4xx never."""
    if isinstance(err, InferenceHTTPError):
        return err.status >= 500
    return isinstance(err, httpx.TransportError)


def backoff_delay(attempt: int, base_s: float, cap_s: float = 10.0) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped at `cap_s`."""
    return min(cap_s, base_s * (2**attempt))
