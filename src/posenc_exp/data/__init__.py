"""Generated tasks as LightningDataModules. The config group ``data`` mirrors this package."""

from posenc_exp.data.ar import AutoregressiveWindows
from posenc_exp.data.base import ChunkedBatches, FreshBatches, SyntheticDataModule
from posenc_exp.data.chomsky import (
    BinaryAddition,
    BucketSort,
    ChomskyTask,
    CycleNavigation,
    DuplicateString,
    EvenPairs,
    MissingDuplicate,
    ModularArithmetic,
    ModularArithmeticBrackets,
    OddsFirst,
    Parity,
    ReverseString,
    StackManipulation,
)
from posenc_exp.data.lag import LagWindows
from posenc_exp.data.lengths import LengthGeneralizationTask, WindowTask, eval_lengths
from posenc_exp.data.random_windows import RandomWindows
from posenc_exp.data.text import TextBytes
from posenc_exp.data.tokens import AssociativeRecall, Copy, Reverse, Sort, TokenTask

__all__ = [
    "AssociativeRecall",
    "AutoregressiveWindows",
    "BinaryAddition",
    "BucketSort",
    "ChomskyTask",
    "ChunkedBatches",
    "Copy",
    "CycleNavigation",
    "DuplicateString",
    "EvenPairs",
    "FreshBatches",
    "LagWindows",
    "LengthGeneralizationTask",
    "MissingDuplicate",
    "ModularArithmetic",
    "ModularArithmeticBrackets",
    "OddsFirst",
    "Parity",
    "RandomWindows",
    "Reverse",
    "ReverseString",
    "Sort",
    "StackManipulation",
    "SyntheticDataModule",
    "TextBytes",
    "TokenTask",
    "WindowTask",
    "eval_lengths",
]
