"""Range checks that components run on their own config (``check_config``): each raises one
:class:`ConfigError` line naming the key and what is allowed. Torch-free, so the schemas' checks of the torch
and Lightning classes need neither; imports only the leaf module ``errors``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posenc_exp.errors import ConfigError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_int(key: str, value: Any, minimum: int = 1, maximum: int | None = None, allowed: str = "") -> None:
    """``value`` an integer in ``[minimum, maximum]``, else a :class:`ConfigError` naming ``key``."""
    if not (is_int(value) and value >= minimum and (maximum is None or value <= maximum)):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigError(f"{key}={value} is not allowed: expected {allowed or f'an integer >= {minimum}{upper}'}")


def require_number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    allowed: str = "",
    inclusive: bool = False,
) -> None:
    """``value`` a finite number in the open interval ``(low, high)`` (``[low, high)`` if ``inclusive``; an end
    that is ``None`` is unbounded)."""
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (low is None or value > low or (inclusive and value == low)) and (high is None or value < high)
    if not ok:
        bounds = " and ".join(b for b in (low is not None and f"> {low}", high is not None and f"< {high}") if b)
        raise ConfigError(f"{key}={value} is not allowed: expected {allowed or 'a finite number ' + bounds}")


def require_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value} is not allowed: expected one of {', '.join(choices)}")


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux's MemAvailable; else the physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_parameters(keys: str, count: float) -> None:
    """``count`` float32 parameters fit in memory 4 times over: weights, gradients and Adam's two moments."""
    require_memory(keys, 16 * count, f"{count:.3g} parameters (weights, gradients, Adam's two moments)")


def require_memory(keys: str, n_bytes: float, what: str) -> None:
    """Refuse sizes whose tensors would not fit in the available memory, before anything is allocated:
    ``keys`` (e.g. ``model.d_model=.. model.depth=..``) need ``n_bytes`` for ``what``."""
    available = available_memory()
    if n_bytes > available:
        raise ConfigError(
            f"{keys} is not allowed: {what} would need {n_bytes / 2**30:.3g} GiB, and {available / 2**30:.3g} GiB "
            "of memory is available"
        )
