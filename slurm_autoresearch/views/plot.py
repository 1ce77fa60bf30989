"""progress.png (matplotlib): markers by decision and kind, short labels that never overlap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import budget
from ..evidence import running_best
from ..trial import Decision, Trial, TrialKind

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KEEP, GREY, BLUE, PURPLE, ORANGE = "#1e8e3e", "#9aa0a6", "#1a73e8", "#a142f4", "#f9ab00"
TITLE_CHARS = 18  # a kept trial's label: its id and the title cut to this many characters
TITLED_UP_TO = 15  # with more keeps than this, labels are ids only
# Where a label may go, in points from its marker: above first, then further up or below.
_OFFSETS = ((4, 6), (4, 18), (4, -14), (4, 30), (4, -26), (4, 42), (4, -38))

# (legend label, which measured trials, marker style); a trial is drawn by the first that takes it.
_GROUPS: list[tuple[str, Callable[[Trial], bool], dict[str, Any]]] = [
    (
        "kept combination",
        lambda t: t.decision is Decision.KEEP and t.kind is TrialKind.COMBINE,
        {"marker": "D", "s": 60, "color": KEEP, "edgecolor": "black", "zorder": 5},
    ),
    (
        "kept",
        lambda t: t.decision is Decision.KEEP,
        {"s": 60, "color": KEEP, "edgecolor": "black", "zorder": 5},
    ),
    (
        "repeat / re-run",
        lambda t: t.decision is Decision.REPEAT or t.kind.is_evidence(),
        {"marker": "^", "s": 24, "color": BLUE, "alpha": 0.8, "zorder": 3},
    ),
    (
        "screened, promoted",
        lambda t: t.decision is Decision.PROMOTED,
        {"s": 30, "facecolor": "none", "edgecolor": BLUE, "zorder": 3},
    ),
    (
        "combination (discarded)",
        lambda t: t.kind is TrialKind.COMBINE and t.decision is Decision.DISCARD,
        {"marker": "D", "s": 30, "color": PURPLE, "alpha": 0.8, "zorder": 3},
    ),
    ("discarded", lambda t: t.decision is Decision.DISCARD, {"s": 22, "color": GREY, "zorder": 2}),
    ("waiting", lambda t: t.decision is None, {"s": 22, "color": ORANGE, "zorder": 2}),
]


def label_text(t: Trial, titled: bool) -> str:
    """A kept trial's label: "T0007 Centre each slid…" (or the id alone)."""
    title = " ".join(t.title.split())
    if not titled or not title:
        return t.id
    return f"{t.id} {title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + '…'}"


def progress_figure(trials: list[Trial], metric: str, goal: str) -> Figure:
    """autoresearch's figure: metric per trial by decision and kind (re-runs and combinations have
    their own markers), the running best as a step line, failures on a rail, kept trials labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    scored = [t for t in trials if t.metric is not None and not (t.decision and t.decision.is_failure())]
    left = list(scored)
    for label, takes, style in _GROUPS:
        mine = [t for t in left if takes(t)]
        left = [t for t in left if not takes(t)]
        if mine:
            metrics = [t.metric for t in mine if t.metric is not None]  # all of them: scored
            ax.scatter([t.seq for t in mine], metrics, label=label, **style)
    kept = [t for t in scored if t.decision is Decision.KEEP]
    best = running_best(kept, goal)
    if best:
        last_seq = max(t.seq for t in trials)
        xs, ys = [seq for seq, _ in best], [value for _, value in best]
        ax.step(
            [*xs, last_seq], [*ys, ys[-1]], where="post", color=KEEP, lw=1.5, label="running best", zorder=4
        )
    values = [t.metric for t in scored if t.metric is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (high - low) * 0.08 or 0.05
    rail = low - pad if goal == "max" else high + pad  # failures sit on the "bad" edge
    rails: list[tuple[Decision, dict[str, Any]]] = [  # Any: each style key has its own type
        (Decision.CRASH, {"marker": "x", "color": "#d93025", "s": 40}),
        (Decision.REJECTED, {"marker": "|", "color": "#e37400", "s": 60}),
    ]
    for decision, style in rails:
        seqs = [t.seq for t in trials if t.decision is decision]
        if seqs:
            ax.scatter(seqs, [rail] * len(seqs), label=decision.value, zorder=4, **style)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} ({'higher' if goal == 'max' else 'lower'} is better)")
    ideas = budget.hypotheses(trials)
    ax.set_title(f"{len(trials)} trials ({ideas} budgeted), {len(kept)} kept")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _label(fig, ax, kept)  # after the layout: labels are placed where they will be drawn
    return fig


def _label(fig: Figure, ax: Any, kept: list[Trial]) -> None:
    """Each kept trial's label at the first offset where it overlaps no other label, kept marker
    or the legend, and stays in the figure; the id alone where the titled one fits nowhere; none
    where neither does."""
    # Agg's canvas (matplotlib.use above) has it; the stubs type the base canvas, which does not.
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    from matplotlib.transforms import Bbox

    frame = fig.bbox
    legend = ax.get_legend()
    placed: list[Any] = [legend.get_window_extent(renderer)] if legend is not None else []
    r = fig.dpi / 72 * 5  # a kept marker's radius in pixels, about
    for x, y in ax.transData.transform([(t.seq, t.metric) for t in kept]) if kept else []:
        placed.append(Bbox.from_extents(x - r, y - r, x + r, y + r))  # labels leave the markers clear
    titled = len(kept) <= TITLED_UP_TO
    for t in kept:
        texts = [label_text(t, titled), t.id] if titled else [t.id]
        done = False
        for text in texts:
            for dx, dy in _OFFSETS:
                note = ax.annotate(
                    text,
                    (t.seq, t.metric),
                    textcoords="offset points",
                    xytext=(dx, dy),
                    fontsize=7,
                    color=KEEP,
                )
                box = note.get_window_extent(renderer)
                inside = (
                    frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                )
                if inside and not any(box.overlaps(other) for other in placed):
                    placed.append(box)
                    done = True
                    break
                note.remove()
            if done:
                break


def progress_plot(trials: list[Trial], metric: str, goal: str, path: Path) -> None:
    """Draw progress.png (atomically: a reader never sees half a file)."""
    import matplotlib.pyplot as plt

    fig = progress_figure(trials, metric, goal)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
