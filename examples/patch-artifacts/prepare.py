"""Synthetic tissue patches with scanning and slide-preparation artifacts (FROZEN)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SEED = 20240917  # fixes the train and dev data for good: every trial sees the same patches

CLASS_NAMES = ("clean", "out-of-focus", "motion-blur", "tissue-fold", "pen-mark", "air-bubble")
NUM_CLASSES = len(CLASS_NAMES)
PATCH = 16  # patches are PATCH x PATCH RGB
CHANNELS = 3

N_TRAIN = 4000
N_DEV = 600  # training's own labelled validation split (noisy labels, like train)
N_VAL = 1000  # the frozen evaluation's split: clean labels, hidden from training

# Clean tissue dominates; air bubbles are rare, as on real slides.
CLASS_PRIORS = np.array([0.36, 0.18, 0.14, 0.13, 0.12, 0.07])
LABEL_NOISE = 0.10  # train and dev labels flipped to another class; val labels are clean
SEVERITY = (0.15, 1.0)  # artifact strength per patch: the faint end is hard to tell from clean
SENSOR_NOISE = 0.03  # pixel noise added after the optics, so blur removes none of it

DATA = Path(__file__).resolve().parent / "data"
VAL_PATCHES = DATA / "val_patches.npz"  # frozen: the val patches, without labels
VAL_LABELS = DATA / "val_labels.npy"  # hidden: the answer key, which training never sees

_EOSIN = np.array([0.25, 0.85, 0.45])  # optical density per channel (R, G, B) of pink stroma
_HEMATOXYLIN = np.array([1.10, 1.25, 0.55])  # purple nuclei
_INKS = np.array([[0.20, 0.30, 0.85], [0.15, 0.55, 0.30], [0.12, 0.12, 0.18]])  # blue, green, black


def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:PATCH, 0:PATCH].astype(np.float64)
    return yy[None], xx[None]  # [1, H, W]


def _smooth_noise(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Low-frequency texture [n, H, W]: white noise through a 4x4 grid, bilinearly upsampled."""
    coarse = rng.normal(scale=scale, size=(n, 5, 5))
    t = np.linspace(0, 4, PATCH)
    i0 = np.minimum(t.astype(int), 3)
    f = t - i0
    rows = coarse[:, i0] * (1 - f)[None, :, None] + coarse[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def _tissue(rng: np.random.Generator, n: int) -> np.ndarray:
    """H&E-like tissue as optical density [n, 3, H, W]: stroma texture plus 3-9 nuclei."""
    yy, xx = _grid()
    stroma = 0.55 + _smooth_noise(rng, n, 0.18)
    # Some patches reach the tissue's edge: a soft gap of empty glass.
    edge = rng.random(n) < 0.25
    angle = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    offset = rng.uniform(2, 12, n)[:, None, None]
    dist = (xx - 7.5) * np.cos(angle) + (yy - 7.5) * np.sin(angle) + 7.5 - offset
    glass = np.where(edge[:, None, None], 1 / (1 + np.exp(-2.0 * dist)), 1.0)
    nuclei = np.zeros((n, PATCH, PATCH))
    count = rng.integers(3, 10, n)
    for k in range(9):
        cy, cx = rng.uniform(-1, PATCH, (2, n))
        radius = rng.uniform(0.8, 1.6, n)
        on = (k < count).astype(float)
        d2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
        nuclei += on[:, None, None] * np.exp(-d2 / (2 * radius[:, None, None] ** 2))
    nuclei = np.minimum(nuclei, 1.2)
    stroma, nuclei = stroma * glass, nuclei * glass
    od = stroma[:, None] * _EOSIN[None, :, None, None] + nuclei[:, None] * _HEMATOXYLIN[None, :, None, None]
    return np.maximum(od, 0.0)


def _blur(img: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Blur [n, 3, H, W] along one spatial axis with per-patch 1-D kernels [n, K] (edge padding)."""
    k = kernel.shape[1]
    pad = [(0, 0)] * 4
    pad[axis] = (k // 2, k // 2)
    padded = np.pad(img, pad, mode="edge")
    out = np.zeros_like(img)
    for j in range(k):
        sl = [slice(None)] * 4
        sl[axis] = slice(j, j + img.shape[axis])
        out += kernel[:, j, None, None, None] * padded[tuple(sl)]
    return out


def _gauss_kernels(sigma: np.ndarray, k: int = 9) -> np.ndarray:
    t = np.arange(k) - k // 2
    w = np.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    return w / w.sum(axis=1, keepdims=True)


def _line_mask(rng: np.random.Generator, n: int, width: np.ndarray, soft: float) -> np.ndarray:
    """A straight band across each patch at a random angle and offset, soft-edged [n, H, W]."""
    yy, xx = _grid()
    angle = rng.uniform(0, np.pi, n)[:, None, None]
    offset = rng.uniform(-5, 5, n)[:, None, None]
    dist = np.abs((xx - 7.5) * np.cos(angle) + (yy - 7.5) * np.sin(angle) - offset)
    return 1.0 / (1.0 + np.exp((dist - width[:, None, None] / 2) / soft))


def _apply(rng: np.random.Generator, od: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Render each patch's artifact on its tissue; returns RGB in [0, 1], [n, 3, H, W]."""
    n = len(labels)
    sev = rng.uniform(*SEVERITY, n)
    # A scanner's view of optical density: transmitted light, with a per-slide stain and
    # brightness shift that every class shares (the nuisance a model must ignore).
    stain = rng.uniform(0.75, 1.3, (n, 3))[:, :, None, None]
    od = od * stain
    yy, xx = _grid()

    fold = labels == 3  # a doubled layer of tissue: optical density adds up along a band
    if fold.any():
        m = fold.sum()
        band = _line_mask(rng, m, rng.uniform(3, 8, m), 0.8)
        od[fold] *= 1 + (0.3 + 0.9 * sev[fold])[:, None, None, None] * band[:, None]

    rgb = np.exp(-od)

    oof = labels == 1  # out of focus: isotropic blur
    if oof.any():
        kern = _gauss_kernels(0.35 + 1.3 * sev[oof])
        rgb[oof] = _blur(_blur(rgb[oof], kern, 2), kern, 3)

    motion = labels == 2  # motion blur: a 1-D smear along the scan axis (rows or columns)
    if motion.any():
        m = motion.sum()
        length = 1 + 2 * np.round(0.5 + 3.0 * sev[motion]).astype(int)  # odd, 3..9 pixels
        t = np.arange(9) - 4
        kern = (np.abs(t[None]) <= length[:, None] // 2).astype(float)
        kern /= kern.sum(axis=1, keepdims=True)
        vertical = rng.random(m) < 0.5
        smeared = np.where(
            vertical[:, None, None, None], _blur(rgb[motion], kern, 2), _blur(rgb[motion], kern, 3)
        )
        rgb[motion] = smeared

    pen = labels == 4  # ink on the glass: a translucent stroke, or a faint wash over the patch
    if pen.any():
        m = pen.sum()
        mask = _line_mask(rng, m, rng.uniform(2, 7, m), 0.6)
        wash = rng.random(m) < 0.3
        mask[wash] = 1.0
        alpha = (0.15 + 0.6 * sev[pen]) * np.where(wash, 0.5, 1.0)
        ink = _INKS[rng.integers(0, len(_INKS), m)][:, :, None, None]
        a = (alpha[:, None, None] * mask)[:, None]
        rgb[pen] = (1 - a) * rgb[pen] + a * ink

    bubble = labels == 5  # an air bubble under the coverslip: washed-out disc, dark rim
    if bubble.any():
        m = bubble.sum()
        cy, cx = rng.uniform(-2, PATCH + 1, (2, m))
        radius = rng.uniform(4, 10, m)
        r = np.sqrt((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)
        inside = 1.0 / (1.0 + np.exp((r - radius[:, None, None]) / 0.6))
        rim = np.exp(-((r - radius[:, None, None]) ** 2) / 0.8)
        s = sev[bubble][:, None, None]
        wash = (0.25 + 0.55 * s) * inside
        out = 1 - (1 - rgb[bubble]) * (1 - wash[:, None])
        rgb[bubble] = out * (1 - (0.2 + 0.5 * s) * rim)[:, None]

    brightness = rng.uniform(0.85, 1.1, n)[:, None, None, None]
    rgb = rgb * brightness + rng.normal(scale=SENSOR_NOISE, size=rgb.shape)
    return np.clip(rgb, 0.0, 1.0)


def _flip(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Label noise: a share of LABEL_NOISE moves to a uniformly chosen other class."""
    flip = rng.random(len(labels)) < LABEL_NOISE
    offsets = rng.integers(1, NUM_CLASSES, len(labels))
    return np.where(flip, (labels + offsets) % NUM_CLASSES, labels)


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.choice(NUM_CLASSES, size=n, p=CLASS_PRIORS)
    rgb = _apply(rng, _tissue(rng, n), labels)
    return (rgb * 255 + 0.5).astype(np.uint8), labels.astype(np.int64)


@functools.cache
def _generate() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train and dev patches (uint8 [n, 3, 16, 16]) with noisy labels, from SEED; ~0.5 s."""
    rng = np.random.default_rng(SEED)
    x, y = _draw(rng, N_TRAIN + N_DEV)
    y = _flip(rng, y)
    return {"train": (x[:N_TRAIN], y[:N_TRAIN]), "dev": (x[N_TRAIN:], y[N_TRAIN:])}


@functools.cache
def _val_patches() -> np.ndarray:
    with np.load(VAL_PATCHES) as data:
        return data["patches"]


def load_split(split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (patches, labels) for "train", "dev" or "val".

    patches: uint8 array [n, 3, 16, 16] (RGB, channels first) in a fixed order. labels: int64
    class indices with ~10% label noise for "train" (4000) and "dev" (600, training's own
    validation split); None for "val" (1000 patches, scored by evaluate.py only).
    """
    # Copies, so a caller that edits arrays in place cannot corrupt the cached data.
    if split in ("train", "dev"):
        x, y = _generate()[split]
        return x.copy(), y.copy()
    if split == "val":
        return _val_patches().copy(), None
    raise ValueError(f"unknown split {split!r}; expected 'train', 'dev' or 'val'")


def load_val_labels() -> np.ndarray:
    """Clean int64 val labels [N_VAL]: the hidden answer key, readable only by evaluate.py."""
    return np.load(VAL_LABELS).astype(np.int64)


def make_val() -> None:
    """Write data/: N_VAL fresh patches from the same generator, drawn with a random seed that is
    not kept (run once; the labels are then known only to the hidden file)."""
    secret = np.random.default_rng()  # OS entropy
    x, y = _draw(secret, N_VAL)
    DATA.mkdir(exist_ok=True)
    np.savez_compressed(VAL_PATCHES, patches=x)
    np.save(VAL_LABELS, y)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--make-val"]:
        sys.exit("usage: python prepare.py --make-val  (writes data/; the shipped files are the val split)")
    make_val()
