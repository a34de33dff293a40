"""Checks that turn bad input into one clear error line before anything is trained or written."""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from posenc_exp import CONFIG_DIR
from posenc_exp.errors import ConfigError
from posenc_exp.schemas import check_target, spec_of, target_class  # noqa: F401  (spec_of: re-exported)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value outside its allowed range or the first combination that
    cannot work: the kinds of model, task and encoding that cannot work together (:func:`check_compatibility`),
    each component's own checks (:func:`check_components`), the relations between their values
    (:func:`check_combination`), the accelerator and the checkpoint to resume from."""
    check_compatibility(cfg)
    check_components(cfg)
    check_combination(cfg)
    check_accelerator(cfg)
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg.ckpt_path)


COMPONENT_GROUPS = ("data", "model", "encoding", "optimizer", "trainer", "logger")


def check_components(cfg: DictConfig) -> None:
    """Each component checks its own ranges, on its resolved config node: the ``check_config(config)``
    classmethod of its spec (:func:`spec_of`), so a new option brings its own checks and nothing here grows
    with the options; one without ``check_config`` is not range-checked (its types still are, where it has
    a schema)."""
    nodes = [("", cfg), *((g, cfg[g]) for g in COMPONENT_GROUPS if isinstance(cfg.get(g), DictConfig))]
    callbacks = cfg.get("callbacks") or {}
    nodes += [(f"callbacks.{name}", node) for name, node in callbacks.items() if isinstance(node, DictConfig)]
    for key, node in nodes:
        if "_target_" in node:
            check_target(node, key)
        spec = spec_of(node, key) if "_target_" in node else OmegaConf.get_type(node)
        if hasattr(spec, "check_config"):
            spec.check_config(node, key) if key.startswith("callbacks.") else spec.check_config(node)


def _option(cfg: DictConfig, group: str) -> str:
    """``group=option`` as the user chose it (Hydra's runtime choices, from the running app or from a config
    composed with its ``hydra`` node), else ``group._target_=...``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
    else:
        choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
    return f"{group}={choice}" if choice else f"{group}._target_={cfg[group]._target_}"


def check_compatibility(cfg: DictConfig) -> None:
    """Kinds of model, task and encoding that cannot work together, each as one :class:`ConfigError` line,
    checked before any value: the feed-forward model (its spec's ``fixed_window``) reads a fixed window of
    scalars through input-added encodings only; token tasks are trained with teacher forcing and need a
    causal model. Read from the components' specs (:func:`spec_of`)."""
    if "data" not in cfg or "model" not in cfg:
        return
    task = getattr(spec_of(cfg.data, "data", "task"), "task", None)
    model_name, data_name = _option(cfg, "model"), _option(cfg, "data")
    if getattr(spec_of(cfg.model, "model", "fixed_window"), "fixed_window", False):
        if task != "regression":
            raise ConfigError(
                f"{model_name} reads windows of scalars and cannot serve the token task {data_name}: "
                "use model=attention"
            )
        acts_on = getattr(spec_of(cfg.encoding, "encoding", "acts_on"), "acts_on", "input")
        if cfg.get("encoding") and acts_on != "input":
            raise ConfigError(
                f"{model_name} takes only input-added encodings (none, learned, sinusoidal); "
                f"{_option(cfg, 'encoding')} acts on '{acts_on}': use model=attention"
            )
    data_spec = spec_of(cfg.data, "data", "check_causal")
    if hasattr(data_spec, "check_causal"):  # e.g. teacher-forced token tasks need model.causal=true
        data_spec.check_causal(cfg.data, cfg.model.get("causal", False), data_name)


def check_combination(cfg: DictConfig) -> None:
    """Relations between the values of model, task and encoding that cannot work, each as one
    :class:`ConfigError` line: the feed-forward model reads exactly ``data.length`` values; a trained position
    table (the encoding spec's ``trains_table``) must cover ``data.max_positions``, and ``data.max_positions``
    the longest evaluation input (the task spec's ``longest_input``). What one component alone decides (e.g.
    that heads divide the width) is its own check (:func:`check_components`).
    """
    from posenc_exp.schemas.data import eval_lengths

    if "data" not in cfg or "model" not in cfg:
        return
    data = cfg.data
    windows = eval_lengths(data.length, data.eval_factors) if "eval_factors" in data else [data.get("length")]
    if getattr(spec_of(cfg.model, "model", "fixed_window"), "fixed_window", False) and windows != [data.length]:
        raise ConfigError(
            f"{_option(cfg, 'model')} reads exactly data.length={data.length} values and cannot be evaluated "
            f"at data.eval_factors={list(data.eval_factors)}: set data.eval_factors=[1.0] or use model=attention"
        )
    encoding = spec_of(cfg.encoding, "encoding", "trains_table") if cfg.get("encoding") else None
    trained_table = encoding is not None and getattr(encoding, "trains_table", lambda _: False)(cfg.encoding)
    if trained_table and cfg.encoding.max_positions < data.max_positions:
        raise ConfigError(
            f"encoding.max_positions={cfg.encoding.max_positions} is shorter than "
            f"data.max_positions={data.max_positions}, the longest input evaluated: a trained table has no rows "
            "past its length; leave encoding.max_positions at ${data.max_positions}"
        )
    task = spec_of(data, "data", "longest_input")
    if "eval_factors" in data and hasattr(task, "longest_input"):
        longest = task.longest_input(data.length, list(data.eval_factors))
        if data.max_positions < longest:
            raise ConfigError(
                f"data.max_positions={data.max_positions} is shorter than the longest evaluation input ({longest} "
                "positions, from data.length and data.eval_factors): leave data.max_positions at its default"
            )


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer (``trainer.accelerator=gpu``/``cuda``, e.g. ``trainer=ddp``) needs a visible CUDA device."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="cpu")
    if accelerator not in ("gpu", "cuda"):
        return
    import torch  # only for the keys that need it: --help and the other errors need no torch

    if not torch.cuda.is_available():
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


