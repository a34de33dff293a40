"""The linear-collapse probe: ``python -m posenc_exp.analysis.probe [overrides]``.

The seed claims that without softmax any stack of self-attention layers "narrows down to one Q, K, V" and
becomes linear. This probe measures, for any attention configuration (``conf/probe.yaml``: ``model=attention``
keys, comma lists probed one combination at a time), two things about the map ``f: X -> Y`` computed by the
stack's layers:

- **degree of homogeneity**: the slope ``k`` of the least-squares line through ``(log alpha,
  log ||f(alpha X)||_F)`` for ``n_alphas`` log-spaced ``alpha`` in ``[alpha_min, alpha_max]``, over a batch
  of ``n_scale`` inputs. A map with ``f(alpha X) = alpha^k f(X)`` (homogeneous of degree ``k``) gives
  exactly ``k`` and a straight line: a linear map gives 1, one softmax-free attention layer
  ``(X W_q W_k^T X^T) X W_v`` gives 3, ``D`` of them stacked ``3^D``. ``slope_low`` and ``slope_high`` are
  the slopes between the first two and the last two ``alpha``: equal for a homogeneous map, different for a
  mixture of degrees (a residual ``X + cubic``, softmax). Source: Euler's theorem on homogeneous functions;
  the cubic form of softmax-free attention e.g. Katharopoulos et al., "Transformers are RNNs", ICML 2020.
- **linear share**: the share of output variance that the best affine map of the input explains, on held-out
  inputs, ``R^2 = 1 - sum ||y - (W x + b)||^2 / sum ||y - ybar||^2`` with ``x = vec(X)``, ``y = vec(f(X))``
  and ``(W, b)`` fitted by least squares on ``n_fit`` inputs (``L d + 1`` unknowns per output), evaluated on
  ``n_test`` fresh ones. 1 means ``f`` is linear; a linear map of degree 1 is the seed's "acts like one layer".

What is probed: the attention layers alone, ``f(X) = block_D(...block_1(X))``, applied to continuous
inputs ``X in R^{L x d_model}`` with i.i.d. ``N(0, 1)`` entries, i.e. to the *embedded* representation
(a token embedding cannot be scaled, and an added input encoding ``X + P`` or the read-out's bias would add
terms of degree 0). Rotary and bias encodings act inside the layers and are part of ``f``. Every ``Linear``
bias of the layers is set to 0 (biases make each layer an inhomogeneous polynomial; the claim is about the
``Q, K, V`` matrices); the weights otherwise keep the model's own initialisation (seeded by ``seed``;
``qk_gain`` scales ``W_q`` and ``W_k``). Computed in float64. ``model.norm`` defaults to ``none`` here:
LayerNorm is scale-invariant and would set every degree to 0.

Output: one table row per configuration (``theory``: the degree the algebra predicts where it is exact, 3^D
for content attention without softmax, residual, MLP or bias encoding; 1 for position-only attention
without MLP) and, as the last line, a JSON object ``{"rows": [...]}``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from posenc_exp import CONFIG_DIR
from posenc_exp.config import ConfigError, check_group_choices, expand_sweeps, validate
from posenc_exp.models import AttentionStack
from posenc_exp.models.layers import Linear

SWITCHES = ("depth", "softmax", "residual", "mlp", "position_only")


def compose_probe(overrides: Sequence[str]) -> DictConfig:
    """The composed ``probe`` config for one combination of overrides, checked (:class:`ConfigError`)."""
    model = next((o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+") == "model"), None)
    if model not in (None, "attention"):  # refused before composing: probe.yaml sets keys only attention has
        raise ConfigError(f"model={model} is not allowed: the probe needs model=attention")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="probe", overrides=list(overrides))
    if not issubclass(get_class(cfg.model._target_), AttentionStack):
        raise ConfigError(f"model._target_={cfg.model._target_} is not allowed: the probe needs model=attention")
    validate(OmegaConf.masked_copy(cfg, "model"))
    for key in ("length", "n_fit", "n_test", "n_scale", "n_alphas"):
        if cfg[key] < 2:
            raise ConfigError(f"{key}={cfg[key]} is not allowed: expected an integer >= 2")
    if not 0 < cfg.alpha_min < cfg.alpha_max:
        raise ConfigError(f"alpha_min={cfg.alpha_min}, alpha_max={cfg.alpha_max}: expected 0 < alpha_min < alpha_max")
    return cfg


def probed_stack(cfg: DictConfig) -> AttentionStack:
    """The configured stack in float64 and eval mode, every ``Linear`` bias zero, ``W_q, W_k`` times ``qk_gain``."""
    torch.manual_seed(cfg.seed)
    net: AttentionStack = instantiate(cfg.model).double().eval()
    with torch.no_grad():
        for module in net.blocks.modules():
            if isinstance(module, Linear) and module.bias is not None:
                module.bias.zero_()
        for block in net.blocks:
            block.attention.qkv.weight[:, : 2 * net.d_model] *= cfg.qk_gain
    return net


def layers_map(net: AttentionStack) -> Callable[[Tensor], Tensor]:
    """``X (B, L, d) -> block_D(...block_1(X))``: the layers without embedding, final norm or read-out (of the
    stack's one replica)."""

    return lambda x: net.layers(x.unsqueeze(0))[0][0]


def homogeneity(f: Callable[[Tensor], Tensor], x: Tensor, alphas: Tensor) -> dict[str, float]:
    """``degree``: slope of ``log ||f(alpha x)||_F`` on ``log alpha`` (least squares); ``slope_low`` and
    ``slope_high``: the slopes between the first two and the last two alphas (see the module docstring)."""
    log_alpha = alphas.log()
    log_norm = torch.stack([f(alpha * x).norm().log() for alpha in alphas])
    centred = log_alpha - log_alpha.mean()
    slope = (centred * (log_norm - log_norm.mean())).sum() / centred.pow(2).sum()
    local = log_norm.diff() / log_alpha.diff()
    return {"degree": slope.item(), "slope_low": local[0].item(), "slope_high": local[-1].item()}


def linear_share(f: Callable[[Tensor], Tensor], x_fit: Tensor, x_test: Tensor) -> float:
    """Held-out ``R^2`` of the least-squares affine map ``vec(X) -> vec(f(X))`` (see the module docstring)."""

    def design(x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return torch.cat([flat, torch.ones(len(flat), 1, dtype=flat.dtype)], dim=1)

    weights = torch.linalg.lstsq(design(x_fit), f(x_fit).flatten(1)).solution
    y_test = f(x_test).flatten(1)
    residual = (y_test - design(x_test) @ weights).pow(2).sum()
    total = (y_test - y_test.mean(dim=0)).pow(2).sum()
    return (1 - residual / total).item()


def theory_degree(cfg: DictConfig) -> int | None:
    """The degree the algebra predicts where it is exact (module docstring), else ``None``."""
    model = cfg.model
    if model.mlp or model.norm != "none":
        return None
    if model.position_only:
        return 1
    bias_encoding = get_class(cfg.encoding._target_).acts_on == "bias"
    return 3**model.depth if not (model.softmax or model.residual or bias_encoding) else None


@torch.no_grad()
def probe(cfg: DictConfig) -> dict[str, Any]:
    """Both measures for one composed ``probe`` config, with the configuration's switches."""
    net = probed_stack(cfg)
    f = layers_map(net)
    generator = torch.Generator().manual_seed(cfg.seed)
    inputs = lambda n: torch.randn(n, cfg.length, net.d_model, generator=generator, dtype=torch.float64)  # noqa: E731
    alphas = torch.logspace(math.log10(cfg.alpha_min), math.log10(cfg.alpha_max), cfg.n_alphas, dtype=torch.float64)
    row: dict[str, Any] = {key: cfg.model[key] for key in SWITCHES}
    row["encoding"] = get_class(cfg.encoding._target_).__name__
    row["qk_gain"] = cfg.qk_gain
    row.update(homogeneity(f, inputs(cfg.n_scale), alphas))
    row["linear_r2"] = linear_share(f, inputs(cfg.n_fit), inputs(cfg.n_test))
    row["theory"] = theory_degree(cfg)
    return row


TABLE = [  # (heading and row key, width, number format)
    ("depth", 5, "d"),
    ("softmax", 7, ""),
    ("residual", 8, ""),
    ("mlp", 5, ""),
    ("position_only", 13, ""),
    ("encoding", 10, ""),
    ("qk_gain", 7, "g"),
    ("degree", 9, ".3f"),
    ("theory", 6, "d"),
    ("slope_low", 9, ".3f"),
    ("slope_high", 10, ".3f"),
    ("linear_r2", 9, ".4f"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per row; booleans and strings as text, ``None`` as ``-``."""
    header = " ".join(f"{key:>{width}}" for key, width, _ in TABLE)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [
            f"{'-' if row[key] is None else str(row[key]):>{width}}"
            if row[key] is None or isinstance(row[key], bool | str)
            else f"{row[key]:>{width}{number}}"
            for key, width, number in TABLE
        ]
        print(" ".join(cells))


USAGE = """usage: python -m posenc_exp.analysis.probe [overrides]

Measures the degree of homogeneity and the linear share of an attention stack's layers (see
posenc_exp.analysis.probe). Overrides are Hydra's, on conf/probe.yaml; comma lists are probed in every combination:
  python -m posenc_exp.analysis.probe model.softmax=false model.residual=false model.depth=2
  python -m posenc_exp.analysis.probe model.softmax=false,true model.residual=false,true model.depth=1,2,3 \\
      model.position_only=false,true
Prints a table and, as its last line, a JSON object {"rows": [...]}."""


def main(argv: Sequence[str] | None = None) -> None:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print(USAGE)
        return
    try:
        check_group_choices(overrides)
        rows = [probe(compose_probe(combination)) for combination in expand_sweeps(overrides)]
    except (ConfigError, HydraException) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    print_table(rows)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
