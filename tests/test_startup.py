"""``--help``, ``--cfg`` and every one-line config error need Hydra and the configs, not torch or Lightning
(issue 10, item 7): the real CLI, run with Python's import profile (``PYTHONPROFILEIMPORTTIME=1``, the
environment form of ``-X importtime``, which lists every module the process imports), never imports them.
The checks read the components' torch-free specs (``posenc_exp.schemas``); these tests also hold the specs
to the classes they stand for, and a class that carries its own ``check_config`` to being checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from posenc_exp import CONFIG_DIR
from posenc_exp.config import compose_train, validate
from posenc_exp.data import RandomWindows
from posenc_exp.errors import ConfigError
from posenc_exp.models import FeedForward
from posenc_exp.schemas import spec_of

HEAVY = ("torch", "lightning")


def imported_modules(stderr: str) -> set[str]:
    """The modules of an import profile (``import time: self | cumulative | module``, indented by depth)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def run_profiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, set[str]]:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", *args, check=False, timeout=120)
    return result, imported_modules(result.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["--help"], ["--cfg", "job"], ["--cfg", "hydra"], ["model=attention", "encoding=rope", "--cfg", "job"]],
    ids=lambda args: " ".join(args),
)
def test_help_and_cfg_import_neither_torch_nor_lightning(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, modules = run_profiled(tmp_path, monkeypatch, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hydra" in modules  # the profile is there
    assert not modules & set(HEAVY), f"{' '.join(args)} imported {sorted(modules & set(HEAVY))}"
    if args == ["--help"]:  # the groups users choose from, with their options; not the schemas, not the bases
        groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
        assert f"\ndata: {', '.join(options('data'))}\n" in groups and "\nencoding: " in groups
        assert "schema" not in groups and "_tokens" not in groups
        assert "_target_: posenc_exp.models.FeedForward" in result.stdout  # the composed config
    else:
        assert "_target_" in result.stdout


# One of each kind of config error, each refused in one line before anything is built.
ERRORS = {
    "type": (["seed=abc"], "seed"),
    "range": (["optimizer.lr=-1"], "optimizer.lr=-1.0 is not allowed"),
    "range, trainer": (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 is not allowed"),
    "range, encoding": (["model=attention", "encoding=rope", "encoding.base=1"], "encoding.base=1.0 is not allowed"),
    "range, task": (["data=lag", "model=attention", "data.lag=99"], "data.lag=99 is not allowed"),
    "range, callback": (["callbacks.attention_patterns.head_pixels=3"], "callbacks.attention_patterns.head_pixels=3"),
    "relation, in a component": (["model=attention", "model.n_heads=3"], "model.n_heads=3 does not divide"),
    "relation, between components": (["data=copy"], "model=feedforward reads windows of scalars"),
    "relation, lengths": (
        ["data=copy", "model=attention", "model.causal=true", "data.max_positions=3"],
        "data.max_positions=3 is shorter than the longest evaluation input",
    ),
    "renamed key": (["data.context_size=8"], "data.context_size was renamed to data.length"),
    "unknown option": (["encoding=bogus"], "encoding=bogus is not an option of 'encoding'"),
    "range, a 2022-2024 encoding": (["model=attention", "encoding=kerple", "encoding.eps=0"], "encoding.eps=0.0"),
    "range, rope scaling": (["model=attention", "encoding=rope", "encoding.scaling=bogus"], "encoding.scaling=bogus"),
    "range, a wrapped encoding": (
        ["model=attention", "encoding=randomized", "encoding@encoding.base=rope", "encoding.base.base=0.5"],
        "encoding.base.base=0.5 is not allowed",
    ),
    "relation, format and causality": (
        ["data=parity", "data.format=encoder", "model=attention", "model.causal=true"],
        "data=parity with data.format=encoder reads the answer from output positions",
    ),
    "range, a Chomsky task": (["data=parity", "data.vocab_size=7", "model=attention"], "data.vocab_size=7"),
    "range, a new callback key": (["callbacks.last_checkpoint.every_n_epochs=0"], "every_n_epochs=0"),
    "unknown key": (["model.n_hiden=8"], "model.n_hiden"),
    "unknown class": (["optimizer._target_=abc"], "optimizer._target_=abc is not allowed"),
    "memory": (["model.n_hidden=1000000000000"], "GiB"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ERRORS))
def test_config_errors_are_one_line_without_torch_or_lightning(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, message = ERRORS[case]
    result, modules = run_profiled(tmp_path, monkeypatch, *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    assert not modules & set(HEAVY), f"{case}: {' '.join(args)} imported {sorted(modules & set(HEAVY))}"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize(
    "choices",
    [[f"data={d}", "model=attention"] for d in options("data")]
    + [["model=attention", f"encoding={e}"] for e in options("encoding")]
    + [[f"model={m}"] for m in options("model")],
    ids=lambda choices: choices[0],
)
def test_each_spec_says_what_its_class_says(choices: list[str]) -> None:
    """What the checks read from a built-in component's torch-free spec is what its class says at run time:
    a task's ``task`` and ``longest_input``, an encoding's ``acts_on``, the feed-forward model's
    ``fixed_window``; and the spec, not the class, carries the checks (one place per check)."""
    cfg = compose_train(choices)
    group = choices[0].partition("=")[0]
    node = cfg[group]
    spec, cls = spec_of(node, group), get_class(node._target_)
    assert spec is not cls and "torch" not in spec.__module__
    assert hasattr(spec, "check_config")
    if group == "data":
        assert spec.task == cls.task
        if "eval_factors" in node:
            assert spec.longest_input(8, [1.0, 2.0]) == cls.longest_input(8, [1.0, 2.0])
    elif group == "encoding":
        assert spec.acts_on == cls.acts_on
    else:
        assert spec.fixed_window == issubclass(cls, FeedForward)
    carriers = [c for c in cls.__mro__ if "check_config" in vars(c)]  # the class and its bases that check
    assert all(c.__module__.startswith("posenc_exp.schemas.") for c in carriers), carriers


class StrictWindows(RandomWindows):
    """A task outside the schemas' specs that carries checks of its own on its class, as a user's may."""

    @classmethod
    def check_config(cls, data: Any) -> None:
        super().check_config(data)
        if data.length % 2:
            raise ConfigError(f"data.length={data.length} is not allowed: expected an even length")


def test_a_class_with_its_own_check_config_is_still_checked() -> None:
    """The fallback of ``schemas.spec_of``: a ``_target_`` no spec lists is imported and its class's
    ``check_config`` applies, with the checks it inherits from its base's spec."""
    cfg = compose_train(["data.length=9", "data.xlen=40"])
    with open_dict(cfg):
        cfg.data._target_ = f"{__name__}.StrictWindows"
    assert spec_of(cfg.data, "data") is StrictWindows
    with pytest.raises(ConfigError, match=r"^data.length=9 is not allowed: expected an even length$"):
        validate(cfg)
    cfg.data.batch_size = 0
    with pytest.raises(ConfigError, match=r"^data.batch_size=0 is not allowed"):  # the base spec's check
        validate(cfg)
    cfg.data = OmegaConf.merge(cfg.data, {"batch_size": 4, "length": 8})
    validate(cfg)