# Old spellings of renamed keys and options (one name per concept): refused with the new name.
RENAMED = {
    "data.context_size": "data.length",
    "model.context_size": "model.length",
    "data.max_len": "data.max_positions",
    "encoding.max_len": "encoding.max_positions",
    "experiment=seed": "experiment=toy",
}


def check_renamed(overrides: Sequence[str]) -> None:
    """One line for an override that uses a renamed key (``data.context_size=8``) or option (``experiment=seed``)."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        old = key if key in RENAMED else f"{key}={value}"
        if old in RENAMED:
            new = RENAMED[old]
            raise ConfigError(f"{old} was renamed to {new}: use {new if '=' in new else f'{new}={value}'}")


_GROUP_CHOICE = re.compile(r"^[+~]?([\w/]+)=([\w,./-]+)$")


def search_path(overrides: Sequence[str]) -> list[Path] | None:
    """The folders a ``hydra.searchpath=[file://...]`` override adds to ``conf/`` (options outside the repository,
    see docs/extending.md); ``None`` when an entry is not a ``file://`` folder (a ``pkg://`` one cannot be listed)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            entries = [entry.strip().strip("'\"") for entry in value.strip().strip("[]").split(",") if entry.strip()]
            if not all(entry.startswith("file://") for entry in entries):
                return None
            return [Path(entry.removeprefix("file://")) for entry in entries]
    return []


