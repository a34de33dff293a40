"""The Chomsky-hierarchy tasks (Delétang et al., ICLR 2023): each generator against the task's definition,
computed per example in plain Python; both formats; seeding; the per-batch training lengths; the score in a
real run's metrics.json; the format/causality check; replicas equal to their single runs."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import FAST, in_parallel, read_metrics, run_cli, train_run

from posenc_exp.data.chomsky import ChomskyTask
from posenc_exp.data.tokens import IGNORE, PAD, SEP

TASKS = {
    "even_pairs": "EvenPairs",
    "parity": "Parity",
    "cycle_navigation": "CycleNavigation",
    "modular_arithmetic": "ModularArithmetic",
    "reverse_string": "ReverseString",
    "stack_manipulation": "StackManipulation",
    "modular_arithmetic_brackets": "ModularArithmeticBrackets",
    "duplicate_string": "DuplicateString",
    "missing_duplicate": "MissingDuplicate",
    "odds_first": "OddsFirst",
    "binary_addition": "BinaryAddition",
    "bucket_sort": "BucketSort",
}


def make(name: str, format: str = "encoder", length: int = 8, seed: int = 0, **keys: Any) -> ChomskyTask:
    import posenc_exp.data as data

    cls = getattr(data, TASKS[name])
    settings = dict(length=length, eval_factors=[1.0, 2.0], n_train=256, n_val=8, batch_size=16, chunk_steps=4)
    settings.update(keys)
    return cls(format=format, vocab_size=2 + len(cls.alphabet), seed=seed, max_positions=1000, **settings)


def little_endian(bits: list[str]) -> int:
    return sum(int(b) << i for i, b in enumerate(bits))


def expected(name: str, s: list[str]) -> list[str]:
    """The answer to the string ``s`` (symbol names) by the task's definition, in plain Python; the answers
    that end in ``END`` are returned up to it."""
    if name == "even_pairs":
        pairs = sum(1 for a, b in itertools.pairwise(s) if a != b)
        return ["1" if pairs % 2 == 0 else "0"]
    if name == "parity":
        return [str(s.count("1") % 2)]
    if name == "cycle_navigation":
        return [str(sum({"left": -1, "stay": 0, "right": 1}[a] for a in s) % 5)]
    if name in ("modular_arithmetic", "modular_arithmetic_brackets"):
        return [str(eval("".join(s)) % 5)]  # Python's precedence: * before + and -, unary minus
    if name == "reverse_string":
        return s[::-1]
    if name == "stack_manipulation":
        stack = [a for a in s if a in "01"]
        assert s[: len(stack)] == stack and 1 <= len(stack) <= max(1, len(s) - 1)
        for action in s[len(stack) :]:
            if action == "POP":
                stack = stack[:-1]
            else:
                stack.append(action[-1])
        return [*stack[::-1], "END"]
    if name == "duplicate_string":
        return s + s
    if name == "missing_duplicate":
        if len(s) == 1:
            return ["1"]
        w = s[: len(s) // 2 * 2]
        half, i = len(w) // 2, w.index("MISSING")
        assert s[len(w) :] == ["EMPTY"] * (len(s) % 2) and w.count("MISSING") == 1
        other = w[i + half] if i < half else w[i - half]
        assert [a for j, a in enumerate(w[:half]) if j != i % half] == [
            a for j, a in enumerate(w[half:]) if j != i % half
        ]
        return [other]
    if name == "odds_first":
        return s[0::2] + s[1::2]
    if name == "binary_addition":
        if "+" not in s:
            value = little_endian(s)
        else:
            plus = s.index("+")
            a, b = s[:plus], s[plus + 1 :]
            assert a and b and little_endian(a) > 0 and little_endian(b) > 0
            value = little_endian(a) + little_endian(b)
        return [*(str((value >> i) & 1) for i in range(max(1, value.bit_length()))), "END"]
    if name == "bucket_sort":
        return sorted(s)
    raise AssertionError(name)


@pytest.mark.parametrize("name", TASKS)
def test_each_task_answers_by_its_definition_in_both_formats(name: str) -> None:
    tasks = {f: make(name, f) for f in ("encoder", "causal")}
    cls = type(tasks["encoder"])
    for n in (1, 2, 3, 4, 5, 9, 16):
        x = {f: t.sample(12, n, torch.Generator().manual_seed(n)) for f, t in tasks.items()}
        enc_x, enc_y = x["encoder"]
        cau_x, cau_y = x["causal"]
        answer_length = cls.answer_length(n)
        width = enc_x.shape[1] - answer_length
        assert width == (n - 1 + n % 2 if name == "modular_arithmetic" else n)  # its strings have odd length
        assert enc_x.shape[1] <= cls.input_length(n) and cau_x.shape == enc_x.shape
        torch.testing.assert_close(cau_y, enc_y)  # same string (same generator), same targets
        for row in range(12):
            string = enc_x[row, :width].tolist()
            assert enc_x[row, width:].tolist() == [SEP] * answer_length
            assert enc_y[row, :width].tolist() == [IGNORE] * width
            symbols = [cls.alphabet[t - 2] for t in string]
            answer = [a for a in enc_y[row, width:].tolist() if a != IGNORE]
            assert [cls.alphabet[t - 2] for t in answer] == expected(name, symbols), (n, symbols)
            scored = enc_y[row, width:].tolist()
            assert scored[: len(answer)] == answer  # unscored positions only after the answer
            # causal: string SEP answer[:-1], the unscored answer positions fed as PAD
            fed = [PAD if a == IGNORE else a for a in scored]
            assert cau_x[row].tolist() == [*string, SEP, *fed[:-1]]


def test_the_generators_draw_every_answer_and_are_seeded() -> None:
    for name in TASKS:
        first, again, other = (make(name, seed=s) for s in (3, 3, 4))
        for task in (first, again, other):
            task.setup()
        x, y = first.splits["val@16"]
        torch.testing.assert_close(again.splits["val@16"][0], x)
        assert not torch.equal(other.splits["val@16"][0], x)
        assert len(y[y != IGNORE].unique()) >= 2, name  # not a constant answer


def chunks(task: ChomskyTask, seeds: list[int] | None = None) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    if seeds:
        task.replicate(seeds)
    task.setup()
    return list(task.train_dataloader())


def test_training_batches_have_one_length_each_drawn_from_one_to_the_training_length() -> None:
    task = make("reverse_string", length=10, n_train=64 * 16, batch_size=16, chunk_steps=5)
    task.setup()
    loader = task.train_dataloader()
    loaded = list(loader)
    assert len(loaded) == len(task.train_dataloader()) == 13  # 64 steps in chunks of 5
    widths = [x.shape[-1] for xs, _ in loaded for x in xs]
    assert len(widths) == 64
    lengths = [w // 2 for w in widths]  # reverse_string: n input tokens, n answer tokens
    assert all(w % 2 == 0 for w in widths) and set(lengths) == set(range(1, 11))  # every length drawn
    for xs, ys in loaded:
        for x, y in zip(xs, ys, strict=True):
            assert x.shape == y.shape == (1, 16, x.shape[-1])
            n = x.shape[-1] // 2
            assert (x[..., n:] == SEP).all() and (y[..., :n] == IGNORE).all() and (y[..., n:] != IGNORE).all()
    # Fresh batches: the next epoch draws other lengths and other strings.
    again = list(loader)
    assert [x.shape[-1] for xs, _ in again for x in xs] != widths


def test_replicas_share_the_lengths_and_each_draws_its_own_single_runs_data() -> None:
    settings = dict(length=12, n_train=32 * 8, batch_size=8, chunk_steps=3)
    stacked = chunks(make("duplicate_string", seed=5, **settings), seeds=[5, 6])
    single = {s: chunks(make("duplicate_string", seed=s, **settings)) for s in (5, 6)}
    for k, seed in enumerate((5, 6)):
        for (xs, ys), (sx, sy) in zip(stacked, single[seed], strict=True):
            for x, y, a, b in zip(xs, ys, sx, sy, strict=True):
                torch.testing.assert_close(x[k], a[0])
                torch.testing.assert_close(y[k], b[0])
    assert not torch.equal(stacked[0][0][0][0], stacked[0][0][0][1])  # the replicas' strings differ


def test_the_experiment_scales_evaluation_to_12_5_times_the_training_length() -> None:
    from posenc_exp.config import compose_train

    cfg = compose_train(["experiment=chomsky", "data=duplicate_string", "encoding=rope"])
    from posenc_exp.data.lengths import eval_lengths

    lengths = eval_lengths(cfg.data.length, cfg.data.eval_factors)
    assert lengths[0] == cfg.data.length and lengths[1] == cfg.data.length + 1
    assert lengths[-1] == round(12.5 * cfg.data.length)
    assert cfg.data.max_positions == 3 * lengths[-1]  # duplicate_string: n input and 2n answer positions
    assert cfg.model.causal is False and cfg.data.format == "encoder"


TINY = [
    "model=attention",
    "model.d_model=16",
    "model.n_heads=2",
    "model.depth=1",
    "data.length=6",
    "data.eval_factors=[1.0,2.0,3.0]",
    "data.n_train=256",
    "data.n_val=32",
    "data.batch_size=16",
    "trainer.max_epochs=1",
]


@pytest.mark.slow
def test_the_score_is_the_accuracy_beyond_the_training_length_in_each_format(tmp_path: Path) -> None:
    formats = {"encoder": ["model.causal=false"], "causal": ["data.format=causal", "model.causal=true"]}
    runs = {f: tmp_path / f for f in formats}
    in_parallel(*(partial(train_run, runs[f], "data=bucket_sort", *TINY, *o) for f, o in formats.items()))
    for directory in runs.values():
        metrics = read_metrics(directory)
        assert list(metrics["eval"]) == ["6", "12", "18"]
        beyond = [metrics["eval"][n]["acc"] for n in ("12", "18")]
        assert metrics["val_score"] == pytest.approx(sum(beyond) / 2, rel=1e-6)
        assert 0 <= metrics["val_score"] <= 1
    assert read_metrics(runs["encoder"])["val_score"] != read_metrics(runs["causal"])["val_score"]


@pytest.mark.slow
def test_a_format_that_does_not_match_the_models_causality_is_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "encoder": ("model.causal=true", "data.format=encoder", "needs model.causal=false"),
        "causal": ("model.causal=false", "data.format=causal", "needs model.causal=true"),
    }
    for name, (causal, format, says) in cases.items():
        run_dir = tmp_path / name
        result = run_cli(
            *FAST, f"hydra.run.dir={run_dir}", "data=parity", "model=attention", causal, format, check=False
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: data=parity with ") and says in lines[0] and format in lines[0]
        assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_replicas_equal_their_single_runs(tmp_path: Path) -> None:
    common = ["data=stack_manipulation", *TINY, "data.seed=${seed}"]
    jobs = {"replicas": ["seed=3", "replicas=2"], "seed3": ["seed=3"], "seed4": ["seed=4"]}
    in_parallel(*(partial(train_run, tmp_path / job, *common, *o) for job, o in jobs.items()))
    for k, single in enumerate(("seed3", "seed4")):
        replica, alone = read_metrics(tmp_path / "replicas" / f"replica_{k}"), read_metrics(tmp_path / single)
        for key in ("train_loss", "val_loss", "val_score"):
            assert replica[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), (k, key)
    scores = [read_metrics(tmp_path / "replicas" / f"replica_{k}")["val_score"] for k in range(2)]
    assert [r["val_score"] for r in read_metrics(tmp_path / "replicas")["replicas"]] == scores
    # The table: the score's mean over the seeds (replicas count as seeds) and its maximum.
    table = run_cli(str(tmp_path / "replicas"), module="posenc_exp.analysis.tables").stdout.splitlines()
    header, row = [c.strip() for c in table[0].split("|")], [c.strip() for c in table[2].split("|")]
    assert row[header.index("seeds")] == "2" and row[header.index("best")] == f"{max(scores):.4g}"
    assert row[header.index("score")].startswith(f"{sum(scores) / 2:.4g} ± ")
    # --scores: one column per task, "mean (best) [at 1x]" in percent.
    compact = run_cli(str(tmp_path / "replicas"), "--scores", module="posenc_exp.analysis.tables").stdout.splitlines()
    assert compact[0] == "| encoding | stack_manipulation |"
    assert compact[2].startswith(f"| the config's | {100 * sum(scores) / 2:.1f} ({100 * max(scores):.1f}) [")
