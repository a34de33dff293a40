"""Every key of every config group, set to each of ``0, -1, 1000000000, 2.5, abc, null, [], nan, inf``, and the
combinations of the groups' options, through the real CLI entry point (``posenc_exp.train.main`` with
``sys.argv`` set), one forked child per case from this process (which has imported everything once).

Each case either is refused (exit code 2, exactly one ``error:`` line naming the key, or the key that copies
it, no traceback, no run directory, and no event file, checkpoint or ``metrics.json`` anywhere under the case's
directory, its working directory), or
runs (exit code 0, ``metrics.json`` in the run directory), or diverges as a legitimate value may (exit code 1,
exactly one ``error:`` line about the non-finite loss). Legitimate values run with tiny settings (one epoch,
small data). The counts are printed (``pytest -s``) and written to ``corpus_counts.json`` in the test's
temporary directory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import fork_cli
from omegaconf import DictConfig, OmegaConf

from posenc_exp.config import choices_config, compose_train, derived_from, group_choices
from posenc_exp.data.text import stdlib_dir

pytestmark = pytest.mark.slow

VALUES = ["0", "-1", "1000000000", "2.5", "abc", "null", "[]", "nan", "inf"]
GROUPS = ("data", "model", "encoding", "optimizer", "trainer", "callbacks", "logger", "paths")
ROOT_KEYS = ("seed", "replicas", "ckpt_path", "threads", "force")
TOKEN_TASKS = ("copy", "reverse", "sort", "recall")
CHOMSKY_TASKS = (
    *("even_pairs", "parity", "cycle_navigation", "modular_arithmetic", "reverse_string", "stack_manipulation"),
    *("modular_arithmetic_brackets", "duplicate_string", "missing_duplicate", "odds_first", "binary_addition"),
    "bucket_sort",
)
ATTENTION = ["model=attention", "model.causal=true"]
# The group choices under which each option's keys are tried (a valid run otherwise).
CONTEXTS = [
    [],  # data=random, model=feedforward, encoding=learned, and the default optimizer, trainer, callbacks, logger
    *[[f"data={task}", *ATTENTION] for task in ("ar", "lag", *TOKEN_TASKS, "text")],
    ["model=attention"],
    *[[*ATTENTION, f"encoding={e}"] for e in ("none", "sinusoidal", "rope", "alibi", "t5")],
    *[[*ATTENTION, f"encoding={e}"] for e in ("xpos", "kerple", "fire", "cope", "randomized")],
    [*ATTENTION, "encoding=randomized", "encoding@encoding.base=learned"],
    [*ATTENTION, "callbacks=diagnostics"],
    ["data=parity", "model=attention"],  # the Chomsky tasks' keys (data.format), encoder format
]
# Tiny settings for the runs that must run: one epoch, little data, no progress bar. The text runs read a small
# real corpus, the standard library's json package (its decoder.py validates), so that a legitimate
# data.max_bytes=1000000000 reads 50 kB instead of the whole standard library.
TINY = {
    "trainer.max_epochs": "1",
    "callbacks.progress_bar": "null",
    "data.xlen": "40",
    "data.n_train": "64",
    "data.n_val": "16",
    "data.eval_factors": "[1.0,2.0]",
    "data.max_bytes": "20000",
    "data.val_bytes": "4096",
    "data.corpus": f"{stdlib_dir()}/json/*.py",
}
RESULT_FILES = ("events.out.tfevents.*", "*.ckpt", "metrics.json")


@dataclass
class Case:
    args: list[str]
    key: str | None  # the key set to a bad value, None for a combination of options
    names: tuple[str, ...] = ()  # what the error line may name: the key, or a key whose value copies it


def leaves(node: dict, prefix: str) -> Iterator[str]:
    """Every leaf key of a config as a plain (unresolved) container; lists count as leaves."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}"


def tiny(choices: list[str], skip: str = "") -> list[str]:
    """The tiny settings for a run with these group choices, leaving out ``skip`` (the key under test)."""
    data = next((c.partition("=")[2] for c in choices if c.startswith("data=")), "random")
    sizes = {
        "random": ["data.xlen"],
        "text": ["data.max_bytes", "data.val_bytes", "data.eval_factors", "data.corpus"],
    }.get(data, ["data.n_train", "data.n_val", "data.eval_factors"])
    if any(c.startswith("experiment=") for c in choices):
        sizes = [k for k in sizes if k != "data.eval_factors"]  # the presets choose their own
    return [f"{k}={TINY[k]}" for k in ("trainer.max_epochs", "callbacks.progress_bar", *sizes) if k != skip]


def copies_of(cfg: DictConfig, key: str, keys: list[str]) -> tuple[str, ...]:
    """``key`` and the keys whose value copies it (``model.length: ${data.length}``)."""
    return (key, *(k for k in keys if derived_from(cfg, k) == key))


