"""Model calls through the anthropic SDK: one forced tool call each, with usage, cost and scrubbing."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .jobenv import secret_values
from .spec import ModelsSection, PriceSpec

# US dollars per million tokens (input, output), Nov 2026; a task overrides them in [models.prices].
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-fable-5-2": (8.0, 40.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-haiku-5-5": (0.10, 0.50),
}

_SECRETS = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9]{20,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"),  # JWTs
    re.compile(r"\b[A-Za-z0-9+/_\-]{40,}={0,2}"),  # long opaque tokens (keys, base64 secrets)
]
_ASSIGNED = re.compile(
    r"(?i)\b([\w.-]*(?:api[_-]?key|token|secret|password|passwd|credential)[\w.-]*)"
    r"(\s*[:=]\s*)(\S+)"
)


def scrub(text: str) -> str:
    """Text with anything that looks like a secret replaced: log tails go to a third party."""
    for value in secret_values():
        text = text.replace(value, "[redacted]")
    text = _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    for pattern in _SECRETS:
        text = pattern.sub("[redacted]", text)
    return text


_TAKE = threading.Lock()  # the planner's thread appends while the controller's takes


class LLMUnavailable(Exception):
    """The API did not answer usefully after the SDK's retries (rate limits, overload, 5xx, timeouts)."""


@dataclass
class Call:
    """One model call as the ledger records it (never the prompt, never a header)."""

    role: str  # planner | summarizer
    model: str
    trial: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0
    request_bytes: int = 0
    duration_s: float = 0.0
    error: str = ""
    stop_reason: str = ""
    at: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens

    def log_line(self) -> str:
        """One line for the controller log: size and usage, never content."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        return (
            f"{stamp} llm {self.role} {self.model}{' ' + self.trial if self.trial else ''}: request "
            f"{self.request_bytes} B, in {self.input_tokens} + cache write {self.cache_write_tokens} + "
            f"cache read {self.cache_read_tokens}, out {self.output_tokens}, ${self.cost_usd:.5f}, "
            f"{self.duration_s:.1f} s{', stop ' + self.stop_reason if self.stop_reason else ''}"
            f"{', error ' + self.error if self.error else ''}"
        )


def price(models: ModelsSection, model: str) -> PriceSpec | None:
    if model in models.prices:
        return models.prices[model]
    known = DEFAULT_PRICES.get(model)
    return PriceSpec(input=known[0], output=known[1]) if known else None


def cost(p: PriceSpec, call: Call) -> float:
    write = p.cache_write if p.cache_write is not None else 1.25 * p.input
    read = p.cache_read if p.cache_read is not None else 0.1 * p.input
    return (
        call.input_tokens * p.input
        + call.output_tokens * p.output
        + call.cache_write_tokens * write
        + call.cache_read_tokens * read
    ) / 1e6


@dataclass
class ToolResult:
    input: Any  # the tool_use block's input (None when the model answered otherwise)
    stop_reason: str
    call: Call


@dataclass
class LLM:
    """The SDK client shared by planner and summarizer; each call lands in `calls` for the ledger."""

    models: ModelsSection
    client: Any = None  # anthropic.Anthropic; built lazily so that importing ara stays fast
    clock: Callable[[], float] = time.time
    calls: list[Call] = field(default_factory=list)
    # Read once, when the run opens: the client is built later on the planner's thread, while
    # os.environ may be swapped for a job's allowlisted environment (jobenv.exported).
    credentials: dict[str, str] = field(
        default_factory=lambda: {
            key: os.environ[name]
            for key, name in (
                ("api_key", "ANTHROPIC_API_KEY"),
                ("auth_token", "ANTHROPIC_AUTH_TOKEN"),
                ("base_url", "ANTHROPIC_BASE_URL"),
            )
            if os.environ.get(name)
        }
    )

    def _client(self) -> Any:
        if self.client is None:
            import anthropic

            # By name (None, the client's default, where unset): each has its own type in the client.
            self.client = anthropic.Anthropic(
                api_key=self.credentials.get("api_key"),
                auth_token=self.credentials.get("auth_token"),
                base_url=self.credentials.get("base_url"),
                max_retries=self.models.max_retries,
                timeout=self.models.timeout_s,
            )
        return self.client

    def take_calls(self, role: str | None = None) -> list[Call]:
        """Calls made since the last take (of one role: the planner's come from its own thread)."""
        with _TAKE:
            calls = [c for c in self.calls if role is None or c.role == role]
            self.calls = [c for c in self.calls if not (role is None or c.role == role)]
        return calls

    def tool_call(
        self,
        *,
        role: str,
        model: str,
        system: list[dict[str, Any]],
        user: str,
        tool: dict[str, Any],
        max_tokens: int,
        effort: str | None,
        trial: str | None = None,
    ) -> ToolResult:
        """Force one tool call; the SDK retries 408/409/429/5xx with backoff and retry-after."""
        import anthropic

        params: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "system": system,
            "messages": [{"role": "user", "content": user}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": tool["name"]},
        }
        if effort:
            params["output_config"] = {"effort": effort}
        call = Call(
            role=role, model=model, trial=trial, request_bytes=len(json.dumps(params)), at=self.clock()
        )
        started = time.monotonic()
        try:
            response = self._client().messages.create(**params)
        except anthropic.APIError as exc:
            call.duration_s = time.monotonic() - started
            call.error = _describe(exc)
            self.calls.append(call)
            raise LLMUnavailable(call.error) from None
        call.duration_s = time.monotonic() - started
        usage = response.usage
        if usage is not None:
            call.input_tokens = usage.input_tokens or 0
            call.output_tokens = usage.output_tokens or 0
            call.cache_write_tokens = usage.cache_creation_input_tokens or 0
            call.cache_read_tokens = usage.cache_read_input_tokens or 0
        p = price(self.models, model)
        call.cost_usd = round(cost(p, call), 8) if p else 0.0
        call.stop_reason = response.stop_reason or ""
        self.calls.append(call)
        blocks = [b for b in response.content or [] if getattr(b, "type", "") == "tool_use"]
        return ToolResult(blocks[0].input if blocks else None, call.stop_reason, call)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    kind = type(exc).__name__
    return f"{kind}{f' {status}' if status else ''}: {scrub(str(exc))[:300]}"
