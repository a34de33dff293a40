"""The figures of ``docs/depth_study.md``.

``python -m posenc_exp.analysis.figures <depth_study dir> [--overfit <depth_overfit dir>] --out docs/``

Reads the job directories of an ``experiment=depth_study`` sweep (each run's ``.hydra/config.yaml``,
``metrics.json`` and ``diagnostics.json``, written by :class:`posenc_exp.diagnostics.Diagnostics`), optionally
an ``experiment=depth_overfit`` sweep, runs the linear-collapse probe grid (:mod:`posenc_exp.analysis.probe`: softmax
off/on x residual off/on x depth 1, 2, 3 x content/position-only attention), and writes one PNG per claim:

- ``depth_parameters.png``: parameters against depth, counted and by the formula; training time per run;
- ``depth_overfitting.png``: the train-validation gap against depth (reverse; AR with few windows);
- ``depth_gradients.png``: the gradient norm of each layer of the 16-layer stacks, at initialisation and
  after training;
- ``depth_linearity.png``: the probe's degree of homogeneity and linear share; reverse accuracy by depth
  with and without softmax;
- ``depth_rank_collapse.png``: the rank-collapse ratio of each layer's output;
- ``depth_entropy.png``: the normalised attention entropy of each layer;
- ``depth_position.png``: the position probe's accuracy on each layer's output.

Curves are means over seeds, shaded between the smallest and largest seed. It also prints, per
configuration, the numbers the findings quote (mean ± std over seeds), and the probe table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from posenc_exp.analysis import plots
from posenc_exp.analysis.plots import subplots
from posenc_exp.analysis.report import load_runs
from posenc_exp.diagnostics import DIAGNOSTICS_FILE, attention_parameter_count
from posenc_exp.rundir import METRICS_FILE

DEPTH_TICKS = [1, 2, 4, 8, 16]
SHARP_QK_GAIN = 4  # the probe's second softmax setting: W_q, W_k x 4, attention scores x 16
COMBOS = [(True, True), (True, False), (False, True), (False, False)]  # (softmax, residual)
COLORS = {(True, True): "tab:blue", (True, False): "tab:orange", (False, True): "tab:green", (False, False): "tab:red"}


def combo_label(softmax: bool, residual: bool) -> str:
    return f"softmax {'on' if softmax else 'off'}, residual {'on' if residual else 'off'}"


@dataclass
class StudyRun:
    """One finished run of the depth study: its switches, ``metrics.json`` and ``diagnostics.json``."""

    directory: Path
    depth: int
    softmax: bool
    residual: bool
    mlp: bool
    seed: int
    model: dict[str, Any]
    metrics: dict[str, Any]
    steps: list[dict[str, float]]  # diagnostics per step: 0 = initialisation, e = after epoch e
    parameters: int

    @property
    def key(self) -> tuple[int, bool, bool, bool]:
        return (self.depth, self.softmax, self.residual, self.mlp)

    def layers(self, measure: str, step: int = -1) -> list[float]:
        """``diag/layer{i}/<measure>`` for ``i = 0..depth`` (where logged) at ``step``."""
        values = self.steps[step]
        return [
            values[f"diag/layer{i}/{measure}"] for i in range(self.depth + 1) if f"diag/layer{i}/{measure}" in values
        ]


def load_study(sweep_dir: Path) -> list[StudyRun]:
    """The finished runs (with ``metrics.json`` and ``diagnostics.json``) of a sweep, via the report's loader."""
    runs = []
    for run in load_runs(sweep_dir):
        diagnostics_file = run.directory / DIAGNOSTICS_FILE
        if not run.finished or not diagnostics_file.is_file():
            continue
        config = OmegaConf.load(run.directory / ".hydra" / "config.yaml")
        model = {k: config.model[k] for k in ("d_model", "depth", "softmax", "residual", "mlp", "mlp_ratio", "norm")}
        model["vocab_size"] = OmegaConf.select(config, "data.vocab_size")
        diagnostics = json.loads(diagnostics_file.read_text())
        runs.append(
            StudyRun(
                run.directory,
                model["depth"],
                model["softmax"],
                model["residual"],
                model["mlp"],
                int(config.seed),
                model,
                json.loads((run.directory / METRICS_FILE).read_text()),
                diagnostics["epochs"],
                diagnostics["parameters"],
            )
        )
    return runs


