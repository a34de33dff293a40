"""Small numpy renderers for TensorBoard images: fast enough to call every epoch, no matplotlib."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def snapshot_images(encoding: PositionalEncoding, replica: int = 0) -> dict[str, np.ndarray]:
    """Name -> ``(H, W, 3)`` uint8 image of each of replica ``replica``'s maps over at most ``IMAGE_POSITIONS``."""
    maps = encoding.snapshot_maps(IMAGE_POSITIONS, replica)
    return {name: render_map(values) for name, values in maps.items()}


# Labelled images: tick labels, axis names and a colour bar, drawn with Pillow's bundled font (no matplotlib,
# about a millisecond per image), so a reader can tell which row is which position and which column which epoch.
_FONT_SIZE = 11
_MARGIN = 4
_BAR_WIDTH = 10


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=_FONT_SIZE)


def ticks(n: int, most: int = 6) -> list[int]:
    """Indices of ``0..n-1`` to label: multiples of a round step (1, 2 or 5 times a power of ten) that
    leaves at most about ``most`` of them, and the last index."""
    if n <= most:
        return list(range(n))
    step = next(s * 10**k for k in range(12) for s in (1, 2, 5) if s * 10**k * (most - 1) >= n - 1)
    labelled = list(range(0, n - 1, step))
    if (n - 1) - labelled[-1] <= step / 2:  # too close to the last index to print both
        labelled.pop()
    return [*labelled, n - 1]


def _format(value: float) -> str:
    return f"{value:+.3g}" if value else "0"


def labelled_heatmaps(
    matrices: list[np.ndarray],
    rows: str,
    cols: str,
    titles: list[str] | None = None,
    size: tuple[int, int] = (200, 300),
    scale: float | None = None,
    columns: int | None = None,
) -> np.ndarray:
    """Equal-shape 2-D arrays as one ``(H, W, 3)`` uint8 image: heatmaps in a grid of ``columns`` per row
    (default: all in one row) on one shared diverging scale (:func:`heatmap_rgb`), each exactly ``size``
    (height, width) pixels whatever its shape, with the row index (``rows``, e.g. "position") ticked on the
    left of each grid row, the column index (``cols``, e.g. "epoch") under each heatmap, an optional title
    above each, and a colour bar from ``-scale`` (0 when no value is negative) to ``+scale`` on the right.
    The image's size depends only on ``size``, the number of matrices and the number of rows, so a series of
    them (one per epoch) does not jump in TensorBoard.

    Each entry covers ``size / shape`` pixels (rounded per entry); beyond ``size`` entries, evenly spaced
    rows or columns are kept and the ticks still name the original indices.
    """
    n_rows, n_cols = np.shape(matrices[0])
    height, width = size
    row_of = np.arange(height) * n_rows // height  # the entry each pixel row (column) shows
    col_of = np.arange(width) * n_cols // width
    scale = max(float(np.abs(m).max()) for m in matrices) if scale is None else scale
    tiles = [heatmap_rgb(m, (1, 1), max_cols=n_cols, scale=scale)[row_of][:, col_of] for m in matrices]
    columns = min(columns or len(tiles), len(tiles))
    grid_rows = -(-len(tiles) // columns)
    font = _font()
    text_h = _FONT_SIZE + 2
    row_labels = {i: str(i) for i in ticks(n_rows)}
    left = max(font.getbbox(s)[2] for s in [*row_labels.values(), rows]) + 2 * _MARGIN
    block_h = text_h + _MARGIN + height + 2 * text_h + 2 * _MARGIN  # title, heatmap, ticks, axis name
    low = 0.0 if all(float(np.min(m)) >= 0 for m in matrices) else -1.0  # non-negative: a white-to-red bar
    bar_labels = [_format(scale), _format((1 + low) / 2 * scale), _format(low * scale)]
    right = _BAR_WIDTH + font.getbbox("-8.88e-88")[2] + 3 * _MARGIN  # room for any label: a fixed width
    canvas = Image.new("RGB", (left + columns * (width + 2 * _MARGIN) + right, grid_rows * block_h), "white")
    draw = ImageDraw.Draw(canvas)
    black = (0, 0, 0)
    draw.text((_MARGIN, 0), rows, fill=black, font=font)
    for grid_row in range(grid_rows):
        top = grid_row * block_h + text_h + _MARGIN
        for i, label in row_labels.items():  # row ticks, at the middle of each labelled row
            y = top + int((i + 0.5) * height / n_rows)
            draw.line([(left - 3, y), (left - 1, y)], fill=black)
            draw.text((left - 6, y), label, fill=black, font=font, anchor="rm")
    for index, tile in enumerate(tiles):
        x = left + (index % columns) * (width + 2 * _MARGIN)
        top = (index // columns) * block_h + text_h + _MARGIN
        canvas.paste(Image.fromarray(tile), (x, top))
        if titles:
            draw.text((x + width // 2, top - 1), titles[index], fill=black, font=font, anchor="md")
        for k in ticks(n_cols, most=max(2, width // 40)):  # column ticks under the heatmap
            cx = x + int((k + 0.5) * width / n_cols)
            draw.line([(cx, top + height), (cx, top + height + 2)], fill=black)
            draw.text((cx, top + height + 3), str(k), fill=black, font=font, anchor="ma")
        draw.text((x + width // 2, top + height + text_h + 3), cols, fill=black, font=font, anchor="ma")
    x, top = left + columns * (width + 2 * _MARGIN), text_h + _MARGIN
    ramp = np.linspace(1.0, low, height)[:, None].repeat(_BAR_WIDTH, axis=1)  # the colour bar, +scale on top
    canvas.paste(Image.fromarray(heatmap_rgb(ramp, (1, 1), max_cols=_BAR_WIDTH, scale=1.0)), (x, top))
    for label, y in zip(bar_labels, (top, top + height // 2, top + height), strict=True):
        draw.text((x + _BAR_WIDTH + _MARGIN, y), label, fill=black, font=font, anchor="lm")
    return np.asarray(canvas)


def write_image(writer: Any, tag: str, image: np.ndarray, step: int) -> None:
    """Write an ``(H, W, 3)`` uint8 ``image`` to a ``SummaryWriter`` as TensorBoard's image ``tag`` at ``step``.

    What ``writer.add_image(tag, image, step, dataformats="HWC")`` writes, the same pixels, encoded as PNG at
    zlib level 1 instead of 6, and without its round trip of a uint8 image through float32: about 3 ms
    instead of 10 ms for a 250 x 430 history image on the 2-core machine, for a file about 25 % larger.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG", compress_level=1)
    height, width, channels = image.shape
    encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)
