"""posenc-exp: a laboratory for positional-encoding experiments (Lightning + Hydra + TensorBoard)."""

import warnings
from pathlib import Path

from omegaconf import OmegaConf

# The Hydra configs live at the repository root (`conf/`), next to `src/`; an editable install finds them here.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def _longest_input(target: str, length: int, eval_factors: list[float]) -> int:
    """Resolver ``${posenc.max_positions:${._target_},${.length},${.eval_factors}}`` of the data configs: the
    longest input the task ``target`` feeds the model over its evaluation lengths (its ``longest_input``): from
    its torch-free spec (``posenc_exp.schemas.spec``), else from its class (a task outside this package)."""
    from hydra.utils import get_class

    from posenc_exp.schemas import spec

    return (spec(target) or get_class(target)).longest_input(length, list(eval_factors))


OmegaConf.register_new_resolver("posenc.max_positions", _longest_input, replace=True)

from posenc_exp import schemas  # noqa: E402, F401  registers the config schemas in Hydra's ConfigStore

# conf/hydra/launcher/ presets share the plugins' names on purpose: Hydra merges each onto the plugin's own
# config ("automatic schema matching") and warns on every composition, in every job process too.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/", category=UserWarning)
