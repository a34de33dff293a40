"""What a run prints on the console when it ends."""

from __future__ import annotations

import math
from typing import Any


def print_summary(metrics: dict[str, Any]) -> None:
    """The seed printed the encodings before and after training; this prints them as a table."""
    initial, final = metrics["encoding_initial"], metrics["encoding_final"]
    if initial is not None and initial == final:
        print("\nencoding: fixed, unchanged by training")
    elif initial is not None:
        wide = isinstance(initial[0], list)  # a table: one row per position (per bucket for t5)
        row, label = ("row", "row norm") if wide else ("position", "value")
        norm = lambda row: math.sqrt(sum(v * v for v in row)) if wide else row  # noqa: E731
        print(f"\n{row:>8} | {'initial ' + label:>16} | {'final ' + label:>16} | {'change':>9}")
        print(f"{'-' * 8}-+-{'-' * 16}-+-{'-' * 16}-+-{'-' * 9}")
        for i, (a, b) in enumerate(zip(initial, final, strict=True)):
            print(f"{i:>8} | {norm(a):>16.4f} | {norm(b):>16.4f} | {norm(b) - norm(a):>+9.4f}")
    floor = metrics.get("val_loss_floor")
    print(
        f"\nepochs={metrics['epochs']}  train_loss={metrics['train_loss']:.4f}  "
        f"val_loss={metrics['val_loss']:.4f}" + (f"  (best achievable {floor:.4f})" if floor is not None else "")
    )
    if len(metrics["eval"]) > 1:
        names = list(next(iter(metrics["eval"].values())))
        print(f"\n{'length':>8} | " + " | ".join(f"{name:>9}" for name in names))
        for length, values in metrics["eval"].items():
            mark = "*" if int(length) == metrics["train_length"] else " "
            print(f"{length:>7}{mark} | " + " | ".join(f"{values[name]:>9.4f}" for name in names))
        print("(* the training length)")
