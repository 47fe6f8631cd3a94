"""Faults the sandbox injects on request: a status, a body, a delay, N times."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

Vendor = Literal["hubspot", "salesforce", "any"]


class FaultSpec(BaseModel):
    """One fault, as posted to `POST /_sandbox/faults`.

    The next `times` requests of `vendor` whose method matches and whose path
    matches the `path` regular expression (searched, not anchored) get
    `status` with `body` and `headers`, after `delay_seconds`. Without a
    `status` the request is only delayed, then served normally (and with
    `answer_delay_seconds`, its answer held back after it was served). Without
    a `body` the vendor's own error shape for that status is sent.
    """

    vendor: Vendor = "any"
    method: str | None = Field(None, description="HTTP method to match; any if unset.")
    path: str = Field(".*", description="Regular expression searched in the path.")
    status: int | None = Field(None, ge=100, le=599)
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    delay_seconds: float = Field(0.0, ge=0, le=120)
    answer_delay_seconds: float = Field(
        0.0,
        ge=0,
        le=120,
        description=(
            "Serve the request, then hold the answer this long: a write that "
            "lands but whose answer comes too late for the client's timeout."
        ),
    )
    times: int = Field(1, ge=1, le=1_000_000)


@dataclass
class _Armed:
    spec: FaultSpec
    pattern: re.Pattern[str]
    left: int
    hits: int = 0


@dataclass
class FaultRegistry:
    """The armed faults, consumed in the order they were posted."""

    _armed: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, spec: FaultSpec) -> None:
        """Arms `spec`.

        Raises:
            ValueError: `path` is not a valid regular expression.
        """
        try:
            pattern = re.compile(spec.path)
        except re.error as exc:
            raise ValueError(
                f"path {spec.path!r} is not a regular expression: {exc}"
            ) from exc
        with self._lock:
            self._armed.append(_Armed(spec, pattern, spec.times))

    def take(self, vendor: str, method: str, path: str) -> FaultSpec | None:
        """The first armed fault matching this request, using up one of its times."""
        with self._lock:
            for armed in self._armed:
                spec = armed.spec
                if spec.vendor not in ("any", vendor):
                    continue
                if spec.method and spec.method.upper() != method.upper():
                    continue
                if not armed.pattern.search(path):
                    continue
                armed.left -= 1
                armed.hits += 1
                if armed.left == 0:
                    self._armed.remove(armed)
                return spec
        return None

    def pending(self) -> list[dict[str, Any]]:
        """The faults still armed, with how many times each is left."""
        with self._lock:
            return [
                armed.spec.model_dump() | {"left": armed.left} for armed in self._armed
            ]

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
