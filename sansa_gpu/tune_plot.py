"""The picture of a search (:meth:`sansa_gpu.tuning.TuneResult.plot`): validation metric against weights size."""

from __future__ import annotations

import os


def plot_trials(result, path: str | os.PathLike, title: str | None = None) -> None:
    """Validation ``result.metric`` against weights size (log axis): per factoriser / pruning level the best
    ``l2`` at each density as a line, the chosen model marked, dense EASE as a point where it was measured
    (``dense_ease`` in :func:`sansa_gpu.tune`: at the chosen ``l2``, which for an ICF choice is not EASE's own
    best, ICF's column scaling shifting its scale). Needs matplotlib.

    result : a :class:`~sansa_gpu.tuning.TuneResult`. The file is written atomically; its format follows
    the extension of ``path`` (png by default).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from exc
    ok = [t for t in result.trials if t["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = sorted({(t["factorizer"], t["min_cooccurrence"]) for t in ok})
    for fac, mc in groups:
        best_at = {}
        for t in ok:
            if (t["factorizer"], t["min_cooccurrence"]) == (fac, mc):
                d = t["density"]
                if d not in best_at or t[result.metric] > best_at[d][result.metric]:
                    best_at[d] = t
        pts = sorted(best_at.values(), key=lambda t: t["model_bytes"])
        label = fac.upper() if fac == "icf" else "CHOLMOD"
        label += f", min_cooccurrence {mc:g}" if fac == "icf" else ""
        ax.plot([t["model_bytes"] / 1e6 for t in pts], [t[result.metric] for t in pts], marker="o", ms=4, label=label)
    ax.scatter([result.best["model_bytes"] / 1e6], [result.best[result.metric]], s=160, facecolors="none",
               edgecolors="black", linewidths=1.5, zorder=5, label="chosen")
    if result.dense_ease:
        ax.scatter([result.dense_ease["model_bytes"] / 1e6], [result.dense_ease[result.metric]], marker="*", s=140,
                   color="black", zorder=5, label=f"dense EASE (λ={result.dense_ease['l2']:.4g})")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # "3", "0.5", not "3×10⁰" overlapping its neighbours
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_xlim()
    if hi / lo < 1e3:  # narrow ranges: label the 2 and 5 minor ticks too (wider ones would crowd)
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("weights size (MB, log scale)")
    ax.set_ylabel(f"validation {result.metric}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    fig.tight_layout()
    from .io import atomic_file

    with atomic_file(path, ".plot-part") as f:
        fig.savefig(f, format=os.path.splitext(os.fspath(path))[1].lstrip(".") or "png", dpi=120)
    plt.close(fig)
