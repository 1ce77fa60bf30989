"""Score embeddings.npz by slide-report retrieval on the hidden test pairs: mean recall (FROZEN)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from prepare import TEST_FOLDS, load_test_pairs


def recalls(slides: np.ndarray, reports: np.ndarray, pairs: np.ndarray) -> dict[str, float]:
    """Recall@1 and @5 both ways by cosine similarity; slide i's report is reports[pairs[i]].

    A rank counts every other candidate scoring at least as high as the true one, so ties count
    against: identical embeddings for everything score 0, not 1.
    """
    s = slides / np.linalg.norm(slides, axis=1, keepdims=True)
    r = reports / np.linalg.norm(reports, axis=1, keepdims=True)
    sim = s @ r.T  # [slide, report]
    n = len(pairs)
    true = sim[np.arange(n), pairs]
    s2r = (true[:, None] <= sim).sum(axis=1) - 1
    slide_of = np.argsort(pairs)  # report j belongs to slide slide_of[j]
    r2s = (true[slide_of][:, None] <= sim.T).sum(axis=1) - 1
    out = {
        "s2r_r1": float(np.mean(s2r < 1)),
        "s2r_r5": float(np.mean(s2r < 5)),
        "r2s_r1": float(np.mean(r2s < 1)),
        "r2s_r5": float(np.mean(r2s < 5)),
    }
    return {"mean_recall": float(np.mean(list(out.values()))), **out}


def fold_recalls(slides: np.ndarray, reports: np.ndarray, pairs: np.ndarray) -> dict[str, float]:
    """recalls() within each fold of consecutive slides (their reports the gallery), averaged."""
    folds = []
    for idx in np.array_split(np.arange(len(pairs)), TEST_FOLDS):
        gallery = pairs[idx]  # the fold's reports, in its slides' order
        folds.append(recalls(slides[idx], reports[gallery], np.arange(len(idx))))
    return {key: float(np.mean([f[key] for f in folds])) for key in folds[0]}


def read_embeddings(path: Path, n_expected: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate the embeddings; raise ValueError with a one-line reason."""
    try:
        with np.load(path, allow_pickle=False) as data:
            slides, reports = np.asarray(data["slides"]), np.asarray(data["reports"])
    except FileNotFoundError:
        raise ValueError(f"{path} not found (train.py must write it)") from None
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f'cannot read {path} as {{"slides", "reports"}} arrays: {e}') from None
    for name, a in (("slides", slides), ("reports", reports)):
        if a.ndim != 2 or a.shape[0] != n_expected or a.shape[1] < 1:
            raise ValueError(f"{name} must be [{n_expected}, dim], got {list(a.shape)}")
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"{name} must be real numbers, got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contain NaN or inf")
        if np.any(np.linalg.norm(a.astype(np.float64), axis=1) == 0):
            raise ValueError(f"{name} contain an all-zero row")
    if slides.shape[1] != reports.shape[1]:
        raise ValueError(f"slides and reports differ in width: {slides.shape[1]} vs {reports.shape[1]}")
    return slides.astype(np.float64), reports.astype(np.float64)


def main() -> int:
    pairs = load_test_pairs()
    try:
        slides, reports = read_embeddings(Path("embeddings.npz"), len(pairs))
    except ValueError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 1
    metrics = fold_recalls(slides, reports, pairs)
    out = os.environ.get("ARA_METRICS_PATH")
    if out:
        Path(out).write_text(json.dumps(metrics) + "\n")
    print("---")
    for key, value in metrics.items():
        print(f"{key}: {value:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
