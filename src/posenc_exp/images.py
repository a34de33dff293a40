"""Small numpy renderers for TensorBoard images: fast enough to call every epoch, no matplotlib."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from posenc_exp.encodings import PositionalEncoding

# Snapshot images show at most this many positions, and aim at about this many pixels per side.
IMAGE_POSITIONS = 64
IMAGE_PIXELS = 256

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


def cell_pixels(n_rows: int, n_cols: int, pixels: int = IMAGE_PIXELS) -> tuple[int, int]:
    """Pixels per entry (1 to 8) so that ``n_rows x n_cols`` entries make an image about ``pixels`` a side."""
    return (max(1, min(8, pixels // n_rows)), max(1, min(8, pixels // n_cols)))


def render_map(values: np.ndarray) -> np.ndarray:
    """An encoding's map as an RGB image: a 2-D map as one heatmap about ``IMAGE_PIXELS`` a side, a 3-D stack
    (one map per head) as tiles about half that, side by side on one shared scale."""
    if values.ndim == 2:
        return heatmap_rgb(values, cell_pixels(*values.shape))
    return tile_heatmaps(list(values), cell_pixels(*values.shape[1:], IMAGE_PIXELS // 2))


def snapshot_images(encoding: PositionalEncoding) -> dict[str, np.ndarray]:
    """Name -> ``(H, W, 3)`` uint8 image of each of the encoding's maps over at most ``IMAGE_POSITIONS``."""
    return {name: render_map(values) for name, values in encoding.snapshot_maps(IMAGE_POSITIONS).items()}