def check_group_choices(overrides: Sequence[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject ``group=option`` overrides naming an option that has no ``conf/group/option.yaml``.

    Hydra would fail too, but with a screenful; this says it in one line. Files whose names start with ``_``
    are bases that options share (``conf/data/_tokens.yaml``), not options. Only plain and comma-separated
    choices of groups under ``conf/`` are checked; Hydra's own groups and sweep functions are left to it.
    Options in the folders of a ``hydra.searchpath`` override count as well.
    """
    extra = search_path(overrides)
    if extra is None:
        return  # a search path that cannot be listed: Hydra reports an unknown option itself
    for override in overrides:
        match = _GROUP_CHOICE.match(override)
        if not match or match[1].startswith("hydra") or not (config_dir / match[1]).is_dir():
            continue
        group, options = match[1], match[2]
        allowed = group_options(group, [config_dir, *extra])
        for option in options.split(","):
            if option != "null" and option not in allowed:
                raise ConfigError(f"{group}={option} is not an option of '{group}': allowed {', '.join(allowed)}")


def group_options(group: str, folders: Sequence[Path] = (CONFIG_DIR,)) -> list[str]:
    """The options of config group ``group`` (``conf/<group>/<option>.yaml``) in these config folders; files
    whose names start with ``_`` are bases that options share (``conf/data/_tokens.yaml``), not options."""
    files = [p for folder in folders for p in (Path(folder) / group).glob("*.yaml")]
    return sorted({p.stem for p in files if not p.stem.startswith("_")})


def config_groups(overrides: Sequence[str] = ()) -> dict[str, list[str]]:
    """Every config group users choose from (not Hydra's own ``hydra/...``) with its options, from ``conf/``
    and the folders of a ``hydra.searchpath`` override: what ``--help`` lists."""
    folders = [CONFIG_DIR, *(search_path(overrides) or [])]
    groups = {
        str(d.relative_to(folder))
        for folder in folders
        for d in folder.rglob("*")
        if d.is_dir() and any(d.glob("*.yaml"))
    }
    return {g: group_options(g, folders) for g in sorted(groups) if g.split("/")[0] != "hydra"}


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
    of the wrong type, a malformed override or sweep; and, for a single run, what :func:`validate` refuses.
    """
    flags = [arg for arg in args if arg.startswith("-")]
    if any(flag not in MULTIRUN_FLAGS for flag in flags):
        return None
    overrides = [arg for arg in args if not arg.startswith("-")]
    from hydra.errors import HydraException

    try:
        variants = one_at_a_time(overrides) if flags else [overrides]
    except HydraException as error:  # the override and why: Hydra's first two lines
        raise ConfigError(": ".join(str(error).splitlines()[:2])) from None
    composed = None
    for variant in variants:
        try:
            cfg = compose_train(variant, return_hydra_config=True)
            resolve(cfg, multirun=bool(flags))
        except Exception as error:  # Hydra's and OmegaConf's errors, and the odd assertion deep inside Hydra
            # The override to name: the one Hydra's message quotes, else the one whose removal lets the rest compose.
            quoted = [o for o in variant if f"override {o}" in str(error) or f"'{o}'" in str(error)]
            culprit = quoted[0] if len(quoted) == 1 else None
            culprit = culprit or next((o for o in variant if not _compose_error([x for x in variant if x != o])), None)
            lines = [f"{culprit}:" if culprit else "", (str(error).splitlines() or [type(error).__name__])[0]]
            if error.__cause__ is not None:
                lines.append(str(error.__cause__).splitlines()[0])
            hint = "; add a new key with +key=value, list the keys with --cfg job"
            raise ConfigError(" ".join(lines).strip() + (hint if "not in struct" in lines[-1] else "")) from None
        check_override_values(variant, cfg)
        if not flags:  # a single run's values too, before Hydra composes again and makes the run directory; a
            with as_run(cfg) as run:  # sweep's jobs check their own (one failed job must not stop the others)
                validate(run)
        composed = composed or cfg
    return composed


# An interpolation that copies another key (``${a.b}``, ``${.b}``, ``${oc.select:a.b,default}``), or Hydra's
# ``${hydra:runtime.output_dir}``: a key whose value is one is derived, and set through the key it copies.
_COPY = re.compile(r"^\$\{(?:oc\.select:|(hydra):)?(\.*)([\w.]+)(?:,[^}]*)?\}$")


def derived_from(cfg: DictConfig, key: str) -> str | None:
    """The key that ``key``'s value is copied from, if it is a copy (see ``_COPY``), else ``None``."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent or not OmegaConf.is_interpolation(parent, leaf):
        return None
    raw = str(OmegaConf.to_container(parent, resolve=False)[leaf])
    match = _COPY.match(raw)
    if match is None:
        return None
    hydra, dots, source = match.groups()
    if hydra:
        return f"hydra.{source}"
    if dots:  # relative: one dot is the key's own node, each further dot one level up
        base = key.split(".")[: -len(dots)]
        return ".".join([*base, source])
    return source


def group_choices(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that choose an option of a config group (``model=attention``, ``hydra/launcher=joblib``),
    and ``hydra.searchpath``, which says where options are found (a user's ``conf/``)."""
    key = lambda o: o.partition("=")[0].lstrip("+~")  # noqa: E731
    chooses = lambda k: "/" in k or k == "hydra.searchpath" or (CONFIG_DIR / k).is_dir()  # noqa: E731
    return tuple(o for o in overrides if chooses(key(o)))


@functools.lru_cache(maxsize=64)
def choices_config(choices: tuple[str, ...]) -> dict[str, Any]:
    """The config these group choices compose, unresolved, as a plain container (cached: it is the same for
    every combination of a sweep, and for the forked runs of the bad-input corpus test)."""
    return OmegaConf.to_container(compose_train(choices), resolve=False)


def check_override_values(overrides: Sequence[str], cfg: DictConfig) -> None:
    """What types alone let through: a bool key set to anything but ``true``/``false`` (OmegaConf reads ``1``
    as true), and an override of a derived key (one whose value copies another key, such as
    ``model.length: ${data.length}``), which would part it from the key it must equal."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base = None
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if "." not in key or key.startswith("hydra.") or override.is_delete():
            continue
        if isinstance(OmegaConf.select(cfg, key), bool) and not isinstance(override.value(), bool):
            raise ConfigError(f"{override.input_line} is not allowed: {key} is true or false")
        if override.is_add():
            continue
        if base is None:  # the config as the group choices make it, before any key was set
            base = OmegaConf.create(choices_config(group_choices(overrides)))
        if (source := derived_from(base, key)) is not None:
            where = "hydra.run.dir (hydra.sweep.dir with -m)" if source.startswith("hydra.") else source
            raise ConfigError(
                f"{override.input_line} is not allowed: {key} is set from {source} and cannot be set on its own; "
                f"set {where} instead"
            )


@contextlib.contextmanager
def as_run(cfg: DictConfig, multirun: bool = False) -> Iterator[DictConfig]:
    """A copy of the composed config (with its ``hydra`` node) as the run will see it, ``hydra.runtime.output_dir``
    set to the run or sweep directory and Hydra's runtime config set to it within the block (``${hydra:...}``
    interpolations resolve, and the group choices are the run's)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(OmegaConf.select(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir"))
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = previous


def resolve(cfg: DictConfig, multirun: bool = False) -> None:
    """Resolve every interpolation of the composed config (with its ``hydra`` node) as the run will
    (:func:`as_run`): an interpolated value of the wrong type (``seed=abc`` read by a typed ``data.seed``) fails
    here, with the key named."""
    with as_run(cfg, multirun) as run:
        for key in run:
            if key != "hydra" and isinstance(value := run[key], DictConfig | ListConfig):
                OmegaConf.to_container(value, resolve=True)


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
