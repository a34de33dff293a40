"""The cost of replicas: one training step of K models at once against one model's step.

``python -m posenc_exp.bench replicas`` builds the network a run with ``replicas=K`` trains (composed from the
configs: the toy's feed-forward model at batch size 1, and the attention model of the length-generalization
experiment at its size), for each K in ``--replicas`` (default 1, 4, 16, 64), and times real optimizer steps
(forward, per-replica loss, backward of their sum, Adam step) on one shared random batch per step. Warm-up
steps are excluded; the K take turns within each repeat, so a slow phase of a shared machine hits them all,
and the median over repeats is reported.

``ratio(K) = seconds per step with K replicas / seconds per step with 1``: the time K seeds take in one
process relative to one seed; ``K / ratio`` is the speed-up over training the K seeds one after the other.

``--whole-run EPOCHS`` also times whole runs as ``python -m posenc_exp.train replicas=K data.batch_size=1``
builds them (``posenc_exp.train.build``, then ``trainer.fit``: validation, logging, checkpoints and snapshots
included), ``EPOCHS`` epochs each, the K taking turns within each repeat: what the per-epoch work adds to
the steps. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from omegaconf import OmegaConf

from posenc_exp.bench.overhead import compose_config, time_framework
from posenc_exp.config import compose_train
from posenc_exp.module import PosEncModule

# The two models measured: the overrides of their runs, and the batch the bench feeds them.
MODELS = {
    "toy": ([], "scalars"),
    "attention": (["experiment=length_generalization", "data=copy", "encoding=rope"], "tokens"),
}


def build_module(overrides: list[str], replicas: int, device: str) -> PosEncModule:
    """The module a run with ``overrides`` and ``replicas=<replicas>`` trains."""
    cfg = compose_train(overrides)
    return PosEncModule(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        task="tokens" if cfg.model.get("vocab_size") else "regression",
        replicas=replicas,
    ).to(device)


def batches(overrides: list[str], kind: str, steps: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` random batches ``(x, y)`` of the run's batch size and training length, shared by the replicas."""
    cfg = compose_train(overrides)
    generator = torch.Generator().manual_seed(0)
    size = (steps, 1, cfg.data.batch_size, cfg.data.length)
    if kind == "tokens":
        x = torch.randint(0, cfg.data.vocab_size, size, generator=generator)
        y = torch.randint(0, cfg.data.vocab_size, size, generator=generator)
    else:
        x, y = torch.randn(size, generator=generator), torch.randn(size[:-1], generator=generator)
    return list(zip(x.to(device), y.to(device), strict=True))


def seconds_per_step(module: PosEncModule, optimizer: torch.optim.Optimizer, data: list) -> float:
    """Train on ``data`` (one optimizer step each); seconds per step, device synchronised."""
    started = time.perf_counter()
    for x, y in data:
        loss = module.loss(module.net(x), y).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if module.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / len(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.bench replicas", description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4, 16, 64], help="the K measured")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=50, help="timed steps per K and repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per K before timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--whole-run", type=int, metavar="EPOCHS", help="also time whole runs of this many epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ks = sorted({1, *args.replicas})

    result: dict[str, dict] = {}
    for name in args.models:
        overrides, kind = MODELS[name]
        data = batches(overrides, kind, args.steps, args.device)
        trainees = {}
        for k in ks:
            module = build_module(overrides, k, args.device)
            trainees[k] = (module, torch.optim.Adam(module.parameters(), lr=1e-3))
            seconds_per_step(*trainees[k], data[: args.warmup])
        timings: dict[int, list[float]] = {k: [] for k in ks}
        for _ in range(args.repeats):
            for k, trainee in trainees.items():
                timings[k].append(seconds_per_step(*trainee, data))
        step = {k: statistics.median(v) for k, v in timings.items()}
        result[name] = {
            "ms_per_step": {k: round(1e3 * v, 3) for k, v in step.items()},
            "ratio_to_one": {k: round(v / step[1], 3) for k, v in step.items()},
            "speedup_over_sequential": {k: round(k * step[1] / v, 2) for k, v in step.items()},
        }
        print(f"{name}: median of {args.repeats} x {args.steps} steps, {args.device}, {args.threads} thread(s)")
        print(f"{'replicas':>9} | {'ms/step':>9} | {'ratio to 1':>10} | {'speed-up vs one at a time':>25}")
        for k in ks:
            row = result[name]
            print(
                f"{k:>9} | {row['ms_per_step'][k]:>9.3f} | {row['ratio_to_one'][k]:>10.3f} | "
                f"{row['speedup_over_sequential'][k]:>25.2f}"
            )
    if args.whole_run:
        result["whole_run"] = whole_runs(ks, args.whole_run, args.repeats)
    print(json.dumps({**result, "device": args.device, "threads": args.threads, "steps": args.steps}))


def whole_runs(ks: list[int], epochs: int, repeats: int) -> dict[str, dict[int, float]]:
    """The default run at batch size 1 with ``replicas=K`` for each K, ``epochs`` epochs through the framework
    (CPU): milliseconds per epoch (median over ``repeats``) and the ratio to one replica."""
    timings: dict[int, list[float]] = {k: [] for k in ks}
    with tempfile.TemporaryDirectory(prefix="bench_replicas_") as output_dir:
        configs = {k: compose_config(1, epochs, output_dir, (f"replicas={k}",)) for k in ks}
        for _ in range(repeats):
            for k, cfg in configs.items():
                timings[k].append(time_framework(cfg)[0] / epochs)
    epoch = {k: statistics.median(v) for k, v in timings.items()}
    print(f"whole runs (the default run at batch size 1, {epochs} epochs): median of {repeats}")
    print(f"{'replicas':>9} | {'ms/epoch':>9} | {'ratio to 1':>10}")
    for k in ks:
        print(f"{k:>9} | {1e3 * epoch[k]:>9.1f} | {epoch[k] / epoch[1]:>10.3f}")
    return {
        "ms_per_epoch": {k: round(1e3 * v, 2) for k, v in epoch.items()},
        "ratio_to_one": {k: round(v / epoch[1], 3) for k, v in epoch.items()},
    }


if __name__ == "__main__":
    main()
