"""Synthetic slide-level stain-prediction data as bags of patch embeddings (FROZEN)."""

from __future__ import annotations

import functools

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


@functools.cache
def _generate() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """All bags (train then val), noisy train labels, clean val labels; ~0.3 s."""
    rng = np.random.default_rng(SEED)
    protos = _prototypes(rng)
    tissue = rng.normal(scale=1.0, size=(N_TISSUE_TYPES, FEATURE_DIM))
    artefact = 3.5 * _unit(rng.normal(size=FEATURE_DIM))
    n = N_TRAIN + N_VAL
    labels = rng.choice(NUM_CLASSES, size=n, p=CLASS_PRIORS)
    bags = [_make_bag(rng, int(y), protos, tissue, artefact) for y in labels]

    noisy = labels[:N_TRAIN].copy()
    flip = rng.random(N_TRAIN) < TRAIN_LABEL_NOISE
    # A flipped label goes to a uniformly chosen *other* class.
    offsets = rng.integers(1, NUM_CLASSES, size=N_TRAIN)
    noisy[flip] = (noisy[flip] + offsets[flip]) % NUM_CLASSES
    return bags, noisy.astype(np.int64), labels[N_TRAIN:].astype(np.int64)


def load_split(split: str) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Return (bags, labels) for "train" or "val".

    bags: list of float32 arrays, one per slide, each [n_instances_i, FEATURE_DIM] with
    20 <= n_instances_i <= 200, in a fixed order. labels: int64 array [n_bags] of class
    indices (with ~10% label noise) for "train"; None for "val" (see load_val_labels).
    """
    bags, train_labels, _ = _generate()
    # Copies, so a caller that edits arrays in place cannot corrupt the cached data.
    if split == "train":
        return [b.copy() for b in bags[:N_TRAIN]], train_labels.copy()
    if split == "val":
        return [b.copy() for b in bags[N_TRAIN:]], None
    raise ValueError(f"unknown split {split!r}; expected 'train' or 'val'")


def load_val_labels() -> np.ndarray:
    """Clean int64 val labels [N_VAL]; only evaluate.py may call this."""
    return _generate()[2].copy()
