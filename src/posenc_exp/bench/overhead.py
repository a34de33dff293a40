"""Framework overhead: the seed model trained through posenc-exp vs a minimal hand-written PyTorch loop.

``python -m posenc_exp.bench overhead`` trains the same model, on the same data, with the same batch size,
optimizer, thread count and number of optimizer steps, both ways, in one process, alternating repeats.
The framework side is exactly what ``python -m posenc_exp.train`` builds (``train.build``): Trainer,
progress bar, TensorBoard logger, the encoding's histograms and distance every epoch and its images every
10 epochs and at the last, the best checkpoint when ``val/loss`` improves and ``last.ckpt`` every 10 epochs
and at the last, one validation pass per epoch. The raw loop also validates once per epoch, and does
nothing else.

The ratio reported is the median over the repeats of ``framework time / raw-loop time``, each repeat's two
timings taken one after the other (a shared machine's speed drifts by 10-30 % between repeats, and a pair
sees the same drift), of the wall time and (``_cpu``) of the process's CPU time; the last line is JSON. A third
variant, ``core``, trains through the framework without the per-epoch checkpoint and snapshot callbacks
(``ratio_*_core``), which separates Lightning's loop from what those features cost.

``--hooks`` instead times where a batch-size-1 fit spends its time beyond the steps: each hook that the run's
callbacks and LightningModule define, timed inside real fits (``hook_times``; Lightning's ``SimpleProfiler``
would switch the steps to Lightning's wrapped path and call every per-step hook, which the run does not).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig

from posenc_exp.config import compose_train
from posenc_exp.train import build


def compose_config(batch_size: int | None, epochs: int, output_dir: str, extra: tuple[str, ...] = ()) -> DictConfig:
    """The default training config at this batch size (``None``: the default one) and epoch count."""
    overrides = [f"trainer.max_epochs={epochs}", f"paths.output_dir={output_dir}", *extra]
    if batch_size is not None:
        overrides.append(f"data.batch_size={batch_size}")
    return compose_train(overrides)


def time_framework(cfg: DictConfig) -> tuple[float, float, int]:
    """:func:`time_fit` of what ``train.build(cfg)`` builds."""
    return time_fit(*build(cfg))


def time_fit(
    datamodule: L.LightningDataModule, module: L.LightningModule, trainer: L.Trainer
) -> tuple[float, float, int]:
    """Seconds for ``trainer.fit`` (console output swallowed), wall and CPU (this process, all its threads),
    and the optimizer steps it took."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        started, cpu = time.perf_counter(), time.process_time()
        trainer.fit(module, datamodule=datamodule)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, trainer.global_step


