"""Synthetic paired slides and reports for slide-level vision-language alignment (FROZEN)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SEED = 20241105  # fixes the data for good: every trial sees the same pairs

NUM_CLASSES = 16  # latent diagnoses that link a slide to its report
FEATURE_DIM = 32  # patch embedding width
TEXT_DIM = 48  # report embedding width
LATENT_DIM = 16  # the case's latent description, shared by its slide and its report

N_TRAIN = 2048
N_DEV = 256  # paired, from the same stream as train: the validation that training logs
N_TEST = 1000  # the frozen test pairs, drawn from a seed nobody kept, their pairing hidden
TEST_FOLDS = 4  # retrieval is scored within folds of 250 pairs (as COCO's 5K test in 1K folds)
MIN_PATCHES = 16
MAX_PATCHES = 48

PROTOTYPE_NORM = 4.5  # distance of a diagnosis's prototype from the origin, in latent units
CASE_SD = 1.0  # case-specific variation around its prototype: what tells two cases apart
INFORMATIVE_FRAC = (0.08, 0.2)  # share of a slide's patches that show the case (the lesion)
MARKER_NORM = 2.0  # how far lesion patches stand out along one direction
PATCH_NOISE = 0.7
REPORT_NOISE = 0.7
MISLINKED = 0.5  # share of train reports linked to the wrong slide; their diagnosis codes are right


def _world(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What every split shares: prototypes, the two views of the latent, the lesion marker."""
    protos = rng.normal(size=(NUM_CLASSES, LATENT_DIM))
    protos *= PROTOTYPE_NORM / np.linalg.norm(protos, axis=1, keepdims=True)
    marker = rng.normal(size=FEATURE_DIM)
    return {
        "protos": protos,
        "to_patch": rng.normal(size=(LATENT_DIM, FEATURE_DIM)) / np.sqrt(LATENT_DIM),
        "to_text": rng.normal(size=(LATENT_DIM, TEXT_DIM)) / np.sqrt(LATENT_DIM),
        "marker": MARKER_NORM * marker / np.linalg.norm(marker),
    }


def _make_pairs(
    rng: np.random.Generator, world: dict[str, np.ndarray], n: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """n cases: a slide (bag of patches) and a report (one text embedding) each, and the diagnosis."""
    labels = rng.integers(NUM_CLASSES, size=n)
    latent = world["protos"][labels] + rng.normal(scale=CASE_SD, size=(n, LATENT_DIM))
    slides = []
    for z in latent:
        k = int(rng.integers(MIN_PATCHES, MAX_PATCHES + 1))
        n_inf = max(2, round(rng.uniform(*INFORMATIVE_FRAC) * k))
        # Lesion patches show this case, and carry the marker that says so.
        inf = z @ world["to_patch"] + world["marker"]
        # Other tissue looks like some other case: of a random diagnosis, without the marker.
        others = world["protos"][rng.integers(NUM_CLASSES, size=k - n_inf)]
        others = others + rng.normal(scale=CASE_SD, size=others.shape)
        x = np.concatenate([np.broadcast_to(inf, (n_inf, FEATURE_DIM)), others @ world["to_patch"]])
        x = x + rng.normal(scale=PATCH_NOISE, size=x.shape)
        slides.append(x[rng.permutation(k)].astype(np.float32))
    reports = latent @ world["to_text"] + rng.normal(scale=REPORT_NOISE, size=(n, TEXT_DIM))
    return slides, reports.astype(np.float32), labels.astype(np.int64)


DATA = Path(__file__).resolve().parent / "data"
TEST_SLIDES = DATA / "test_slides.npz"  # frozen: the test slides, in a fixed order
TEST_REPORTS = DATA / "test_reports.npy"  # frozen: the test reports, shuffled
TEST_PAIRS = DATA / "test_pairs.npy"  # hidden: the answer key, which training never sees


@functools.cache
def _generate() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Train and dev pairs (train first, dev the last N_DEV), train links broken; ~0.3 s."""
    rng = np.random.default_rng(SEED)
    world = _world(rng)
    slides, reports, labels = _make_pairs(rng, world, N_TRAIN + N_DEV)
    # The archive links reports to slides by a key that is often wrong: a mislinked train slide
    # gets the report of a random other train case. Its label is the slide's own diagnosis code,
    # recorded apart from the report, so it stays right. Dev (curated) and test pairs are clean.
    bad = np.flatnonzero(rng.random(N_TRAIN) < MISLINKED)
    reports[bad] = reports[rng.integers(N_TRAIN, size=len(bad))]
    return slides, reports, labels


@functools.cache
def _test() -> tuple[list[np.ndarray], np.ndarray]:
    with np.load(TEST_SLIDES) as data:
        flat, ends = data["patches"].astype(np.float32), data["ends"]
    return np.split(flat, ends[:-1]), np.load(TEST_REPORTS).astype(np.float32)


def load_split(split: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """Return (slides, reports, labels) for "train", "dev" or "test".

    slides: list of float32 arrays [n_patches_i, FEATURE_DIM], 16 <= n_patches_i <= 48;
    reports: float32 [n, TEXT_DIM]; labels: int64 [n] diagnoses (the slide's), or None for "test".
    For "train" and "dev", report i is linked to slide i: rightly for dev, for about half of the
    train pairs wrongly (MISLINKED), the labels being right. For "test" the reports are shuffled:
    which report belongs to which slide is the hidden answer key (load_test_pairs).
    """
    # Copies, so a caller that edits arrays in place cannot corrupt the cached data.
    if split in ("train", "dev"):
        slides, reports, labels = _generate()
        part = slice(0, N_TRAIN) if split == "train" else slice(N_TRAIN, N_TRAIN + N_DEV)
        return [s.copy() for s in slides[part]], reports[part].copy(), labels[part].copy()
    if split == "test":
        slides, reports = _test()
        return [s.copy() for s in slides], reports.copy(), None
    raise ValueError(f"unknown split {split!r}; expected 'train', 'dev' or 'test'")


def load_test_pairs() -> np.ndarray:
    """int64 [N_TEST]: the index of slide i's report in the test reports. Only evaluate.py reads it."""
    return np.load(TEST_PAIRS).astype(np.int64)


def make_test() -> None:
    """Write data/: N_TEST fresh cases from the same world, drawn with a seed that is not kept
    (run once; the pairing is then known only to the hidden file)."""
    world = _world(np.random.default_rng(SEED))
    secret = np.random.default_rng()  # OS entropy
    slides, reports, _ = _make_pairs(secret, world, N_TEST)
    order = secret.permutation(N_TEST)  # reports[order[j]] is the j-th stored report
    pairs = np.argsort(order)  # slide i's report sits at stored index pairs[i]
    DATA.mkdir(exist_ok=True)
    ends = np.cumsum([len(s) for s in slides])
    np.savez_compressed(TEST_SLIDES, patches=np.concatenate(slides).astype(np.float16), ends=ends)
    np.save(TEST_REPORTS, reports[order].astype(np.float16))
    np.save(TEST_PAIRS, pairs.astype(np.int64))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--make-test"]:
        sys.exit("usage: python prepare.py --make-test  (writes data/; the shipped files are the test split)")
    make_test()
