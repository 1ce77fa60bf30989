"""Score predictions.json against the clean, hidden val labels: macro-F1 and accuracy (FROZEN)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from prepare import NUM_CLASSES, load_val_labels


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1; a class never predicted nor present scores 0."""
    f1s = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(f1s))


def read_predictions(path: Path, n_expected: int) -> np.ndarray:
    """Parse and validate predictions; raise ValueError or TypeError with a one-line reason."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} not found (train.py must write it)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    preds = data.get("val") if isinstance(data, dict) else None
    if not isinstance(preds, list):
        raise TypeError(f'{path} must be {{"val": [int, ...]}}')
    if len(preds) != n_expected:
        raise ValueError(f"expected {n_expected} val predictions, got {len(preds)}")
    # bool is a subclass of int in Python, so reject it explicitly.
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in preds):
        raise TypeError("val predictions must all be integers")
    if not all(0 <= p < NUM_CLASSES for p in preds):
        raise ValueError(f"val predictions must lie in [0, {NUM_CLASSES - 1}]")
    return np.asarray(preds, dtype=np.int64)


def main() -> int:
    y_true = load_val_labels()
    try:
        y_pred = read_predictions(Path("predictions.json"), len(y_true))
    except (TypeError, ValueError) as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 1
    metrics = {
        "macro_f1": macro_f1(y_true, y_pred, NUM_CLASSES),
        "accuracy": float(np.mean(y_true == y_pred)),
    }
    out = os.environ.get("ARA_METRICS_PATH")
    if out:
        Path(out).write_text(json.dumps(metrics) + "\n")
    print("---")
    print(f"macro_f1: {metrics['macro_f1']:.6f}")
    print(f"accuracy: {metrics['accuracy']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