def by_key(runs: Iterable[StudyRun]) -> dict[tuple, list[StudyRun]]:
    groups: dict[tuple, list[StudyRun]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    return dict(sorted(groups.items()))


def spread(values: list[float]) -> tuple[float, float, float]:
    """``(mean, min, max)``."""
    return statistics.fmean(values), min(values), max(values)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {std:.2g}"


def per_layer_curve(runs: list[StudyRun], measure: str, step: int) -> tuple[list[int], list[tuple]]:
    """Layer indices and ``spread`` over seeds of ``measure`` at each layer."""
    columns = list(zip(*(run.layers(measure, step) for run in runs), strict=True))
    first = 0 if len(columns) == runs[0].depth + 1 else 1
    return list(range(first, first + len(columns))), [spread(list(c)) for c in columns]


def plot_band(axes: Any, xs: list, points: list[tuple], **style: Any) -> None:
    means, lows, highs = zip(*points, strict=True)
    (line,) = axes.plot(xs, means, **{"marker": "o", "markersize": 3, **style})
    axes.fill_between(xs, lows, highs, alpha=0.2, color=line.get_color())


def save(figure: Any, path: Path) -> Path:
    """Write a study figure at the resolution of the committed ones, and say so."""
    plots.save(figure, path, dpi=110)
    print(f"wrote {path}")
    return path


def depth_curves(
    axes: Any, groups: dict[tuple, list[StudyRun]], value: Callable[[StudyRun], float], mlp: bool, **style: Any
) -> None:
    """One line per (softmax, residual): ``value`` against depth, for the runs with this ``mlp``."""
    for softmax, residual in COMBOS:
        keys = sorted(k for k in groups if k[1:] == (softmax, residual, mlp))
        if keys:
            points = [spread([value(r) for r in groups[k]]) for k in keys]
            plot_band(
                axes,
                [k[0] for k in keys],
                points,
                color=COLORS[softmax, residual],
                label=combo_label(softmax, residual),
                **style,
            )


def final_acc(run: StudyRun) -> float:
    return run.metrics["eval"][str(run.metrics["train_length"])]["acc"]


def depth_axis(axes: Any) -> None:
    """A logarithmic depth axis labelled 1, 2, 4, 8, 16."""
    axes.set(xscale="log", xlabel="depth (layers)", xticks=DEPTH_TICKS, xticklabels=[str(d) for d in DEPTH_TICKS])


def figure_parameters(runs: list[StudyRun], out: Path) -> Path:
    figure, (left, right) = subplots(1, 2)
    for mlp, marker in ((False, "o"), (True, "s")):
        selected = [r for r in runs if r.mlp == mlp]
        if not selected:
            continue
        depths = sorted({r.depth for r in selected})
        model = selected[0].model
        counted = [next(r.parameters for r in selected if r.depth == d) for d in depths]
        formula = [
            attention_parameter_count(model["d_model"], d, mlp, model["mlp_ratio"], model["norm"], model["vocab_size"])
            for d in depths
        ]
        label = f"MLP {'on' if mlp else 'off'}"
        left.plot(depths, formula, "-", color="gray", zorder=1)
        left.scatter(depths, counted, marker=marker, zorder=2, label=f"counted, {label}")
        times = [[r.metrics["wall_time_s"] for r in selected if r.depth == d] for d in depths]
        spans = [(statistics.median(t), min(t), max(t)) for t in times]
        plot_band(right, depths, spans, marker=marker, label=f"{label} (median, min-max over runs)")
    left.plot([], [], "-", color="gray", label="formula (diagnostics.attention_parameter_count)")
    left.set(xlabel="depth (layers)", ylabel="parameters", title="Parameters grow linearly with depth")
    right.set(
        xlabel="depth (layers)", ylabel="training wall time per run (s)", title="Training time (2-core CPU, shared)"
    )
    for axes in (left, right):
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    return save(figure, out / "depth_parameters.png")


def figure_overfitting(runs: list[StudyRun], overfit: list[StudyRun], out: Path) -> Path:
    figure, panels = subplots(1, 3 if overfit else 2)
    groups = by_key(runs)
    for axes, mlp in zip(panels[:2], (False, True), strict=True):
        depth_curves(axes, groups, lambda r: r.steps[-1]["diag/generalization_gap"], mlp)
        axes.axhline(0, color="black", lw=0.8)
        depth_axis(axes)
        axes.set(
            ylabel="val loss - train loss (final)",
            title=f"Reverse: train-validation gap, MLP {'on' if mlp else 'off'}",
        )
    if overfit:
        axes = panels[2]
        depths = sorted({r.depth for r in overfit})
        for measure, color in (("diag/train_loss", "tab:blue"), ("diag/val_loss", "tab:orange")):
            final = [spread([r.steps[-1][measure] for r in overfit if r.depth == d]) for d in depths]
            plot_band(axes, depths, final, color=color, label=measure.split("/")[1].replace("_", " ") + " (final)")
        best = [spread([min(s["diag/val_loss"] for s in r.steps) for r in overfit if r.depth == d]) for d in depths]
        plot_band(axes, depths, best, color="tab:green", linestyle="--", label="val loss (best epoch)")
        floor = overfit[0].metrics.get("val_loss_floor")
        if floor is not None:
            axes.axhline(floor, color="black", lw=0.8, label="best achievable (noise variance)")
        depth_axis(axes)
        axes.set(ylabel="MSE", title="AR(3), 256 training windows")
    for axes in panels:
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    return save(figure, out / "depth_overfitting.png")


def deepest(runs: list[StudyRun]) -> int:
    return max(r.depth for r in runs)


def figure_per_layer(
    runs: list[StudyRun], measure: str, ylabel: str, title: str, path: Path, log: bool = False
) -> Path:
    """``measure`` against the layer index in the deepest stacks: MLP off (top) and on (bottom), at
    initialisation (left) and after training (right)."""
    figure, panels = subplots(2, 2)
    depth = deepest(runs)
    groups = by_key(runs)
    cases = [(mlp, step, when) for mlp in (False, True) for step, when in ((0, "at init"), (-1, "trained"))]
    for axes, (mlp, step, when) in zip(panels, cases, strict=True):
        for softmax, residual in COMBOS:
            group = groups.get((depth, softmax, residual, mlp))
            if not group or not group[0].layers(measure, step):
                continue
            xs, points = per_layer_curve(group, measure, step)
            plot_band(axes, xs, points, color=COLORS[softmax, residual], label=combo_label(softmax, residual))
        axes.set(
            xlabel="layer (0 = embedded input)",
            ylabel=ylabel,
            title=f"{title}: depth {depth}, MLP {'on' if mlp else 'off'}, {when}",
            ylim=(0, 1.05) if not log else None,
        )
        if log:
            axes.set_yscale("log")
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    return save(figure, path)


def probe_grid() -> list[dict[str, Any]]:
    """The probe of :mod:`posenc_exp.analysis.probe` over softmax x residual x depth 1-3 x position-only, then softmax
    attention with scores 16 times larger (``qk_gain=4``)."""
    from posenc_exp.analysis.probe import compose_probe, expand_sweeps, print_table, probe

    grid = [
        "model.softmax=false,true",
        "model.residual=false,true",
        "model.depth=1,2,3",
        "model.position_only=false,true",
    ]
    sharp = ["model.softmax=true", "model.residual=false,true", "model.depth=1,2,3", f"qk_gain={SHARP_QK_GAIN}"]
    rows = [probe(compose_probe(c)) for c in expand_sweeps(grid) + expand_sweeps(sharp)]
    print_table(rows)
    return rows


def figure_linearity(runs: list[StudyRun], rows: list[dict[str, Any]], out: Path) -> Path:
    figure, panels = subplots(1, 3)
    for softmax, residual, position_only in [(*combo, False) for combo in COMBOS] + [(*c, True) for c in COMBOS]:
        selected = [
            r
            for r in rows
            if (r["softmax"], r["residual"], r["position_only"], r["qk_gain"]) == (softmax, residual, position_only, 1)
        ]
        if position_only:  # all four settings give the same line: draw them alike, label one
            style = {
                "color": "black",
                "linestyle": ":",
                "label": "position-only (each setting)" if softmax and residual else None,
            }
        else:
            style = {"color": COLORS[softmax, residual], "label": combo_label(softmax, residual)}
        depths = [r["depth"] for r in selected]
        panels[0].plot(depths, [r["degree"] for r in selected], marker="o", **style)
        panels[1].plot(depths, [r["linear_r2"] for r in selected], marker="o", **style)
    for residual in (True, False):
        sharp = [r for r in rows if r["qk_gain"] == SHARP_QK_GAIN and r["residual"] == residual]
        label = f"{combo_label(True, residual)}, scores x{SHARP_QK_GAIN**2}"
        style = {"color": COLORS[True, residual], "linestyle": "--", "marker": "s", "label": label}
        panels[1].plot([r["depth"] for r in sharp], [r["linear_r2"] for r in sharp], **style)
    panels[0].plot([1, 2, 3], [3, 9, 27], "k--", lw=0.8, label="3^depth")
    panels[0].set(
        yscale="log",
        xlabel="depth (layers)",
        xticks=[1, 2, 3],
        ylabel="degree of homogeneity",
        title="Probe: slope of log||f(aX)|| on log a",
    )
    panels[1].set(
        xlabel="depth (layers)",
        xticks=[1, 2, 3],
        ylabel="held-out R² of the best affine map",
        title="Probe: share explained by a linear map",
    )
    depth_curves(panels[2], by_key(runs), final_acc, mlp=False)
    depth_axis(panels[2])
    panels[2].set(
        ylabel="token accuracy (validation)",
        title="Reverse, trained (MLP off)",
    )
    for axes in panels:
        axes.legend(fontsize=6)
        axes.grid(alpha=0.3)
    return save(figure, out / "depth_linearity.png")


def print_summary(runs: list[StudyRun], overfit: list[StudyRun]) -> None:
    """The numbers behind the figures, per configuration: mean ± std over seeds."""
    header = [
        "depth",
        "softmax",
        "residual",
        "mlp",
        "seeds",
        "val acc",
        "gap",
        "grad L1/LD init",
        "grad L1/LD end",
        "rank last init",
        "rank last end",
        "entropy min end",
        "pos probe last end",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key, group in by_key(runs).items():
        depth = key[0]

        def ratio(r: StudyRun, step: int, d: int = depth) -> float:
            return r.steps[step]["diag/layer1/grad_norm"] / r.steps[step][f"diag/layer{d}/grad_norm"]

        entropies = [min(r.layers("attention_entropy")) for r in group if r.layers("attention_entropy")]
        cells = [
            str(depth),
            str(key[1]),
            str(key[2]),
            str(key[3]),
            str(len(group)),
            mean_std([final_acc(r) for r in group]),
            mean_std([r.steps[-1]["diag/generalization_gap"] for r in group]),
            mean_std([ratio(r, 0) for r in group]),
            mean_std([ratio(r, -1) for r in group]),
            mean_std([r.layers("rank_collapse", 0)[-1] for r in group]),
            mean_std([r.layers("rank_collapse")[-1] for r in group]),
            mean_std(entropies) if entropies else "-",
            mean_std([r.layers("position_probe")[-1] for r in group]),
        ]
        print("| " + " | ".join(cells) + " |")
    if overfit:
        print("\n| depth | seeds | train loss | val loss | best val loss | gap |\n|---|---|---|---|---|---|")
        for depth in sorted({r.depth for r in overfit}):
            group = [r for r in overfit if r.depth == depth]
            train = [r.steps[-1]["diag/train_loss"] for r in group]
            val = [r.steps[-1]["diag/val_loss"] for r in group]
            best = [min(s["diag/val_loss"] for s in r.steps) for r in group]
            gap = [v - t for v, t in zip(val, train, strict=True)]
            cells = [str(depth), str(len(group)), mean_std(train), mean_std(val), mean_std(best), mean_std(gap)]
            print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.analysis.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="an experiment=depth_study sweep directory")
    parser.add_argument("--overfit", type=Path, help="an experiment=depth_overfit sweep directory")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go (default: docs/)")
    args = parser.parse_args(argv)
    runs = load_study(args.sweep_dir)
    if not runs:
        parser.exit(1, f"error: no finished runs with {DIAGNOSTICS_FILE} under {args.sweep_dir}\n")
    overfit = load_study(args.overfit) if args.overfit else []
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(runs)} finished runs in {args.sweep_dir}" + (f", {len(overfit)} in {args.overfit}" if overfit else ""))
    figure_parameters(runs, args.out)
    figure_overfitting(runs, overfit, args.out)
    out = args.out
    figure_per_layer(
        runs, "grad_norm", "gradient norm of the layer's parameters", "Gradients", out / "depth_gradients.png", log=True
    )
    figure_per_layer(
        runs,
        "rank_collapse",
        "||X - 1 mean||_{1,inf} / ||X||_{1,inf}",
        "Rank collapse",
        out / "depth_rank_collapse.png",
        log=True,
    )
    figure_per_layer(
        runs, "attention_entropy", "attention entropy / log(n attended)", "Attention entropy", out / "depth_entropy.png"
    )
    figure_per_layer(
        runs,
        "position_probe",
        "position probe accuracy (chance 1/L)",
        "Position probe",
        out / "depth_position.png",
    )
    figure_linearity(runs, probe_grid(), args.out)
    print_summary(runs, overfit)


if __name__ == "__main__":
    main()
