"""Align slides with their reports by a symmetric contrastive loss; write test embeddings (EDITABLE)."""

from __future__ import annotations

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

from prepare import FEATURE_DIM, TEXT_DIM, load_split

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


def pad_slides(slides: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-size slides into [n, max_patches, D] features and a bool mask."""
    width = max(len(s) for s in slides)
    x = np.zeros((len(slides), width, FEATURE_DIM), dtype=np.float32)
    mask = np.zeros((len(slides), width), dtype=bool)
    for i, s in enumerate(slides):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


class SlideEncoder(nn.Module):
    """Patch MLP, then one slide feature pooled over the patches, then a projection."""

    def __init__(self, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.patch = nn.Sequential(
            nn.Linear(FEATURE_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.proj = nn.Linear(hidden, embed_dim)

    def aggregate(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool patch features [B, N, H] into slide features [B, H]: the mean over real patches."""
        m = mask.unsqueeze(-1).float()
        return (h * m).sum(dim=1) / m.sum(dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.aggregate(self.patch(x), mask))


class AlignModel(nn.Module):
    """Two towers into one embedding space, unit-normalised."""

    def __init__(self, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.slide = SlideEncoder(hidden, embed_dim)
        self.report = nn.Sequential(nn.Linear(TEXT_DIM, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.slide(x, mask), dim=-1), F.normalize(self.report(text), dim=-1)


def contrastive_loss(s: torch.Tensor, r: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): each slide must pick its report in the batch, and each report its slide."""
    logits = s @ r.T / temperature
    target = torch.arange(len(s))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def mean_recall(s: torch.Tensor, r: torch.Tensor) -> float:
    """Mean of recall@1 and recall@5 in both directions, pair i being (s[i], r[i]); ties count against."""
    sim = s @ r.T
    true = sim.diagonal()
    out = []
    for scores, hit in ((sim, true), (sim.T, true)):
        rank = (scores >= hit.unsqueeze(1)).sum(dim=1) - 1  # others scoring at least as high
        out += [(rank < 1).float().mean().item(), (rank < 5).float().mean().item()]
    return float(np.mean(out))


class SGD:
    """Plain SGD with momentum and L2 weight decay, written out.

    torch.optim imports torch._dynamo on first use, which adds ~1.5 s to every few-second CPU
    trial; this loop computes the same update as torch.optim.SGD(momentum=0.9, weight_decay=wd).
    """

    def __init__(
        self, params: list[nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9
    ) -> None:
        self.params = params
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.buf = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, buf in zip(self.params, self.buf, strict=True):
            if p.grad is None:
                continue
            buf.mul_(self.momentum).add_(p.grad).add_(p, alpha=self.weight_decay)
            p.add_(buf, alpha=-self.lr)


@torch.no_grad()
def validate(
    model: AlignModel,
    x: torch.Tensor,
    mask: torch.Tensor,
    text: torch.Tensor,
    temperature: float,
    step: int,
    run: Any,
) -> None:
    """Loss and mean recall on the dev pairs, printed as `step N val_loss L val_recall R`."""
    model.eval()
    s, r = model(x, mask, text)
    val_loss = contrastive_loss(s, r, temperature).item()
    val_recall = mean_recall(s, r) if math.isfinite(val_loss) else math.nan  # NaN scores rank nothing
    print(f"step {step} val_loss {val_loss:.4f} val_recall {val_recall:.4f}", flush=True)
    if run is not None:
        run.log({"val_loss": val_loss, "val_recall": val_recall}, step=step)


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
    temperature = float(cfg["temperature"])
    batch_size = int(cfg["batch_size"])
    torch.set_num_threads(1)  # two trials share two cores
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    train_slides, train_reports, _ = load_split("train")  # and the slides' diagnosis codes
    dev_slides, dev_reports, _ = load_split("dev")
    x_train, m_train = pad_slides(train_slides)
    t_train = torch.from_numpy(train_reports)
    x_dev, m_dev = pad_slides(dev_slides)
    t_dev = torch.from_numpy(dev_reports)

    model = AlignModel(hidden=int(cfg["hidden"]), embed_dim=int(cfg["embed_dim"]))
    opt = SGD(list(model.parameters()), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))

    n_train = len(train_slides)
    order, pos = rng.permutation(n_train), 0
    log_every = max(1, steps // 20)
    val_every = max(1, steps // 10)  # ten validations per run: enough points for a curve digest
    loss_sum, loss_n, last_loss = 0.0, 0, math.nan
    t0 = time.time()
    for step in range(1, steps + 1):
        model.train()
        # Epoch-style sampling: walk a shuffled order, reshuffle when exhausted.
        if pos + batch_size > n_train:
            order, pos = rng.permutation(n_train), 0
        idx = torch.from_numpy(order[pos : pos + batch_size])
        pos += batch_size
        mask = m_train[idx]
        width = int(mask.sum(dim=1).max())  # trim padding to the largest slide in the batch
        s, r = model(x_train[idx, :width], mask[:, :width], t_train[idx])
        loss = contrastive_loss(s, r, temperature)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            # The curve's last points say so (`step N loss nan`, a last validation), then the run
            # stops without writing embeddings: the trial fails, cleanly.
            print(f"step {step} loss {loss_value}", flush=True)
            validate(model, x_dev, m_dev, t_dev, temperature, step, run)
            print(f"FAIL: loss is {loss_value} at step {step}", flush=True)
            if run is not None:
                run.finish(exit_code=1)
            return 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
        if step % log_every == 0 or step == steps:
            # Mean over the interval: single-batch losses are too noisy to read.
            last_loss = loss_sum / loss_n
            print(f"step {step} loss {last_loss:.4f}", flush=True)
            if run is not None:
                run.log({"loss": last_loss}, step=step)
            loss_sum, loss_n = 0.0, 0
        if step % val_every == 0 or step == steps:
            validate(model, x_dev, m_dev, t_dev, temperature, step, run)

    model.eval()
    test_slides, test_reports, _ = load_split("test")
    x_test, m_test = pad_slides(test_slides)
    with torch.no_grad():
        s_test, r_test = model(x_test, m_test, torch.from_numpy(test_reports))
    np.savez("embeddings.npz", slides=s_test.numpy(), reports=r_test.numpy())
    elapsed = time.time() - t0
    print(f"trained {steps} steps in {elapsed:.1f}s; wrote embeddings.npz", flush=True)
    if run is not None:
        # Train-side numbers only: the metric comes from the frozen evaluation, never from here.
        run.summary.update({"final_loss": last_loss, "train_seconds": elapsed, "steps": steps})
        run.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