def single_key_cases() -> list[Case]:
    """Each key of each group (the first time an option brings it, in ``CONTEXTS`` order) with each value."""
    cases, seen = [], set()
    for choices in CONTEXTS:
        cfg = compose_train(choices)
        plain = OmegaConf.to_container(cfg, resolve=False)
        keys = [k for group in GROUPS if plain.get(group) is not None for k in leaves(plain[group], group)]
        keys += list(ROOT_KEYS)
        for key in (k for k in keys if k not in seen):
            seen.add(key)
            for value in VALUES:
                args = [*choices, *tiny(choices, skip=key), f"{key}={value}"]
                cases.append(Case(args, key, copies_of(cfg, key, keys)))
    return cases


def combination_cases() -> list[Case]:
    """Every data x model x encoding option (causal and not, for the attention model), the diagnostics with each
    model, every experiment preset, and a GPU trainer where there is none."""
    combos = [
        [f"data={d}", f"model={m}", f"encoding={e}", *causal]
        for d in ("random", "ar", "lag", *TOKEN_TASKS, "text")
        for m, causals in (("feedforward", [[]]), ("attention", [[], ["model.causal=true"]]))
        for causal in causals
        for e in ("none", "learned", "sinusoidal", "rope", "alibi", "t5")
    ]
    combos += [["callbacks=diagnostics", f"model={m}"] for m in ("feedforward", "attention")]
    combos += [[f"experiment={x}"] for x in ("toy", "depth_study", "depth_overfit", "length_generalization", "chomsky")]
    combos += [[f"data={d}", "model=attention", f"data.format={f}", f"model.causal={c}"]  # the Chomsky tasks
               for d in CHOMSKY_TASKS for f, c in (("encoder", "false"), ("causal", "true"))]  # fmt: skip
    combos += [["data=parity", "model=attention", "data.format=causal"], ["data=parity", *ATTENTION]]  # mismatches
    if not torch.cuda.is_available():
        combos.append(["trainer=ddp"])
    return [Case([*c, *tiny(c)], None) for c in combos]


def run_all(cases: list[Case], root: Path) -> list[tuple[int, str]]:
    """Each case's CLI forked from this process in its own directory ``root/case<i>`` (cwd and run dir);
    ``(exit code, stderr)`` per case."""
    for case in cases:  # compose each case's base config once here, not once per child
        choices_config(group_choices(case.args))
    workdirs = [root / f"case{index}" for index in range(len(cases))]
    argvs = [[*case.args, f"hydra.run.dir={workdir / 'run'}"] for case, workdir in zip(cases, workdirs, strict=True)]
    return fork_cli(argvs, workdirs)


def outcome(case: Case, code: int, stderr: str, workdir: Path) -> str:
    """``refused``, ``ran`` or ``diverged``; anything else is a string starting with ``BAD``."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if "Traceback" in stderr or "HYDRA_FULL_ERROR" in stderr:
        return "BAD traceback"
    results = [p for pattern in RESULT_FILES for p in workdir.rglob(pattern)]
    if code == 0:
        ok = not errors and (workdir / "run" / "metrics.json").is_file()
        return "ran" if ok else f"BAD exit 0 with errors={errors}"
    if len(errors) != 1:
        return f"BAD {len(errors)} error lines, exit {code}"
    if code == 1 and "non-finite" in errors[0]:
        return "diverged"
    if code != 2:
        return f"BAD exit {code}: {errors[0]}"
    if results or (workdir / "run").exists():
        return f"BAD refused but wrote {[str(p.relative_to(workdir)) for p in results][:3] or 'its run directory'}"
    if case.key is not None and not any(name in errors[0] for name in case.names):
        return f"BAD the line does not name {case.key}: {errors[0]}"
    return "refused"


def test_every_key_and_combination_is_refused_in_one_line_or_runs(tmp_path: Path) -> None:
    cases = single_key_cases() + combination_cases()
    results = run_all(cases, tmp_path)
    outcomes = [
        outcome(case, code, err, tmp_path / f"case{i}")
        for i, (case, (code, err)) in enumerate(zip(cases, results, strict=True))
    ]
    counts = Counter(o if not o.startswith("BAD") else "bad" for o in outcomes)
    singles = sum(case.key is not None for case in cases)
    summary = {"cases": len(cases), "single_key": singles, "combinations": len(cases) - singles, **counts}
    (tmp_path / "corpus_counts.json").write_text(json.dumps(summary, indent=2))
    print(f"\nbad-input corpus: {summary}")
    bad = [f"{' '.join(case.args)} -> {o}" for case, o in zip(cases, outcomes, strict=True) if o.startswith("BAD")]
    assert not bad, f"{len(bad)} of {len(cases)} cases broke the contract:\n" + "\n".join(bad[:40])
    assert counts["refused"] > 0 and counts["ran"] > 0
