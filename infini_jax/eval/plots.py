"""PNG plots of evaluation results (matplotlib, Agg backend: no display needed)."""

import numpy as np

from infini_jax import storage


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(summary: dict, path: str, title: str) -> None:
    """Depth (rows) × length (columns) accuracy, red (0%) → green (100%), cells annotated."""
    plt = _plt()
    depths = [int(d) for d in summary["by_depth"]]
    lengths = [int(n) for n in summary["by_length"]]
    grid = np.asarray(
        [[summary["by_depth_length"][f"{d},{n}"]["accuracy"] for n in lengths] for d in depths]
    )
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.4 * len(depths)))
    ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [_k(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d}%" for d in depths])
    ax.set(xlabel="context length (tokens)", ylabel="needle depth", title=title)
    fig.tight_layout()
    storage.save_figure(fig, path, dpi=120)
    plt.close(fig)


def curve(
    xs: list,
    series: dict[str, list],
    path: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    marker: str | None = "o",
    xscale: str = "linear",
) -> None:
    """One line per series against `xs` (accuracy vs length, NLL vs segment, ...)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in series.items():
        ax.plot(xs, ys, marker=marker, markersize=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale=xscale)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    storage.save_figure(fig, path, dpi=120)
    plt.close(fig)


def histogram(values: np.ndarray, path: str, *, xlabel: str, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=20, range=(0, 1))
    ax.set(xlabel=xlabel, ylabel="heads", title=title)
    fig.tight_layout()
    storage.save_figure(fig, path, dpi=120)
    plt.close(fig)


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 and n >= 1024 else str(n)