def time_raw_loop(cfg: DictConfig) -> tuple[float, float, int]:
    """The same training as a plain loop: shuffle, slice, forward, backward, step; validate each epoch."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    (x, y), (x_val, y_val) = datamodule.splits["train"], datamodule.splits["val"]  # (replica, sample, ...)
    net = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer, _partial_=True)(net.parameters())
    mse = torch.nn.functional.mse_loss
    steps = 0
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(cfg.trainer.max_epochs):
        for index in torch.randperm(x.shape[1]).split(cfg.data.batch_size):
            loss = mse(net(x[:, index]), y[:, index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        with torch.no_grad():
            mse(net(x_val), y_val)
    return time.perf_counter() - started, time.process_time() - cpu, steps


# The per-epoch features left out of the ``core`` variant.
WITHOUT_EPOCH_CALLBACKS = (
    "callbacks.model_checkpoint=null",
    "callbacks.last_checkpoint=null",
    "callbacks.encoding_snapshot=null",
    "+trainer.enable_checkpointing=false",
)


def measure(batch_size: int, epochs: int, repeats: int) -> dict[str, float]:
    framework, core, raw = [], [], []  # (wall, CPU) seconds
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = compose_config(batch_size, epochs, output_dir)
        core_cfg = compose_config(batch_size, epochs, output_dir, WITHOUT_EPOCH_CALLBACKS)
        time_raw_loop(cfg)  # warm-up: allocator, kernels, imports
        for _ in range(repeats):
            *raw_s, raw_steps = time_raw_loop(cfg)
            *framework_s, framework_steps = time_framework(cfg)
            *core_s, core_steps = time_framework(core_cfg)
            if not raw_steps == framework_steps == core_steps:
                raise RuntimeError(f"step counts differ: raw {raw_steps}, framework {framework_steps}, {core_steps}")
            raw.append(raw_s)
            framework.append(framework_s)
            core.append(core_s)
    result: dict[str, float] = {"batch_size": batch_size, "optimizer_steps": raw_steps}
    for clock, index in (("", 0), ("_cpu", 1)):
        for name, times in (("framework", framework), ("core", core), ("raw", raw)):
            result[f"{name}{clock}_s"] = statistics.median(t[index] for t in times)
        result[f"ratio{clock}"] = statistics.median(f[index] / r[index] for f, r in zip(framework, raw, strict=True))
        result[f"ratio_core{clock}"] = statistics.median(c[index] / r[index] for c, r in zip(core, raw, strict=True))
    return result


class HookTimer:
    """Wraps methods of objects so that each call's seconds add to ``totals[label]``. ``outermost`` sums only the
    calls made outside any other wrapped call (a callback's ``state_dict`` runs inside a checkpoint's save), so
    that a fit's time less ``outermost`` counts no hook twice."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.outermost = 0.0
        self.depth = 0

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Replace ``owner.name`` on the instance by a wrapper that times it under ``label``."""
        method: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            self.depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self.depth -= 1
                seconds = time.perf_counter() - started
                self.totals[label] += seconds
                if self.depth == 0:
                    self.outermost += seconds

        setattr(owner, name, wrapper)


def own_hooks(obj: Any, base: type) -> list[str]:
    """The hooks of ``base`` (its public methods) that ``obj``'s class defines anew (Lightning's ``is_overridden``:
    a classmethod such as ``load_from_checkpoint`` is a new bound method at each lookup, not an override)."""
    return [
        h for h in dir(base) if not h.startswith("_") and callable(getattr(base, h)) and is_overridden(h, obj, base)
    ]


def hook_times(epochs: int, fits: int) -> dict[str, float]:
    """Milliseconds per epoch of a batch-size-1 run (``fit``) and of the raw loop (``raw loop``), and in each hook
    that the run's callbacks (``<class>.<hook>``, summed over callbacks of one class) and LightningModule
    (``module.<hook>``, its steps included) define, over ``fits`` fits of ``epochs`` epochs (a hook called inside
    another counts in both); ``elsewhere`` is the fit's time outside them: Lightning's loops, fit's start and end."""
    timer = HookTimer()
    totals = timer.totals
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = compose_config(1, epochs, output_dir)
        time_raw_loop(cfg)  # warm-up
        for _ in range(fits):
            totals["raw loop"] += time_raw_loop(cfg)[0]
            datamodule, module, trainer = build(cfg)
            for callback in trainer.callbacks:
                for hook in own_hooks(callback, L.Callback):
                    timer.wrap(callback, hook, f"{type(callback).__name__}.{hook}")
            for hook in own_hooks(module, L.LightningModule):
                timer.wrap(module, hook, f"module.{hook}")
            totals["fit"] += time_fit(datamodule, module, trainer)[0]
    totals["elsewhere"] = totals["fit"] - timer.outermost
    return {k: 1e3 * v / (fits * epochs) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.bench overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs-bs1", type=int, default=20, help="epochs at batch size 1 (72 steps each)")
    parser.add_argument("--epochs-default", type=int, default=100, help="epochs at the default batch size")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for both sides")
    parser.add_argument("--hooks", action="store_true", help="time each hook of --repeats batch-size-1 fits instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.hooks:
        times = hook_times(args.epochs_bs1, args.repeats)
        for name, ms in times.items():
            print(f"{name:>55}: {ms:7.3f} ms per epoch")
        print(json.dumps({"ms_per_epoch": {k: round(v, 3) for k, v in times.items()}, "threads": args.threads}))
        return
    default_batch = compose_config(None, 1, ".").data.batch_size
    results = {
        "bs1": measure(1, args.epochs_bs1, args.repeats),
        "default": measure(default_batch, args.epochs_default, args.repeats),
    }
    for name, r in results.items():
        print(
            f"{name:>8}: batch {r['batch_size']:>3}, {r['optimizer_steps']} steps: framework {r['framework_s']:.3f} s, "
            f"raw loop {r['raw_s']:.3f} s, ratio {r['ratio']:.2f}x; "
            f"without checkpoints and snapshots {r['core_s']:.3f} s, ratio {r['ratio_core']:.2f}x; "
            f"CPU time: ratio {r['ratio_cpu']:.2f}x, without {r['ratio_core_cpu']:.2f}x"
        )
    summary = {f"ratio_{name}": round(r["ratio"], 3) for name, r in results.items()}
    summary |= {f"ratio_{name}_core": round(r["ratio_core"], 3) for name, r in results.items()}
    summary |= {f"ratio_{name}_cpu": round(r["ratio_cpu"], 3) for name, r in results.items()}
    summary |= {f"ratio_{name}_core_cpu": round(r["ratio_core_cpu"], 3) for name, r in results.items()}
    summary |= {f"{name}_{k}": round(v, 4) for name, r in results.items() for k, v in r.items() if k.endswith("_s")}
    summary["threads"] = args.threads
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
