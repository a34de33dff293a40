"""Schema of ``conf/train.yaml``'s own keys; each group is typed by its own schema."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

MAX_SEED = 2**32 - 1  # Lightning's seed_everything range (numpy's); outside it Lightning silently uses 0


@dataclass
class Train:
    data: Any = None
    model: Any = None
    encoding: Any = None
    optimizer: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None
    paths: Any = None
    seed: int = MISSING
    replicas: int = MISSING
    ckpt_path: Optional[str] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    threads: Optional[int] = MISSING  # noqa: UP045
    force: bool = MISSING

    @classmethod
    def check_config(cls, config: Any) -> None:
        from posenc_exp.checks import require_int

        require_int("seed", config.seed, 0, MAX_SEED)
        require_int("replicas", config.replicas, 1, min(4096, MAX_SEED - config.seed + 1))  # seeds seed..seed+K-1
        if config.threads is not None:
            cores = os.cpu_count() or 1
            require_int("threads", config.threads, 1, cores, f"an integer from 1 to the {cores} cores, or null")


SCHEMAS = {"train": Train}
