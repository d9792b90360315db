"""Typed httpx client of the training service.

A request that never reached the server (connection refused/reset before sending) is retried with
backoff; other transport errors are retried only for calls that are safe to repeat (everything
but optim_step). A 4xx/5xx answer raises TrainerServiceError with the server's reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
import torch
from pydantic import BaseModel

from nexrl_runtime.trainer_service import storage
from nexrl_runtime.trainer_service.api import (
    ForwardBackwardRequest,
    ForwardBackwardResponse,
    Health,
    LoadedResponse,
    LogprobsRequest,
    LogprobsResponse,
    NameRequest,
    OptimStepResponse,
    SavedResponse,
)

M = TypeVar("M", bound=BaseModel)


class TrainerServiceError(RuntimeError):
    """The service answered with an error status; `reason` is its `detail`."""

    def __init__(self, method: str, path: str, status: int, reason: object) -> None:
        super().__init__(f"{method} {path} -> {status}: {reason}")
        self.status = status
        self.reason = reason


class TrainerClient:
    """One service at `base_url`. `timeout` bounds each call (a forward_backward on a big batch is slow)."""

    def __init__(
        self, base_url: str, timeout: float = 600.0, retries: int = 4, backoff: float = 0.25
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TrainerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError:
                if attempt == self.retries:
                    raise
            except httpx.TransportError:
                if not idempotent or attempt == self.retries:
                    raise
            else:
                if response.is_success:
                    return response
                try:
                    reason = response.json().get("detail", response.text)
                except ValueError:
                    reason = response.text
                raise TrainerServiceError(method, path, response.status_code, reason)
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _call(self, path: str, body: BaseModel | None, out: type[M], *, idempotent: bool = True) -> M:
        payload = None if body is None else body.model_dump(mode="json")
        response = self._request("POST", path, json=payload, idempotent=idempotent)
        return out.model_validate(response.json())

    def health(self) -> Health:
        return Health.model_validate(self._request("GET", "/health").json())

    def wait_ready(self, timeout: float) -> Health:
        """Poll /health until it answers (the service may still be loading its model)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except httpx.TransportError as err:
                if time.monotonic() + self.backoff > deadline:
                    raise TimeoutError(
                        f"training service at {self.base_url} not ready in {timeout} s"
                    ) from err
            time.sleep(self.backoff)

    def forward_backward(self, req: ForwardBackwardRequest) -> ForwardBackwardResponse:
        return self._call("/forward_backward", req, ForwardBackwardResponse)

    def optim_step(self) -> OptimStepResponse:
        return self._call("/optim_step", None, OptimStepResponse, idempotent=False)

    def compute_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        return self._call(
            "/compute_logprobs", LogprobsRequest(sequences=sequences), LogprobsResponse
        ).logprobs

    def get_weights(self) -> dict[str, torch.Tensor]:
        return storage.from_bytes(self._request("GET", "/weights").content)

    def put_weights(self, state: Mapping[str, torch.Tensor]) -> int:
        response = self._request(
            "PUT",
            "/weights",
            content=storage.to_bytes(state),
            headers={"content-type": "application/octet-stream"},
        )
        return int(response.json()["tensors"])

    def save_weights(self, name: str) -> SavedResponse:
        # not repeated: a retry after a lost answer would find the folder written and get a 409
        return self._call("/save_weights", NameRequest(name=name), SavedResponse, idempotent=False)

    def save_checkpoint(self, name: str) -> SavedResponse:
        return self._call("/save_checkpoint", NameRequest(name=name), SavedResponse)

    def load_checkpoint(self, name: str) -> LoadedResponse:
        return self._call("/load_checkpoint", NameRequest(name=name), LoadedResponse)
