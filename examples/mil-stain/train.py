"""Train an additive attention-MIL stain classifier and write val predictions (EDITABLE)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prepare import FEATURE_DIM, NUM_CLASSES, load_split

HERE = Path(__file__).resolve().parent


def load_config() -> dict[str, Any]:
    with open(HERE / "config.toml", "rb") as f:
        cfg = tomllib.load(f)
    # The orchestrator owns the step budget and the seed; env wins over the file.
    if os.environ.get("ARA_STEPS"):
        cfg["steps"] = int(os.environ["ARA_STEPS"])
    if os.environ.get("ARA_SEED"):
        cfg["seed"] = int(os.environ["ARA_SEED"])
    return cfg


def preprocess(bag: np.ndarray) -> np.ndarray:
    """Per-bag feature transform applied to train and val alike."""
    return bag


def pad_bags(bags: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-size bags into [n_bags, max_n, D] features and a bool mask."""
    max_n = max(len(b) for b in bags)
    x = np.zeros((len(bags), max_n, FEATURE_DIM), dtype=np.float32)
    mask = np.zeros((len(bags), max_n), dtype=bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = preprocess(b)
        mask[i, : len(b)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


class AdditiveMIL(nn.Module):
    """Javed et al. 2022: bag logits = sum_i attention_i * instance_logits_i."""

    def __init__(self, hidden: int, attn_dim: int, dropout: float, gated: bool) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(FEATURE_DIM, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(hidden, attn_dim)
        # Gated attention (Ilse et al. 2018) lets sigmoid gates switch off tanh saturation.
        self.attn_u = nn.Linear(hidden, attn_dim) if gated else None
        self.attn_w = nn.Linear(attn_dim, 1)
        self.classifier = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # [B, N, H]
        a = torch.tanh(self.attn_v(h))
        if self.attn_u is not None:
            a = a * torch.sigmoid(self.attn_u(h))
        scores = self.attn_w(a).squeeze(-1).masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=1)  # [B, N], zero on padding
        contrib = attn.unsqueeze(-1) * self.classifier(h)  # per-instance class contributions
        return contrib.sum(dim=1), attn


class AdamW:
    """Minimal AdamW with decoupled weight decay.

    torch.optim imports torch._dynamo on first use, which adds ~1.5 s to every ~5 s CPU
    trial; this loop computes the same update as torch.optim.AdamW's default settings.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bias1, bias2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            p.mul_(1 - self.lr * self.weight_decay)
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / bias2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / bias1)


def class_weights(labels: np.ndarray, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    if mode == "balanced":
        counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
        w = counts.sum() / (NUM_CLASSES * np.maximum(counts, 1.0))
        return torch.tensor(w, dtype=torch.float32)
    raise ValueError(f"class_weighting must be 'none' or 'balanced', got {mode!r}")


def drop_instances(mask: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Randomly hide a fraction p of each bag's instances, keeping at least one."""
    if p <= 0.0:
        return mask
    keep = (torch.rand(mask.shape, generator=gen) >= p) & mask
    empty = ~keep.any(dim=1)
    # A bag that lost everything keeps its first instance so softmax stays defined.
    keep[empty, 0] = True
    return keep


def start_tracking(cfg: dict[str, Any]) -> Any:
    """A W&B run when wandb is installed and not disabled; ara's environment names, groups and
    places it (offline, in the trial directory, unless the task says otherwise)."""
    # Unset outside ara: a run by hand neither asks for a login nor writes ./wandb here.
    if os.environ.get("WANDB_MODE", "disabled") == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        return None
    return wandb.init(config=cfg)


def main() -> int:
    cfg = load_config()
    run = start_tracking(cfg)
    steps = int(cfg["steps"])
    seed = int(cfg["seed"])
    torch.set_num_threads(1)  # two trials share two cores
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    train_bags, train_labels = load_split("train")
    val_bags, _ = load_split("val")
    assert train_labels is not None
    x_train, m_train = pad_bags(train_bags)
    y_train = torch.from_numpy(train_labels)

    model = AdditiveMIL(
        hidden=int(cfg["hidden"]),
        attn_dim=int(cfg["attn_dim"]),
        dropout=float(cfg["dropout"]),
        gated=bool(cfg["gated_attention"]),
    )
    opt = AdamW(list(model.parameters()), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    weights = class_weights(train_labels, str(cfg["class_weighting"]))
    smoothing = float(cfg["label_smoothing"])
    inst_drop = float(cfg["instance_dropout"])
    bags_per_step = int(cfg["bags_per_step"])

    n_train = len(train_bags)
    order = rng.permutation(n_train)
    pos = 0
    log_every = max(1, steps // 10)
    loss_sum, loss_n, last_loss = 0.0, 0, math.nan
    t0 = time.time()
    model.train()
    for step in range(1, steps + 1):
        # Epoch-style sampling: walk a shuffled order, reshuffle when exhausted.
        if pos + bags_per_step > n_train:
            order, pos = rng.permutation(n_train), 0
        idx = torch.from_numpy(order[pos : pos + bags_per_step])
        pos += bags_per_step
        mask = m_train[idx]
        width = int(mask.sum(dim=1).max())  # trim padding to the longest bag in the batch
        mask = drop_instances(mask[:, :width], inst_drop, gen)
        logits, _ = model(x_train[idx, :width], mask)
        loss = F.cross_entropy(logits, y_train[idx], weight=weights, label_smoothing=smoothing)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            print(f"FAIL: loss is nan at step {step}", flush=True)
            if run is not None:
                run.finish(exit_code=1)
            return 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
        if step % log_every == 0 or step == steps:
            # Mean over the interval: single small-batch losses are too noisy to read.
            last_loss = loss_sum / loss_n
            print(f"step {step}/{steps} loss {last_loss:.4f}", flush=True)
            if run is not None:
                run.log({"loss": last_loss}, step=step)
            loss_sum, loss_n = 0.0, 0

    model.eval()
    x_val, m_val = pad_bags(val_bags)
    with torch.no_grad():
        logits, _ = model(x_val, m_val)
    preds = logits.argmax(dim=1).tolist()
    with open("predictions.json", "w") as f:
        json.dump({"val": preds}, f)
    elapsed = time.time() - t0
    print(f"trained {steps} steps in {elapsed:.1f}s; wrote predictions.json", flush=True)
    if run is not None:
        # Train-side numbers only: the metric comes from the frozen evaluation, never from here.
        run.summary.update({"final_loss": last_loss, "train_seconds": elapsed, "steps": steps})
        run.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
