"""Typed schemas of the config groups: one dataclass per option, registered in Hydra's ConfigStore.

Hydra merges an option's YAML onto its schema (the YAML names it first in its defaults list, e.g.
``- /schema/model/attention@_here_``), so OmegaConf itself refuses a value of the wrong type with the key
named: a string or a float for an int, anything but a bool for a bool, ``null`` where a value is required.
The YAML files stay where the values live and where users read them: every field here is ``MISSING``
unless the option leaves it out. Ranges and relations are not here: each component checks its own
(``check_config``; see ``posenc_exp.config.check_components``). An option without a schema (a user's YAML
on ``hydra.searchpath``) composes untyped and its component's checks still apply.

Torch-free on purpose: ``--help``, ``--cfg`` and type errors need Hydra and these, not torch or Lightning.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from posenc_exp.schemas import callbacks, data, encoding, logger, model, optimizer, train, trainer

GROUP = "schema"  # schemas live in conf groups schema/<group>, out of the way of the options users choose


def register(store: ConfigStore | None = None) -> None:
    """Store every schema as ``schema/<group>/<option>`` (callbacks: ``schema/callbacks/<callback>``), and
    ``conf/train.yaml``'s own as ``schema/train``."""
    store = store or ConfigStore.instance()
    for module in (data, model, encoding, optimizer, trainer, callbacks, logger):
        for option, node in module.SCHEMAS.items():
            store.store(group=f"{GROUP}/{module.__name__.rsplit('.', 1)[1]}", name=option, node=node)
    store.store(group=GROUP, name="train", node=train.Train)


register()
