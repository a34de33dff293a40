"""Checks that turn bad input into one clear error line before anything is trained or written."""

from __future__ import annotations

import itertools
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from posenc_exp import CONFIG_DIR


class ConfigError(ValueError):
    """A config value or combination that cannot work. The message names the key and what is allowed."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


POSITIVE_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")

# key -> (predicate, what is allowed). Keys absent from a config are skipped.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.context_size": POSITIVE_INT,
    "model.n_hidden": POSITIVE_INT,
    "data.batch_size": POSITIVE_INT,
    "data.chunk_steps": POSITIVE_INT,
    "data.val_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a fraction strictly between 0 and 1"),
    "optimizer.lr": (lambda v: _is_number(v) and v > 0 and math.isfinite(v), "a finite number > 0"),
    "trainer.max_epochs": POSITIVE_INT,
    "model.d_model": POSITIVE_INT,
    "model.n_heads": POSITIVE_INT,
    "model.depth": POSITIVE_INT,
    "model.mlp_ratio": POSITIVE_INT,
    "model.norm": (lambda v: v in ("pre", "post", "none"), "one of pre, post, none"),
    "data.length": POSITIVE_INT,
    "data.n_train": POSITIVE_INT,
    "data.n_val": POSITIVE_INT,
    "data.eval_factors": (
        lambda v: len(v) > 0 and all(_is_number(f) and f > 0 for f in v),
        "a non-empty list of factors > 0",
    ),
}


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value outside its allowed range."""
    for key, (allowed, description) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        try:
            ok = allowed(value)
        except TypeError:
            ok = False
        if value is not None and not ok:
            raise ConfigError(f"{key}={value} is not allowed: expected {description}")
    xlen, context = OmegaConf.select(cfg, "data.xlen"), OmegaConf.select(cfg, "data.context_size")
    if xlen is not None and xlen <= context:
        raise ConfigError(f"data.xlen={xlen} is not allowed: expected an integer > data.context_size={context}")
    check_combination(cfg)
    check_accelerator(cfg)
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg.ckpt_path)


def _option(cfg: DictConfig, group: str) -> str:
    """``group=option`` as the user chose it (Hydra's runtime choices, from the running app or from a config
    composed with its ``hydra`` node), else ``group._target_=...``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
    else:
        choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
    return f"{group}={choice}" if choice else f"{group}._target_={cfg[group]._target_}"


def check_combination(cfg: DictConfig) -> None:
    """Model / task / encoding combinations that cannot work, each as one :class:`ConfigError` line.

    The feed-forward model reads a fixed window of scalars through input-added encodings only; token tasks
    are trained with teacher forcing and need a causal model; heads must divide the width (and RoPE needs
    an even head width); a trained position table must cover ``data.max_len``, and ``data.max_len`` the
    longest evaluation input; then the task's own checks (``check_config``).
    """
    from hydra.utils import get_class

    from posenc_exp.data.lengths import eval_lengths
    from posenc_exp.encodings import AbsoluteTable, Sinusoidal
    from posenc_exp.models import FeedForward

    if "data" not in cfg or "model" not in cfg:
        return
    task = get_class(cfg.data._target_)
    model = get_class(cfg.model._target_)
    encoding = get_class(cfg.encoding._target_) if cfg.get("encoding") else None
    data, model_name, data_name = cfg.data, _option(cfg, "model"), _option(cfg, "data")
    if issubclass(model, FeedForward):
        if task.task != "regression":
            raise ConfigError(
                f"{model_name} reads windows of scalars and cannot serve the token task {data_name}: "
                "use model=attention"
            )
        if encoding is not None and encoding.acts_on != "input":
            raise ConfigError(
                f"{model_name} takes only input-added encodings (none, learned, sinusoidal); "
                f"{_option(cfg, 'encoding')} acts on '{encoding.acts_on}': use model=attention"
            )
        if "eval_factors" in data and eval_lengths(data.length, data.eval_factors) != [data.length]:
            raise ConfigError(
                f"{model_name} reads exactly data.length={data.length} values and cannot be evaluated "
                f"at data.eval_factors={list(data.eval_factors)}: set data.eval_factors=[1.0] or use "
                "model=attention"
            )
    if task.task == "tokens" and not cfg.model.get("causal", False):
        raise ConfigError(
            f"{data_name} is trained with teacher forcing (the answer tokens are inputs) and needs model.causal=true"
        )
    d_model, n_heads = cfg.model.get("d_model"), cfg.model.get("n_heads")
    if d_model is not None and n_heads is not None:
        if d_model % n_heads:
            raise ConfigError(f"model.n_heads={n_heads} does not divide model.d_model={d_model}")
        if encoding is not None and encoding.acts_on == "rotary" and (d_model // n_heads) % 2:
            raise ConfigError(
                f"{_option(cfg, 'encoding')} rotates pairs of dimensions: the head width "
                f"model.d_model/model.n_heads={d_model}/{n_heads} must be even"
            )
    trained_table = (
        encoding is not None
        and issubclass(encoding, AbsoluteTable)
        and not (issubclass(encoding, Sinusoidal) and not cfg.encoding.get("learnable", False))
    )
    if trained_table and cfg.encoding.max_len < data.max_len:
        raise ConfigError(
            f"encoding.max_len={cfg.encoding.max_len} is shorter than data.max_len={data.max_len}, "
            "the longest input evaluated: a trained table has no rows past its length; leave "
            "encoding.max_len at ${data.max_len}"
        )
    if "eval_factors" in data and hasattr(task, "longest_input"):
        longest = task.longest_input(data.length, list(data.eval_factors))
        if data.max_len < longest:
            raise ConfigError(
                f"data.max_len={data.max_len} is shorter than the longest evaluation input ({longest} "
                "positions, from data.length and data.eval_factors): leave data.max_len at its default"
            )
    if hasattr(task, "check_config"):
        task.check_config(data)


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer (``trainer.accelerator=gpu``/``cuda``, e.g. ``trainer=ddp``) needs a visible CUDA device."""
    import torch

    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and none is visible: "
            "use trainer.accelerator=cpu, or trainer=ddp_cpu for distributed training on CPU"
        )


