"""Reading what a run printed: metrics in the code's own style, step lines, names that look like goals."""

from __future__ import annotations

import re
from typing import Any

from .folder import words

# What a name says about its goal: tokens of the name that start with one of these.
MIN_WORDS = words("loss err bpb bpc ppl perplexity mse mae rmse wer cer nll fid")
MAX_WORDS = words(
    "acc f1 auc score map iou dice bleu rouge r2 precision recall reward return ndcg mrr psnr ssim"
)
HELD_OUT = ("val", "valid", "validation", "test", "eval", "dev", "holdout")
NOT_METRICS = words(
    "step steps epoch epochs iter iters iteration it time elapsed seconds sec s ms lr learning_rate seed "
    "batch bs gpu rank trained took"
)

_NUM = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_PRINTED = re.compile(
    rf"(?<![\w./-])(?P<key>[A-Za-z][\w./-]*?)(?P<sep>\s*[=:]\s*|\s+)(?P<num>{_NUM})(?![\w.])"
)
_WORD_BEFORE = re.compile(r"(?<![\w./-])(?P<word>[A-Za-z][A-Za-z_]*)\s+$")
_STEP_LINE = re.compile(r"\b(?:step|iter|iteration)\b[\s=:#]*(\d+)", re.I)
_PATTERN_NUMBER = r"([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("[ara] ")]


def printed_metrics(text: str) -> dict[str, dict[str, Any]]:
    """Numbers printed as `name=value`, `name: value` or `name value` (`test loss 2.19` is
    test_loss), each with its last value, the line and a `[metric] pattern` that reads it."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines_of(text):
        for m in _PRINTED.finditer(line):
            key, sep = m.group("key"), m.group("sep")
            name, literal = key, re.escape(key)
            if not sep.strip():
                before = _WORD_BEFORE.search(line[: m.start()])
                if before and before.group("word").lower() not in NOT_METRICS:
                    name = f"{before.group('word')}_{key}"
                    literal = rf"{re.escape(before.group('word'))}\s+{re.escape(key)}"
                between = r"\s+"
            else:
                between = rf"\s*{re.escape(sep.strip())}\s*"
            try:
                value = float(m.group("num"))
            except ValueError:
                continue
            if not re.fullmatch(r"[A-Za-z0-9_./-]+", name):
                continue
            found.pop(name, None)  # insertion order: last printed last
            found[name] = {
                "value": value,
                "line": line.strip()[:200],
                "pattern": rf"\b{literal}{between}{_PATTERN_NUMBER}",
            }
    return found


def last_step(text: str) -> int | None:
    steps = [int(m.group(1)) for line in lines_of(text) for m in _STEP_LINE.finditer(line)]
    return max(steps) if steps else None


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[_./-]+", name.lower()) if t]


def rank(name: str) -> int:
    """How much a name looks like the metric to optimise: negative for steps, times and rates."""
    tokens = _tokens(name)
    if name.lower() in NOT_METRICS or (tokens and tokens[-1] in NOT_METRICS):
        return -1
    score = 0
    if any(t in HELD_OUT for t in tokens):
        score += 3
    if any(t.startswith(MIN_WORDS + MAX_WORDS) for t in tokens):
        score += 2
    return score


def guess_goal(name: str) -> tuple[str, bool]:
    """("min" or "max", whether the name says so)."""
    tokens = _tokens(name)
    if any(t.startswith(MIN_WORDS) for t in tokens):
        return "min", True
    if any(t.startswith(MAX_WORDS) for t in tokens):
        return "max", True
    return "min", False


def metric_choices(
    read: dict[str, float], printed: dict[str, dict[str, Any]], wanted: str | None = None
) -> list[tuple[str, str | None]]:
    """(name, pattern or None), best first: metrics ara reads as they are (metrics file, `---`
    block), in their order; else those the code prints in its own style, read through a pattern,
    the last printed first; only `wanted` when it is given."""
    if wanted:
        if wanted in read:
            return [(wanted, None)]
        return [(wanted, printed[wanted]["pattern"])] if wanted in printed else []
    if read:  # in the order printed (a metrics file's keys may come sorted), best first
        order = [n for n in printed if n in read] + [n for n in read if n not in printed]
        return [(n, None) for n in sorted(order, key=lambda n: (-rank(n), order.index(n)))]
    order = [n for n in printed if rank(n) > 0]
    return [(n, printed[n]["pattern"]) for n in sorted(order, key=lambda n: (-rank(n), -order.index(n)))]
