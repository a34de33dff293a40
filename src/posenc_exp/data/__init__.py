"""Generated tasks as LightningDataModules. The config group ``data`` mirrors this package."""

from posenc_exp.data.base import ChunkedBatches, SyntheticDataModule
from posenc_exp.data.random_windows import RandomWindows

__all__ = ["ChunkedBatches", "RandomWindows", "SyntheticDataModule"]
