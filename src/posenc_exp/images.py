"""Small numpy renderers for TensorBoard images: fast enough to call every epoch, no matplotlib."""

from __future__ import annotations

import numpy as np

# A diverging blue-white-red ramp: negative values blue, zero white, positive red.
_BLUE = np.array([33, 102, 172], dtype=np.float64)
_WHITE = np.array([247, 247, 247], dtype=np.float64)
_RED = np.array([178, 24, 43], dtype=np.float64)
# The separator between tiles.
_GREY = np.array([128, 128, 128], dtype=np.uint8)


def heatmap_rgb(
    matrix: np.ndarray, cell: tuple[int, int] = (8, 8), max_cols: int = 128, scale: float | None = None
) -> np.ndarray:
    """Render a 2-D array as an ``(H, W, 3)`` uint8 image on a symmetric diverging scale.

    Values are divided by ``scale`` (default ``max |matrix|``) so that 0 is white, ``-scale`` blue and
    ``+scale`` red. Each entry becomes a ``cell`` of pixels (rows, cols). Beyond ``max_cols`` columns, evenly
    spaced columns are kept (first and last included).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape[1] > max_cols:
        matrix = matrix[:, np.linspace(0, matrix.shape[1] - 1, max_cols).round().astype(int)]
    scale = np.abs(matrix).max() if scale is None else scale
    t = np.clip(matrix / scale, -1.0, 1.0)[..., None] if scale > 0 else np.zeros((*matrix.shape, 1))
    rgb = np.where(t < 0, _WHITE + (_BLUE - _WHITE) * -t, _WHITE + (_RED - _WHITE) * t)
    rgb = np.repeat(np.repeat(rgb, cell[0], axis=0), cell[1], axis=1)
    return rgb.round().astype(np.uint8)


def tile_heatmaps(matrices: list[np.ndarray], cell: tuple[int, int] = (8, 8), gap: int = 2) -> np.ndarray:
    """Equal-shape 2-D arrays rendered side by side on one shared scale (``max |.|`` over all of them),
    separated by ``gap`` grey pixel columns, so that tiles compare by colour."""
    scale = max(float(np.abs(m).max()) for m in matrices)
    tiles = [heatmap_rgb(m, cell, max_cols=np.shape(m)[1], scale=scale) for m in matrices]
    separator = np.broadcast_to(_GREY, (tiles[0].shape[0], gap, 3))
    parts = [part for tile in tiles for part in (tile, separator)][:-1]
    return np.concatenate(parts, axis=1)
