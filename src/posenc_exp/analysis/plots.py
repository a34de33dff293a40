"""The plot helpers every analysis tool shares: matplotlib's file backend, panel grids and saving."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def subplots(rows: int, cols: int, width: float = 4.6, height: float = 3.6, n: int | None = None) -> tuple[Any, list]:
    """A figure of ``rows x cols`` panels of ``width x height`` inches, listed row by row; with ``n``, only the
    first ``n`` panels are kept (the rest hidden)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    n = rows * cols if n is None else n
    for extra in axes.flat[n:]:
        extra.set_visible(False)
    return figure, list(axes.flat[:n])


def grid(n: int, max_cols: int = 3, width: float = 4.5, height: float = 3.5) -> tuple[Any, list]:
    """``n`` panels in rows of at most ``max_cols``."""
    cols = min(max_cols, n)
    return subplots(math.ceil(n / cols), cols, width, height, n=n)


def save(figure: Any, path: Path, dpi: int = 100) -> Path:
    """Lay out, write ``path`` as PNG and free the figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
