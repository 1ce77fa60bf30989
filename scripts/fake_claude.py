"""A fake Anthropic Messages API on 127.0.0.1, for tests and for running ara offline by hand.

    python scripts/fake_claude.py [--port 8765]
    export ANTHROPIC_API_KEY=fake ANTHROPIC_BASE_URL=http://127.0.0.1:8765
    ara submit task.toml --set run.planner=anthropic

It speaks enough of `POST /v1/messages` for the real `anthropic` SDK: it checks that a key came
(`x-api-key` or `Authorization: Bearer`), records every request, answers forced tool calls with
structured input, and reports usage with prompt-cache fields (a prefix up to the last
`cache_control` marker is a cache write the first time and a cache read after). Tests script it
reply by reply (`push`); without a script it plays a plausible planner and summarizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: a status, a body (None: the default responder's), headers, a delay."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # sent as is (broken JSON, truncated bodies)
    tool_input: Any = None  # shorthand: a tool_use reply carrying this input
    stop_reason: str | None = None


def tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: four characters a token."""
    return math.ceil(len(text) / 4)


def _cache_prefixes(body: dict[str, Any]) -> list[str]:
    """The prompt prefixes ending at each cache_control marker, in the API's order: tools, system."""
    parts: list[str] = []
    prefixes: list[str] = []
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    for block in [*(body.get("tools") or []), *system]:
        parts.append(json.dumps(block, sort_keys=True))
        if "cache_control" in block:
            prefixes.append("".join(parts))
    return prefixes


