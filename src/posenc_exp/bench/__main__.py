"""``python -m posenc_exp.bench <name> [args]``: run the benchmark module ``posenc_exp.bench.<name>``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main() -> None:
    names = available()
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in names:
        print(f"error: benchmark '{name}' is not one of: {', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"python -m posenc_exp.bench {name}", *sys.argv[2:]]
    importlib.import_module(f"posenc_exp.bench.{name}").main()


if __name__ == "__main__":
    main()
