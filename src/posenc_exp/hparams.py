"""TensorBoard's run-level summaries: the HParams tab's session of a run (which config values it shows) and
the Custom Scalars tab's layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from posenc_exp.rundir import parse_overrides
from posenc_exp.sweep import job_overrides

if TYPE_CHECKING:
    from posenc_exp.module import PosEncModule

# Config groups whose choice is a column of TensorBoard's HParams tab (the others are plumbing).
HPARAM_GROUPS = ("data", "model", "encoding", "optimizer", "trainer", "callbacks", "experiment")


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """What TensorBoard's HParams tab shows for this run: the choice of each config group of
    ``HPARAM_GROUPS`` (``model=attention``, ``encoding=rope``, ...), every key the job's overrides set (a
    sweep's swept keys among them) with its resolved value, and ``seed``. Not the ``_target_`` paths and
    constant defaults of whole groups, which buried the swept keys."""
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    params: dict[str, Any] = {group: choices[group] for group in HPARAM_GROUPS if choices.get(group) is not None}
    for key in parse_overrides(job_overrides()):
        if key in choices or "/" in key or key.split(".")[0] == "hydra":
            continue  # a group choice (above), or Hydra's own settings
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig | ListConfig):
            value = str(OmegaConf.to_container(value, resolve=True))
        params[key] = value if isinstance(value, int | float | str | bool) else str(value)
    params.setdefault("seed", cfg.seed)
    return params


def log_hparams(writer: Any, params: dict[str, Any]) -> None:
    """Write this run's session of TensorBoard's HParams tab: its hyperparameters ``params``.

    No experiment summary is written: TensorBoard then builds the tab's columns from every run of the logdir,
    the hyperparameters that differ first, and takes its metric columns from the scalar tags of all runs,
    so every run of a logdir has the same columns (a run's own experiment summary would stand for all of
    them, e.g. a feed-forward run's hiding the attention runs' ``val/acc``). The metric values are read
    from the runs' scalar series; no placeholder value is written.
    """
    from torch.utils.tensorboard.summary import hparams

    _, session_start, session_end = hparams(params, {})
    for summary in (session_start, session_end):
        writer.file_writer.add_summary(summary)


def log_scalar_layout(writer: Any, module: PosEncModule) -> None:
    """The Custom Scalars tab's layout for this run: the losses first, train and validation in one chart; each
    validation metric over its evaluation lengths (``val/<metric>@len=<n>``, one line per length); the
    encoding's distance from its initial value. TensorBoard merges the layouts of a logdir's runs by title."""
    names = module.metric_names()
    layout: dict[str, dict[str, list]] = {
        "losses": {"train/loss, val/loss": ["Multiline", ["^train/loss$", "^val/loss$"]]},
    }
    layout["losses"].update({f"val/{name}": ["Multiline", [f"^val/{name}$"]] for name in names if name != "loss"})
    if len(module.eval_lengths) > 1:
        layout["by evaluation length"] = {f"val/{name}@len": ["Multiline", [f"^val/{name}@len="]] for name in names}
    if module.net.encoding.trainable:
        layout["encoding"] = {"encoding/distance_from_init": ["Multiline", ["^encoding/distance_from_init$"]]}
    writer.add_custom_scalars(layout)