def message(
    content: list[dict[str, Any]], usage: dict[str, int], model: str, stop_reason: str
) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{time.monotonic_ns()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


class FakeClaude:
    """The server; `requests` holds every request as {path, headers, body, size}."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: deque[Reply] = deque()  # for any request
        self.by_tool: dict[str, deque[Reply]] = {}  # for requests forcing that tool, first
        self._cache: set[str] = set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/v1/models"):
                    self._send(200, {"data": [{"id": "claude-opus-5-5", "type": "model"}], "has_more": False})
                else:
                    self._send(
                        404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}}
                    )

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                auth = self.headers.get("x-api-key") or self.headers.get("authorization", "").removeprefix(
                    "Bearer "
                )
                with fake._lock:
                    fake.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "size": len(raw),
                        }
                    )
                    reply = fake.next_reply(body)
                if not auth:
                    self._send(
                        401,
                        {"type": "error", "error": {"type": "authentication_error", "message": "no API key"}},
                    )
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                if self.path.startswith("/v1/messages/count_tokens"):
                    self._send(200, {"input_tokens": tokens(json.dumps(body))})
                    return
                if reply.raw is not None:
                    self._send_bytes(reply.status, reply.raw, reply.headers)
                    return
                if reply.status != 200:
                    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(reply.status, "api_error")
                    error = reply.body or {"type": "error", "error": {"type": kind, "message": "scripted"}}
                    self._send(reply.status, error, reply.headers)
                    return
                self._send(200, fake.answer(body, reply), reply.headers)

            def _send(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                self._send_bytes(status, json.dumps(payload).encode(), headers)

            def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("request-id", f"req_fake_{len(fake.requests)}")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeClaude:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def push(self, *replies: Reply, tool: str | None = None) -> None:
        """Script the next replies: to any request, or only to requests forcing `tool`."""
        with self._lock:
            (self.by_tool.setdefault(tool, deque()) if tool else self.script).extend(replies)

    def next_reply(self, body: dict[str, Any]) -> Reply:
        tool = (body.get("tool_choice") or {}).get("name") if isinstance(body, dict) else None
        queue = self.by_tool.get(tool or "")
        if queue:
            return queue.popleft()
        return self.script.popleft() if self.script else Reply()

    def calls(self, tool: str) -> list[dict[str, Any]]:
        """Requests that forced `tool` (propose_hypotheses, report_health, judge_trial)."""
        return [r for r in self.requests if (r["body"].get("tool_choice") or {}).get("name") == tool]

    def messages(self) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests
            if r["path"].startswith("/v1/messages") and "count_tokens" not in r["path"]
        ]

    # -- answers ------------------------------------------------------------------------------
    def usage(self, body: dict[str, Any], output: str) -> dict[str, int]:
        total = tokens(json.dumps({k: body.get(k) for k in ("tools", "system", "messages")}, sort_keys=True))
        usage = {
            "input_tokens": total,
            "output_tokens": tokens(output),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        prefixes = _cache_prefixes(body)
        if prefixes:
            keys = [hashlib.sha256(p.encode()).hexdigest() for p in prefixes]
            with self._lock:
                hits = [k in self._cache for k in keys]
                self._cache.update(keys)
            # The longest prefix seen before is read from the cache; the rest up to the last marker
            # is written to it.
            read = max((tokens(p) for p, hit in zip(prefixes, hits, strict=True) if hit), default=0)
            written = tokens(prefixes[-1]) - read
            read, written = min(read, total), min(written, total - min(read, total))
            usage["input_tokens"] = total - read - written
            usage["cache_read_input_tokens"] = read
            usage["cache_creation_input_tokens"] = written
        return usage

    def answer(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        if reply.body is not None:
            return reply.body
        tool = (body.get("tool_choice") or {}).get("name")
        content: list[dict[str, Any]]
        if reply.tool_input is not None:
            tool_input = reply.tool_input
        elif tool == "propose_hypotheses":
            tool_input = plan(prompt_text(body))
        elif tool == "report_health":
            tool_input = health(prompt_text(body))
        elif tool == "judge_trial":
            tool_input = judge(prompt_text(body))
        else:
            text = "ok"
            return message(
                [{"type": "text", "text": text}], self.usage(body, text), body.get("model", ""), "end_turn"
            )
        content = [
            {
                "type": "tool_use",
                "id": f"toolu_{len(self.requests)}",
                "name": tool or "tool",
                "input": tool_input,
            }
        ]
        return message(
            content,
            self.usage(body, json.dumps(tool_input)),
            body.get("model", ""),
            reply.stop_reason or "tool_use",
        )


def prompt_text(body: dict[str, Any]) -> str:
    chunks = []
    system = body.get("system") or []
    for block in [system] if isinstance(system, str) else system:
        chunks.append(block if isinstance(block, str) else block.get("text", ""))
    for msg in body.get("messages") or []:
        content = msg.get("content")
        if isinstance(content, str):
            chunks.append(content)
        else:
            chunks += [c.get("text", "") for c in content or [] if isinstance(c, dict)]
    return "\n".join(chunks)


# -- the default planner: plausible, deterministic proposals from the prompt's own files ---------
_FILE = re.compile(r"^=== FILE: (?P<path>\S+) ===\n(?P<text>.*?)^=== END FILE ===$", re.M | re.S)
_NUMBER_LINE = re.compile(
    r"^(?P<key>[A-Za-z_][\w]*) = (?P<value>-?\d+(\.\d+)?(e-?\d+)?)(?P<rest>[^\n]*)$", re.M
)
_CODE_IDEAS = [
    (
        "Centre each slide's embeddings",
        "    return bag\n",
        "    return bag - bag.mean(axis=0, keepdims=True)  # remove the per-slide shift\n",
        "A shift shared by all patches of a slide hides the stain signal; centring removes it.",
    ),
    (
        "GELU instead of ReLU in the encoder",
        "nn.ReLU()",
        "nn.GELU()",
        "A smoother activation often trains more steadily at small widths.",
    ),
]


def plan(prompt: str) -> dict[str, Any]:
    wanted = re.search(r"Propose exactly (\d+) hypothes", prompt)
    n = int(wanted.group(1)) if wanted else 1
    tried = set(re.findall(r"^T\d{4} \S+ (.+?) \|", prompt, re.M))
    files = {m.group("path"): m.group("text") for m in _FILE.finditer(prompt)}
    out: list[dict[str, Any]] = []
    for title, search, replace, why in _CODE_IDEAS:
        for path, text in files.items():
            if len(out) < n and title not in tried and path.endswith(".py") and text.count(search) == 1:
                # ara's edit rule: a search block is whole lines, so widen to the line around it.
                start = text.rfind("\n", 0, text.find(search)) + 1
                end = text.find("\n", text.find(search) + len(search) - 1) + 1 or len(text)
                line = text[start:end]
                out.append(
                    {
                        "title": title,
                        "rationale": why,
                        "expected": "higher validation metric",
                        "risk": "low",
                        "edits": [{"path": path, "search": line, "replace": line.replace(search, replace)}],
                    }
                )
                tried.add(title)
    factors = [0.5, 2.0, 0.3, 3.0, 0.7, 1.5]
    for path, text in files.items():
        for i, m in enumerate(_NUMBER_LINE.finditer(text)):
            if len(out) >= n or m.group("key") in ("steps", "seed"):
                continue
            value = float(m.group("value"))
            factor = factors[(len(tried) + i) % len(factors)]
            new: float | int = value * factor
            new = max(1, round(new)) if re.fullmatch(r"-?\d+", m.group("value")) else float(f"{new:.3g}")
            title = f"{m.group('key')} from {m.group('value')} to {new}"
            if title in tried or new == value:
                continue
            tried.add(title)
            line = m.group(0)
            out.append(
                {
                    "title": title,
                    "rationale": f"Try {m.group('key')} x{factor:g}.",
                    "expected": "unclear",
                    "risk": "low",
                    "edits": [
                        {
                            "path": path,
                            "search": line + "\n",
                            "replace": f"{m.group('key')} = {new}{m.group('rest')}\n",
                        }
                    ],
                }
            )
    return {"hypotheses": out}


def health(prompt: str) -> dict[str, Any]:
    bad = re.search(r"\b(nan|inf)\b", prompt.split("LOG TAIL", 1)[-1], re.I)
    return {
        "health": "diverging" if bad else "ok",
        "action": "cancel" if bad else "continue",
        "note": "loss is not finite" if bad else "training proceeds",
    }


def judge(prompt: str) -> dict[str, Any]:
    keep = "Beats the incumbent by the margin: yes" in prompt
    title = re.search(r"^Title: (.+)$", prompt, re.M)
    name = title.group(1) if title else "the change"
    return {
        "advice": "keep" if keep else "revert",
        "reason": "metric improved" if keep else "no improvement",
        "summary": f"{name}: {'improved' if keep else 'did not improve'} the metric.",
        "learning": f"{name} {'helps' if keep else 'does not help'}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    fake = FakeClaude(args.port).start()
    print(
        f"fake Anthropic API on {fake.url}; set ANTHROPIC_BASE_URL={fake.url} ANTHROPIC_API_KEY=fake",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
