"""Typed schemas of the config groups: one dataclass per option, registered in Hydra's ConfigStore.

Hydra merges an option's YAML onto its schema (the YAML names it first in its defaults list, e.g.
``- /schema/model/attention@_here_``), so OmegaConf itself refuses a value of the wrong type with the key
named: a string or a float for an int, anything but a bool for a bool, ``null`` where a value is required.
The YAML files stay where the values live and where users read them: every field here is ``MISSING``
unless the option leaves it out.

Each schema also carries its component's range checks, ``check_config(config)`` (with the helpers of
``posenc_exp.checks``), and what the relations between components read (a task's ``task`` and
``longest_input``, an encoding's ``acts_on``): ``posenc_exp.config`` finds them through :func:`spec` or the
node's schema (:func:`spec_of`). Where a component of this package needs them at run time
too, its class inherits them from the same torch-free class here (one place per check). An option without
a schema (a user's YAML on ``hydra.searchpath``) composes untyped, and the ``check_config`` of its class,
imported, still applies.

Torch-free on purpose: ``--help``, ``--cfg`` and every one-line config error need Hydra and these, not
torch or Lightning.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from posenc_exp.errors import ConfigError
from posenc_exp.schemas import callbacks, data, encoding, logger, model, optimizer, train, trainer

MODULES = (data, model, encoding, optimizer, trainer, callbacks, logger)
GROUP = "schema"  # schemas live in conf groups schema/<group>, out of the way of the options users choose


def register(store: ConfigStore | None = None) -> None:
    """Store every schema as ``schema/<group>/<option>`` (callbacks: ``schema/callbacks/<callback>``), and
    ``conf/train.yaml``'s own as ``schema/train``."""
    store = store or ConfigStore.instance()
    for module in MODULES:
        for option, node in module.SCHEMAS.items():
            store.store(group=f"{GROUP}/{module.__name__.rsplit('.', 1)[1]}", name=option, node=node)
    store.store(group=GROUP, name="train", node=train.Train)


# The components whose spec is not (only) their option's schema: a schema that several targets share, whose
# checks differ (data=recall's and data=copy's), or a target that a resolver looks up by its name alone
# (``${posenc.max_positions:${._target_},...}``). ``<module>.TARGETS``: ``{"package.Class": spec}``.
TARGETS: dict[str, type] = {t: s for module in MODULES for t, s in getattr(module, "TARGETS", {}).items()}


def spec(target: str) -> type | None:
    """The torch-free spec of the class ``target`` names, where a schema module lists it (``TARGETS``)."""
    return TARGETS.get(target)


def is_schema(cls: type) -> bool:
    """Whether ``cls`` is one of these schemas (not, say, a user's dataclass)."""
    return cls.__module__.startswith(f"{__name__}.")


def check_target(node: DictConfig, key: str) -> None:
    """``node._target_`` names a class, ``package.module.Class``, in a module that exists: found on the import
    path without importing it (nor torch with it); where the module is imported already, the class is
    looked up too. A class missing from a module not yet imported is reported when it is built."""
    target = str(node._target_)
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):  # the longest module prefix, with at least the class after it
        module = ".".join(parts[:i])
        if module_spec(module) is None:
            continue
        if module not in sys.modules:
            return  # it exists; the class in it is looked up when it is built
        if class_in(sys.modules[module], parts[i:]) is not None:
            return
        break
    raise not_a_class(key, target)


def class_in(module: Any, names: list[str]) -> type | None:
    """The class ``module.<names[0]>.<names[1]>...``, or ``None`` where there is none."""
    found = module
    for name in names:
        found = getattr(found, name, None)
    return found if isinstance(found, type) else None


def not_a_class(key: str, target: str) -> ConfigError:
    return ConfigError(f"{key}._target_={target} is not allowed: expected an importable class, package.module.Class")


def module_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of module ``name`` if it exists, found without importing it or the packages above it (a
    package that is not imported yet is searched through its own spec's locations)."""
    if name in sys.modules:
        return getattr(sys.modules[name], "__spec__", None) or importlib.machinery.ModuleSpec(name, None)
    parent, _, _ = name.rpartition(".")
    try:
        if not parent:
            return importlib.util.find_spec(name)  # a top-level name: nothing is imported to find it
        locations = getattr(module_spec(parent), "submodule_search_locations", None)
        return importlib.machinery.PathFinder.find_spec(name, list(locations)) if locations else None
    except (ImportError, ValueError):
        return None


def spec_of(node: DictConfig, key: str, needs: str = "check_config") -> type:
    """What the checks read about the component of config ``node`` (at ``key``): its ``check_config`` and
    the class attributes the relations between components need (``needs``: a task's ``task``, an encoding's
    ``acts_on``). Torch-free where it can be: the spec a schema module lists for the target
    (``posenc_exp.schemas.spec``), else the node's own schema if it has ``needs``. Only a component without
    one (an extension on ``hydra.searchpath``, docs/extending.md, or a class that still carries its own
    ``check_config``) is imported, and its class is the spec."""
    listed = spec(str(node._target_))
    if listed is not None:
        return listed
    schema = OmegaConf.get_type(node)
    if schema is not None and is_schema(schema) and hasattr(schema, needs):
        return schema
    return target_class(node, key)


def target_class(node: DictConfig, key: str) -> type:
    """The class ``node._target_`` names (``package.module.Class``), or a :class:`ConfigError` naming
    ``<key>._target_``. Imported here rather than by ``hydra.utils.get_class``, which logs every failure over
    several lines before raising."""
    target = str(node._target_)
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        if (found := class_in(module, parts[i:])) is not None:
            return found
        break
    raise not_a_class(key, target)


register()
