"""Layers with a leading replica axis: ``R`` independent models trained as one.

Every weight of every model and encoding carries a leading replica axis ``R`` (``R = 1`` for an ordinary run):
replica ``r`` of a layer is the layer of model ``r``. Activations carry the same axis, ``(R, batch, ...)``; an
input with a replica axis of 1 (data the replicas share) is broadcast to all ``R``. Tiny models are bound by
per-step overhead and kernel launches, so ``R`` models cost about one step when their matmuls are batched
(``torch.baddbmm``) and their attention runs with the replica axis folded into the batch.

A model with ``R`` replicas is made by :func:`stack_replicas` from ``R`` models of one replica each, built
one after the other with their own seeds: each replica's initialisation is exactly that of an ordinary run
with its seed, since the one-replica layers draw their initial values as ``torch.nn``'s layers do (same
order, same distributions).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def replicas_of(module: nn.Module) -> int:
    """The size of the replica axis of ``module``'s parameters (1 for a module without parameters)."""
    return max((p.shape[0] for p in module.parameters()), default=1)


def broadcast_replicas(x: Tensor, replicas: int) -> Tensor:
    """``x`` with its leading replica axis of 1 expanded (a view) to ``replicas``; unchanged if already so."""
    if x.shape[0] == replicas:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"input has {x.shape[0]} replicas, the model {replicas}")
    return x.expand(replicas, *x.shape[1:])


class Linear(nn.Module):
    """``y_r = x_r W_r^T + b_r`` for each replica ``r``: weight ``(R, out, in)``, bias ``(R, out)``.

    Initialised as ``torch.nn.Linear`` (Kaiming-uniform weight, ``U(-1/sqrt(in), 1/sqrt(in))`` bias).
    ``x``: ``(R or 1, ..., in)`` -> ``(R, ..., out)``, one batched matmul for all replicas.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        reference = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(reference.weight.detach().unsqueeze(0))
        self.bias = nn.Parameter(reference.bias.detach().unsqueeze(0)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        replicas = self.weight.shape[0]
        x = broadcast_replicas(x, replicas)
        # (R, batch, in) as it is; other shapes flattened to it and back (a tiny model pays per operation)
        flat = x if x.ndim == 3 else x.reshape(replicas, -1, self.in_features)
        if self.bias is None:
            out = torch.bmm(flat, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out if x.ndim == 3 else out.view(*x.shape[:-1], self.out_features)


class LayerNorm(nn.Module):
    """``torch.nn.LayerNorm`` over the last axis with a gain and shift per replica, ``(R, d)`` each."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, d_model))
        self.bias = nn.Parameter(torch.zeros(1, d_model))

    def forward(self, x: Tensor) -> Tensor:
        shape = (self.weight.shape[0], *([1] * (x.ndim - 2)), -1)
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return normed * self.weight.view(shape) + self.bias.view(shape)


class Embedding(nn.Module):
    """A token table per replica, ``(R, vocab_size, d)``, initialised ``N(0, 1)`` as ``torch.nn.Embedding``.

    ``x``: token ids ``(R or 1, ...)`` -> ``(R, ..., d)``: one gather from the flattened tables.
    """

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.weight = nn.Parameter(nn.Embedding(vocab_size, d_model).weight.detach().unsqueeze(0))

    def forward(self, x: Tensor) -> Tensor:
        replicas = self.weight.shape[0]
        x = broadcast_replicas(x, replicas)
        offset = torch.arange(replicas, device=x.device).view(replicas, *([1] * (x.ndim - 1))) * self.vocab_size
        return F.embedding(x + offset, self.weight.reshape(-1, self.weight.shape[-1]))


def stack_replicas(models: Sequence[nn.Module]) -> nn.Module:
    """One model whose replica ``r`` is ``models[r]``: every parameter concatenated along its replica axis.

    The models are one-replica instances of the same class and configuration; buffers (position-only
    tables, caches) are taken from the first, since they do not depend on the replica.
    """
    stacked = copy.deepcopy(models[0])
    if len(models) == 1:
        return stacked
    parameters = [dict(m.named_parameters()) for m in models]
    for name, parameter in stacked.named_parameters():
        parameter.data = torch.cat([p[name].detach() for p in parameters])
    return stacked


def replica(module: nn.Module, index: int) -> nn.Module:
    """Replica ``index`` of ``module`` as a one-replica copy (e.g. for the probe or a per-replica export)."""
    single = copy.deepcopy(module)
    for parameter in single.parameters():
        parameter.data = parameter.data[index : index + 1].clone()
    return single
