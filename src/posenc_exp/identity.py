"""Check the bias identity on a trained feed-forward checkpoint: ``python -m posenc_exp.identity <ckpt>``.

For the seed's network the encoding ``p`` only ever enters through the first layer,
``W1 (x + p) + b1 = W1 x + (W1 p + b1)``, so folding it into the bias (``b1' = b1 + W1 p``) and dropping
it gives the same function. This loads a checkpoint, folds, and reports the largest output difference
over random windows ``x ~ N(0, I)`` (the seed's input distribution).
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from posenc_exp.config import ConfigError, check_checkpoint
from posenc_exp.models import FeedForward
from posenc_exp.module import PosEncModule


def max_fold_difference(net: FeedForward, n_windows: int = 10_000, seed: int = 0, dtype=torch.float64) -> float:
    """``max |f(x) - f_folded(x)|`` over ``n_windows`` random windows, computed in ``dtype``.

    In float64 the difference is pure rounding (about 1e-15); in float32 it is about 1e-6 when
    ``|W1 p|`` is large, since the two sides round ``W1 x + W1 p + b1`` in a different order.
    """
    net = copy.deepcopy(net).to(dtype)
    x = torch.randn(n_windows, net.length, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        return (net(x) - net.fold_encoding()(x)).abs().max().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.identity", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a feed-forward run's checkpoint, e.g. <run>/checkpoints/last.ckpt")
    args = parser.parse_args(argv)
    try:
        check_checkpoint(args.checkpoint)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    net = PosEncModule.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True).net
    if not isinstance(net, FeedForward):
        sys.exit(
            f"error: checkpoint={args.checkpoint} holds a {type(net).__name__}; the identity is for model=feedforward"
        )
    p = net.encoding(torch.zeros(1, net.length, 1)).flatten()
    shift = net.hidden.weight.detach() @ p
    print(f"encoding p: {[round(v, 4) for v in p.tolist()]}")
    print(f"|p| = {p.norm():.4f}; folded into the first bias it moves b1 by |W1 p| = {shift.norm():.4f}")
    for dtype in (torch.float32, torch.float64):
        difference = max_fold_difference(net, dtype=dtype)
        print(f"max |f(x) - f_folded(x)| over 10000 random windows, {dtype}: {difference:.3e}")


if __name__ == "__main__":
    main()
