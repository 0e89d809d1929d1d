"""``corpustest --plot``: score histograms of both classes and the ROC curve, as PNG or SVG.

matplotlib is an optional dependency (``pip install milterd[plot]``): a mail server does
not need a plotting library to filter mail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from milterd.corpustest import CorpusReport

__all__ = ["plot", "roc_points"]


def roc_points(ham: list[float], spam: list[float]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) at every distinct score threshold."""
    points = [(0.0, 0.0)]
    for threshold in sorted(set(ham) | set(spam), reverse=True):
        fpr = sum(1 for s in ham if s >= threshold) / max(len(ham), 1)
        tpr = sum(1 for s in spam if s >= threshold) / max(len(spam), 1)
        points.append((fpr, tpr))
    points.append((1.0, 1.0))
    return points


def plot(report: CorpusReport, path: Path) -> None:
    try:
        import matplotlib as mpl

        mpl.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(
            "milterd corpustest --plot needs matplotlib: pip install 'milterd[plot]'"
        ) from exc
    if path.suffix.lower() not in (".png", ".svg"):
        raise SystemExit(f"milterd corpustest --plot: {path} must end in .png or .svg")
    ham, spam = report.ham.scores, report.spam.scores
    figure, (hist, roc) = plt.subplots(1, 2, figsize=(12, 4.5))
    low = min([*ham, *spam, 0.0])
    high = max([*ham, *spam, 1.0])
    bins = [low + (high - low) * i / 60 for i in range(61)]
    hist.hist(ham, bins=bins, alpha=0.6, label=f"ham (n={len(ham)})", color="tab:blue")
    hist.hist(spam, bins=bins, alpha=0.6, label=f"spam (n={len(spam)})", color="tab:red")
    hist.set_yscale("log")
    hist.set_xlabel("score")
    hist.set_ylabel("messages")
    hist.legend()
    hist.set_title("Score distribution")
    xs, ys = zip(*roc_points(ham, spam), strict=True)
    roc.plot(xs, ys, color="tab:purple")
    roc.set_xscale("symlog", linthresh=0.001)
    roc.set_xlim(0, 1)
    roc.set_ylim(0, 1.01)
    roc.set_xlabel("ham false positive rate")
    roc.set_ylabel("spam detection rate")
    roc.set_title(f"ROC (AUC {report.auc:.4f})")
    roc.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
