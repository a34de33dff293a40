"""Generated tasks as LightningDataModules. The config group ``data`` mirrors this package."""

from posenc_exp.data.ar import AutoregressiveWindows
from posenc_exp.data.base import ChunkedBatches, SyntheticDataModule
from posenc_exp.data.lag import LagWindows
from posenc_exp.data.lengths import LengthGeneralizationTask, WindowTask, eval_lengths
from posenc_exp.data.random_windows import RandomWindows
from posenc_exp.data.text import TextBytes
from posenc_exp.data.tokens import AssociativeRecall, Copy, Reverse, Sort, TokenTask

__all__ = [
    "AssociativeRecall",
    "AutoregressiveWindows",
    "ChunkedBatches",
    "Copy",
    "LagWindows",
    "LengthGeneralizationTask",
    "RandomWindows",
    "Reverse",
    "Sort",
    "SyntheticDataModule",
    "TextBytes",
    "TokenTask",
    "WindowTask",
    "eval_lengths",
]
