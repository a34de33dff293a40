"""posenc-exp: a laboratory for positional-encoding experiments (Lightning + Hydra + TensorBoard)."""

import warnings
from pathlib import Path

# The Hydra configs live at the repository root (`conf/`), next to `src/`; an editable install finds them here.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"

# conf/hydra/launcher/ presets share the plugins' names on purpose: Hydra merges each onto the plugin's own
# config ("automatic schema matching") and warns on every composition, in every job process too.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/", category=UserWarning)