def check_checkpoint(path: str) -> None:
    """A Lightning checkpoint that exists and loads with ``weights_only=True``."""
    import torch

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: expected a checkpoint file such as last.ckpt")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"ckpt_path={path} is not a checkpoint: {type(error).__name__}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} is not a Lightning checkpoint (no state_dict/epoch)")


_GROUP_CHOICE = re.compile(r"^[+~]?([\w/]+)=([\w,./-]+)$")


def check_group_choices(overrides: Sequence[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject ``group=option`` overrides naming an option that has no ``conf/group/option.yaml``.

    Hydra would fail too, but with a screenful; this says it in one line. Only plain and comma-separated
    choices of groups under ``conf/`` are checked; Hydra's own groups and sweep functions are left to it.
    """
    for override in overrides:
        match = _GROUP_CHOICE.match(override)
        if not match or match[1].startswith("hydra") or not (config_dir / match[1]).is_dir():
            continue
        group, options = match[1], match[2]
        allowed = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        for option in options.split(","):
            if option != "null" and option not in allowed:
                raise ConfigError(f"{group}={option} is not an option of '{group}': allowed {', '.join(allowed)}")


def compose_train(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The composed ``train`` config, as ``python -m posenc_exp.train <overrides>`` sees it (with the ``hydra``
    node, e.g. ``hydra.runtime.choices``, when ``return_hydra_config``), via Hydra's compose API."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=return_hydra_config)


# Hydra's flags that ask for something other than a run (help, the config, shell completion): left to Hydra.
INSPECTION_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")
MULTIRUN_FLAGS = ("-m", "--multirun")


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra override strings with comma lists or ``range(...)`` -> every combination, in order."""
    return [list(combination) for combination in itertools.product(*_sweep_values(overrides))]


def _sweep_values(overrides: Sequence[str]) -> list[list[str]]:
    """Each override as the list of plain overrides its sweep stands for (itself when it is no sweep; none
    for a search space such as Optuna's ``interval(...)``, which only the sweeper can draw from)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            values.append([override.input_line])
        elif override.is_discrete_sweep():
            values.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        else:
            values.append([])
    return values


def one_at_a_time(overrides: Sequence[str]) -> list[list[str]]:
    """The plain override lists that together try every value of every sweep once: the first values of all,
    then each further value with the others at their first. ``a=1,2 b=3,4`` -> ``[a=1 b=3], [a=2 b=3],
    [a=1 b=4]``: as many compositions as values, not the product."""
    values = [v for v in _sweep_values(overrides) if v]
    first = [v[0] for v in values]
    variants = [first]
    for i, choices in enumerate(values):
        variants += [[*first[:i], choice, *first[i + 1 :]] for choice in choices[1:]]
    return variants


def check_overrides(args: Sequence[str]) -> DictConfig | None:
    """Compose the config with the command line's overrides (with ``-m``, every value of every sweep once),
    turn a failure into one line, and return the composed config with its ``hydra`` node (of the first
    combination), or ``None`` when a flag asks Hydra for something other than a run (``--help``, ``--cfg``).

    Catches what Hydra reports in several lines: a key that does not exist (``model.n_hiden=8``), a value
    of the wrong type, a malformed override or sweep.
    """
    flags = [arg for arg in args if arg.startswith("-")]
    if any(flag not in MULTIRUN_FLAGS for flag in flags):
        return None
    overrides = [arg for arg in args if not arg.startswith("-")]
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        variants = one_at_a_time(overrides) if flags else [overrides]
    except HydraException as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    composed = None
    for variant in variants:
        try:
            cfg = compose_train(variant, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as error:
            # The override to name: the one whose removal lets the rest compose.
            culprit = next((o for o in variant if not _compose_error([x for x in variant if x != o])), None)
            lines = [f"{culprit}:" if culprit else "", str(error).splitlines()[0]]
            if error.__cause__ is not None:
                lines.append(str(error.__cause__).splitlines()[0])
            hint = "; add a new key with +key=value, list the keys with --cfg job"
            raise ConfigError(" ".join(lines).strip() + (hint if "not in struct" in lines[-1] else "")) from None
        composed = composed or cfg
    return composed


def check_output_dir(cfg: DictConfig, multirun: bool) -> None:
    """The run directory (``hydra.run.dir``; with ``-m``, ``hydra.sweep.dir``) can be made and written to:
    checked before Hydra makes it, since Hydra reports a failure there as a traceback."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    directory = Path(str(OmegaConf.select(cfg, key)))
    existing = next((p for p in (directory, *directory.parents) if os.path.lexists(p)), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{key}={directory} is not allowed: {existing} is a file, not a directory")
    try:  # the real test (os.access says yes to root, also where nothing can be made, such as /proc)
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as error:
        raise ConfigError(f"{key}={directory} is not allowed: {existing} is not writable ({error.strerror})") from None


def _compose_error(overrides: Sequence[str]) -> bool:
    """Whether composing with just these overrides fails."""
    try:
        compose_train(overrides)
    except Exception:
        return True
    return False
