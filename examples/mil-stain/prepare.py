"""Synthetic slide-level stain-prediction data as bags of patch embeddings (FROZEN)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SEED = 20240611  # fixes the data for good: every trial sees the same bags

NUM_CLASSES = 5
CLASS_NAMES = ("H&E", "IHC-DAB", "PAS", "Masson-trichrome", "Jones-silver")
FEATURE_DIM = 32

N_TRAIN = 800
N_VAL = 240
MIN_INSTANCES = 20
MAX_INSTANCES = 200

# Class priors: Jones-silver is ~4x rarer than H&E, as special stains are in practice.
CLASS_PRIORS = np.array([0.30, 0.24, 0.20, 0.18, 0.08])
TRAIN_LABEL_NOISE = 0.10

N_TISSUE_TYPES = 6  # shared background clusters (stroma, fat, necrosis...), class-agnostic
INFORMATIVE_FRAC = (0.02, 0.10)  # per-slide fraction of instances that carry the stain signal
ARTEFACT_FRAC = (0.0, 0.04)  # pen marks, folds, bubbles: salient but class-agnostic
PROTOTYPE_NORM = 4.0  # distance of stain centres from the origin, vs unit patch noise
SLIDE_SHIFT_SD = 1.0  # per-slide scanner/batch offset (per dim), shared by all its patches


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    """Class centres of informative instances; some pairs deliberately overlap."""
    base = _unit(rng.normal(size=(NUM_CLASSES, FEATURE_DIM)))
    # Stains that share chemistry look alike: trichrome ~ silver, H&E ~ PAS.
    base[4] = _unit(0.55 * base[3] + 0.45 * base[4])
    base[2] = _unit(0.40 * base[0] + 0.60 * base[2])
    return PROTOTYPE_NORM * base


def _make_bag(
    rng: np.random.Generator,
    label: int,
    protos: np.ndarray,
    tissue: np.ndarray,
    artefact: np.ndarray,
) -> np.ndarray:
    n = int(rng.integers(MIN_INSTANCES, MAX_INSTANCES + 1))
    n_inf = max(1, round(rng.uniform(*INFORMATIVE_FRAC) * n))
    n_art = round(rng.uniform(*ARTEFACT_FRAC) * n)
    n_bg = n - n_inf - n_art

    # Background: each slide covers a few tissue types in its own proportions.
    mix = rng.dirichlet(np.full(N_TISSUE_TYPES, 0.5))
    kinds = rng.choice(N_TISSUE_TYPES, size=n_bg, p=mix)
    bg = tissue[kinds] + rng.normal(scale=0.8, size=(n_bg, FEATURE_DIM))

    # Informative patches: stain centre + slide-level jitter + patch noise, in two
    # mirror-image modes (strong vs. faint uptake), so no single linear direction
    # identifies a stain and the instance encoder must be non-linear.
    centre = protos[label] + rng.normal(scale=0.6, size=FEATURE_DIM)
    inf = centre + rng.normal(scale=1.0, size=(n_inf, FEATURE_DIM))
    inf *= rng.choice([-1.0, 1.0], size=(n_inf, 1))

    art = artefact + rng.normal(scale=1.2, size=(n_art, FEATURE_DIM))

    x = np.concatenate([bg, inf, art])[rng.permutation(n)]
    # Scanner / staining-batch nuisance: a per-slide affine shift shared by all patches.
    shift = rng.normal(scale=SLIDE_SHIFT_SD, size=FEATURE_DIM)
    scale = rng.uniform(0.8, 1.25)
    return (scale * x + shift).astype(np.float32)


DATA = Path(__file__).resolve().parent / "data"
VAL_BAGS = DATA / "val_bags.npz"  # frozen: the val slides, without labels
VAL_LABELS = DATA / "val_labels.npy"  # hidden: the answer key, which training never sees


def _world(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stain centres, tissue clusters and the artefact direction: what train and val share."""
    protos = _prototypes(rng)
    tissue = rng.normal(scale=1.0, size=(N_TISSUE_TYPES, FEATURE_DIM))
    artefact = 3.5 * _unit(rng.normal(size=FEATURE_DIM))
    return protos, tissue, artefact


@functools.cache
def _generate() -> tuple[list[np.ndarray], np.ndarray]:
    """The train bags and their noisy labels; ~0.3 s.

    The stream still draws the 240 slides that were once the val split, so the train data stays
    the one every figure in the README was measured on; they are thrown away. The val split
    lives in data/ (see make_val), drawn from a seed nobody kept, so its labels cannot be
    regenerated from this file.
    """
    rng = np.random.default_rng(SEED)
    protos, tissue, artefact = _world(rng)
    n = N_TRAIN + N_VAL
    labels = rng.choice(NUM_CLASSES, size=n, p=CLASS_PRIORS)
    bags = [_make_bag(rng, int(y), protos, tissue, artefact) for y in labels]

    noisy = labels[:N_TRAIN].copy()
    flip = rng.random(N_TRAIN) < TRAIN_LABEL_NOISE
    # A flipped label goes to a uniformly chosen *other* class.
    offsets = rng.integers(1, NUM_CLASSES, size=N_TRAIN)
    noisy[flip] = (noisy[flip] + offsets[flip]) % NUM_CLASSES
    return bags[:N_TRAIN], noisy.astype(np.int64)


@functools.cache
def _val_bags() -> list[np.ndarray]:
    with np.load(VAL_BAGS) as data:
        flat, ends = data["instances"].astype(np.float32), data["ends"]
    return np.split(flat, ends[:-1])


def load_split(split: str) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Return (bags, labels) for "train" or "val".

    bags: list of float32 arrays, one per slide, each [n_instances_i, FEATURE_DIM] with
    20 <= n_instances_i <= 200, in a fixed order. labels: int64 array [n_bags] of class
    indices (with ~10% label noise) for "train"; None for "val" (see load_val_labels).
    """
    # Copies, so a caller that edits arrays in place cannot corrupt the cached data.
    if split == "train":
        bags, labels = _generate()
        return [b.copy() for b in bags], labels.copy()
    if split == "val":
        return [b.copy() for b in _val_bags()], None
    raise ValueError(f"unknown split {split!r}; expected 'train' or 'val'")


def load_val_labels() -> np.ndarray:
    """Clean int64 val labels [N_VAL]: the hidden answer key, readable only by evaluate.py."""
    return np.load(VAL_LABELS).astype(np.int64)


def make_val() -> None:
    """Write data/: N_VAL fresh slides from the same world, drawn with a random seed that is not
    kept (run once; the labels are then known only to the hidden file)."""
    rng = np.random.default_rng(SEED)
    protos, tissue, artefact = _world(rng)
    secret = np.random.default_rng()  # OS entropy
    labels = secret.choice(NUM_CLASSES, size=N_VAL, p=CLASS_PRIORS)
    bags = [_make_bag(secret, int(y), protos, tissue, artefact) for y in labels]
    DATA.mkdir(exist_ok=True)
    ends = np.cumsum([len(b) for b in bags])
    np.savez_compressed(VAL_BAGS, instances=np.concatenate(bags).astype(np.float16), ends=ends)
    np.save(VAL_LABELS, labels.astype(np.int64))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--make-val"]:
        sys.exit("usage: python prepare.py --make-val  (writes data/; the shipped files are the val split)")
    make_val()
