"""posenc-exp: a laboratory for positional-encoding experiments (Lightning + Hydra + TensorBoard)."""

from pathlib import Path

# The Hydra configs live at the repository root (`conf/`), next to `src/`; an editable install finds them here.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
