"""Train a tiny CNN that flags artifacts in tissue patches and write val predictions (EDITABLE)."""

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

from prepare import NUM_CLASSES, load_split

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


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 patches [n, 3, 16, 16] to float RGB in [0, 1]."""
    return torch.from_numpy(x).float().div_(255.0)


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """Model input [n, C, 16, 16] from RGB patches [n, 3, 16, 16] in [0, 1]; applied to every
    batch of train (after augmentation), dev and val alike. The model reads C from its output."""
    return x


class TinyCNN(nn.Module):
    """Three 3x3 conv blocks (width, 2x, 2x), global average pooling, a linear classifier."""

    def __init__(self, in_channels: int, width: int, dropout: float, batch_norm: bool) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for i in range(3):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.ReLU())
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(chans[-1], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(h))


class AdamW:
    """Minimal AdamW with decoupled weight decay and a settable learning rate.

    torch.optim imports torch._dynamo on first use, which adds ~1.5 s to every few-second CPU
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


def lr_at(step: int, steps: int, cfg: dict[str, Any]) -> float:
    """Linear warmup over warmup_steps, then constant or cosine decay to zero at the budget."""
    base, warmup = float(cfg["lr"]), int(cfg["warmup_steps"])
    if step <= warmup:
        return base * step / warmup
    if cfg["schedule"] == "constant":
        return base
    if cfg["schedule"] == "cosine":
        done = (step - warmup) / max(1, steps - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * done))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {cfg['schedule']!r}")


def augment(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving jitter, each part applied to a share `strength` of the batch: flips and
    quarter turns (an artifact has no preferred orientation on the slide), and a per-channel
    colour scale of up to +-20% (stain and scanner variation)."""
    if strength <= 0.0:
        return x
    n = x.shape[0]
    pick = torch.rand(4, n, generator=gen) < strength
    x = torch.where(pick[0, :, None, None, None], x.flip(3), x)
    x = torch.where(pick[1, :, None, None, None], x.flip(2), x)
    x = torch.where(pick[2, :, None, None, None], x.transpose(2, 3), x)
    scale = 1 + 0.2 * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    return torch.where(pick[3, :, None, None, None], (x * scale).clamp_(0, 1), x)


def macro_f1(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    f1s = []
    for c in range(NUM_CLASSES):
        tp = int(((y_pred == c) & (y_true == c)).sum())
        wrong = int(((y_pred == c) != (y_true == c)).sum())  # false positives + false negatives
        f1s.append(2 * tp / (2 * tp + wrong) if tp + wrong > 0 else 0.0)
    return sum(f1s) / NUM_CLASSES


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    logits = torch.cat([model(preprocess(chunk)) for chunk in x.split(1000)])
    model.train()
    return logits


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

    x_np, y_np = load_split("train")
    dev_np, dev_y_np = load_split("dev")
    val_np, _ = load_split("val")
    assert y_np is not None and dev_y_np is not None
    x_train, y_train = to_tensor(x_np), torch.from_numpy(y_np)
    x_dev, y_dev = to_tensor(dev_np), torch.from_numpy(dev_y_np)

    in_channels = preprocess(x_train[:1]).shape[1]
    model = TinyCNN(in_channels, int(cfg["width"]), float(cfg["dropout"]), bool(cfg["batch_norm"]))
    opt = AdamW(list(model.parameters()), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    batch_size = int(cfg["batch_size"])
    smoothing = float(cfg["label_smoothing"])
    strength = float(cfg["augment"])
    # Validations evenly spaced over the budget, the last one at the final step.
    n_val = max(1, int(cfg["validations"]))
    val_steps = {max(1, round(steps * k / n_val)) for k in range(1, n_val + 1)}
    log_every = max(1, steps // 10)

    n_train = len(x_train)
    order = torch.randperm(n_train, generator=gen)
    pos = 0
    loss_sum, loss_n, last_loss = 0.0, 0, math.nan
    t0 = time.time()
    model.train()
    for step in range(1, steps + 1):
        # Epoch-style sampling: walk a shuffled order, reshuffle when exhausted.
        if pos + batch_size > n_train:
            order, pos = torch.randperm(n_train, generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        opt.lr = lr_at(step, steps, cfg)
        logits = model(preprocess(augment(x_train[idx], strength, gen)))
        loss = F.cross_entropy(logits, y_train[idx], label_smoothing=smoothing)
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
            print(f"step {step} loss {last_loss:.4f}", flush=True)
            if run is not None:
                run.log({"loss": last_loss}, step=step)
            loss_sum, loss_n = 0.0, 0
        if step in val_steps:
            # Training's own validation on the labelled dev split (noisy labels, like train).
            dev_logits = predict(model, x_dev)
            val_loss = F.cross_entropy(dev_logits, y_dev).item()
            val_f1 = macro_f1(y_dev, dev_logits.argmax(dim=1))
            print(f"step {step} val_loss {val_loss:.4f} val_macro_f1 {val_f1:.4f}", flush=True)
            if run is not None:
                run.log({"val_loss": val_loss, "val_macro_f1": val_f1}, step=step)

    preds = predict(model, to_tensor(val_np)).argmax(dim=1).tolist()
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
