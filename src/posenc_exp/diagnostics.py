"""Depth diagnostics of an attention stack: the measures, and a Lightning callback that logs them per layer.

Each measure is a plain function of tensors (formula and source in its docstring); :class:`Diagnostics`
applies them at the start of training and after every epoch to a fixed small batch, and logs ``diag/...``
scalars to TensorBoard and ``diagnostics.json`` to the run directory. It is off by default:
``callbacks=diagnostics`` turns it on (``conf/callbacks/diagnostics.yaml``). Without it nothing here runs:
the training step never requests the model's internals.

Layers are numbered as in the tags: ``layer0`` is the embedded input (with an input-added encoding), and
``layer{i}``, ``i = 1..depth``, is the output of block ``i`` (``Internals.layers[i - 1]``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from posenc_exp.loggers import replica_writers
from posenc_exp.models import AttentionStack
from posenc_exp.models.layers import replica
from posenc_exp.rundir import DIAGNOSTICS_FILE, write_json

# How many times Diagnostics.measure ran in this process: the "nothing is computed when off" test counts it.
MEASUREMENTS = {"count": 0}


def composite_norm(x: Tensor) -> Tensor:
    """``||X||_{1,inf} = sqrt(||X||_1 ||X||_inf)`` of each matrix in ``x`` ``(..., L, d)``, shape ``(...)``.

    ``||X||_1 = max_j sum_i |X_ij|`` (largest column sum) and ``||X||_inf = max_i sum_j |X_ij|`` (largest row
    sum). Source: Dong, Cordonnier, Loukas, "Attention is Not All You Need: Pure Attention Loses Rank Doubly
    Exponentially with Depth", ICML 2021, Sec. 2.
    """
    column_sums = x.abs().sum(dim=-2).amax(dim=-1)
    row_sums = x.abs().sum(dim=-1).amax(dim=-1)
    return (column_sums * row_sums).sqrt()


def rank_collapse_ratio(x: Tensor) -> Tensor:
    """``||X - 1 xbar^T||_{1,inf} / ||X||_{1,inf}`` for token matrices ``x`` ``(B, L, d)``, mean over ``B``.

    ``xbar`` is the mean token (row) of ``X``: ``X - 1 xbar^T`` is what is left once every token is replaced
    by the same vector. The ratio is 0 exactly when all tokens are equal (``X`` is the rank-one ``1 x^T``,
    full rank collapse) and of order 1 for tokens that differ. Source: Dong, Cordonnier, Loukas, ICML 2021,
    whose residual ``res(X) = X - 1 x^T`` takes the minimising ``x``; the mean token is the usual practical
    choice (an upper bound on their residual).
    """
    residual = x - x.mean(dim=-2, keepdim=True)
    return (composite_norm(residual) / composite_norm(x).clamp_min(torch.finfo(x.dtype).tiny)).mean()


def attention_entropy(attention: Tensor, causal: bool, normalised: bool = True) -> Tensor:
    """Normalised attention entropy per head, ``(H,)``, from probabilities ``A`` ``(B, H, L, L)``.

    For query row ``i`` attending ``n_i`` keys (``n_i = L``, or ``i + 1`` under a causal mask):
    ``H_i = -sum_j A_ij log A_ij / log n_i`` (``0 log 0 = 0``), in ``[0, 1]``: 1 for uniform attention over
    the attended keys, 0 for attention on a single key. Rows with ``n_i = 1`` (the first causal row) have no
    choice and are left out; the result is the mean over the other rows and the batch (``normalised=False``:
    the mean of the raw ``-sum_j A_ij log A_ij``, ``log L`` for uniform attention). Source: Zhai et al.,
    "Stabilizing Transformer Training by Preventing Attention Entropy Collapse", ICML 2023 (entropy
    collapse: ``H_i`` falling towards 0).
    """
    length = attention.shape[-1]
    attended = (torch.arange(1, length + 1) if causal else torch.full((length,), length)).to(attention.device)
    valid = attended > 1
    entropy = -torch.special.xlogy(attention, attention).sum(dim=-1)  # (B, H, L)
    scale = attended[valid].to(entropy.dtype).log() if normalised else 1.0
    return (entropy[..., valid] / scale).mean(dim=(0, 2))


def position_probe_accuracy(hidden: Tensor, shrinkage: float = 1e-3) -> float:
    """Held-out accuracy of a linear probe decoding the position index ``i`` from the hidden state ``h_i``.

    ``hidden`` ``(B, L, d)``: the first half of the ``B`` sequences fits the probe, the second half tests it.
    The probe is linear discriminant analysis in closed form: class means ``mu_i`` (one class per position),
    the pooled within-class covariance ``S`` shrunk towards the identity,
    ``S_lambda = S + lambda tr(S) / d I`` with ``lambda = shrinkage``, and the decision
    ``argmax_i  h^T S_lambda^{-1} mu_i - mu_i^T S_lambda^{-1} mu_i / 2`` (equal priors): a linear
    classifier, the nearest class mean in the Mahalanobis metric. Chance is ``1 / L``; 1 means the layer
    still carries the position linearly separably. Sources: the linear probe of Alain and Bengio,
    "Understanding Intermediate Layers Using Linear Classifier Probes", ICLR 2017 workshop; LDA as in
    Hastie, Tibshirani, Friedman, "The Elements of Statistical Learning", 2009, Sec. 4.3 (shrinkage: the
    regularised discriminant analysis of Sec. 4.3.1).
    """
    batch, length, width = hidden.shape
    if batch < 2 or not torch.isfinite(hidden).all():
        return math.nan
    h = hidden.detach().double()
    fit, test = h[: batch // 2], h[batch // 2 :]
    means = fit.mean(dim=0)  # (L, d): the class mean of each position
    within = (fit - means).reshape(-1, width)
    covariance = within.T @ within / len(within)
    ridge = shrinkage * covariance.diagonal().sum() / width + 1e-12
    covariance = covariance + ridge * torch.eye(width, dtype=h.dtype, device=h.device)
    directions = torch.linalg.solve(covariance, means.T)  # (d, L): S^{-1} mu_i
    scores = test.reshape(-1, width) @ directions - 0.5 * (means * directions.T).sum(dim=1)
    decoded = scores.argmax(dim=1)
    return (decoded == torch.arange(length, device=h.device).repeat(len(test))).double().mean().item()


def gradient_norms(named_gradients: dict[str, Tensor]) -> dict[str, float]:
    """``||grad_theta L||_2`` over each layer's parameters ``theta``: ``sqrt(sum_p ||grad_p||_F^2)``.

    Parameters are grouped by name: ``blocks.{i-1}.*`` is ``layer{i}``, ``embed.*`` is ``layer0`` and any
    other top-level module is its own group (``encoding``, ``readout``, ``final_norm``). Source: the
    vanishing/exploding-gradient diagnostic of Glorot and Bengio, "Understanding the difficulty of training
    deep feedforward neural networks", AISTATS 2010 (per-layer gradient norms).
    """
    squares: dict[str, float] = defaultdict(float)
    for name, gradient in named_gradients.items():
        squares[layer_of(name)] += gradient.double().pow(2).sum().item()
    return {group: math.sqrt(total) for group, total in squares.items()}


def layer_of(parameter_name: str) -> str:
    """``blocks.3.attention.qkv.weight`` -> ``layer4``; ``embed.weight`` -> ``layer0``; ``readout.bias`` ->
    ``readout``."""
    parts = parameter_name.split(".")
    if parts[0] == "blocks":
        return f"layer{int(parts[1]) + 1}"
    return "layer0" if parts[0] == "embed" else parts[0]


def attention_parameter_count(
    d_model: int,
    depth: int,
    mlp: bool,
    mlp_ratio: int,
    norm: str,
    vocab_size: int | None,
    encoding_parameters: int = 0,
) -> int:
    """The exact parameter count of :class:`posenc_exp.models.AttentionStack`, as a formula in the depth.

    With ``d = d_model``, ``r = mlp_ratio``, ``V = vocab_size`` and ``N = 1`` if ``norm != "none"`` else 0::

        per layer   4 d^2 + 4 d                      attention: W_qkv (d x 3d) + b, W_o (d x d) + b
                  + mlp * (2 r d^2 + (r + 1) d)      MLP: W_1 (d x rd) + b_1, W_2 (rd x d) + b_2
                  + N * (1 + mlp) * 2 d              a LayerNorm (gain and shift) per sublayer
        once        V d  (tokens)  or 2 d (scalars)  embedding (nn.Embedding, or Linear(1, d))
                  + V d + V (tokens) or d + 1        read-out
                  + 2 d if norm == "pre"             final LayerNorm
                  + encoding_parameters              learned table (max_positions d), T5 buckets (B H), else 0

    So the count grows *linearly* in the depth, by ``4 d^2 + 4 d`` per attention-only layer (the seed's
    claim 1 is about this slope).
    """
    d, r = d_model, mlp_ratio
    n_norms = 0 if norm == "none" else 1 + int(mlp)
    per_layer = 4 * d * d + 4 * d + int(mlp) * (2 * r * d * d + (r + 1) * d) + n_norms * 2 * d
    embed = vocab_size * d if vocab_size else 2 * d
    readout = vocab_size * d + vocab_size if vocab_size else d + 1
    final_norm = 2 * d if norm == "pre" else 0
    return depth * per_layer + embed + readout + final_norm + encoding_parameters


class Diagnostics(L.Callback):
    """Logs the depth diagnostics of ``pl_module.net`` (an ``AttentionStack``) at the start of training and
    after every training epoch, on fixed batches of ``n_examples``: the first examples of the validation
    split at the training length, and the first of the training split.

    Per layer (``layer0`` = embedded input, ``layer{i}`` = block ``i``'s output):

    - ``diag/layer{i}/rank_collapse``: :func:`rank_collapse_ratio` of the layer's output (val batch);
    - ``diag/layer{i}/position_probe``: :func:`position_probe_accuracy` of the layer's output (val batch);
    - ``diag/layer{i}/attention_entropy`` and ``.../attention_entropy/head{h}``: :func:`attention_entropy`
      of the layer's attention (softmax on only: softmax-free scores are not a distribution);
    - ``diag/layer{i}/grad_norm``: :func:`gradient_norms` of the layer's parameters; also
      ``diag/readout/grad_norm`` (and ``encoding``, ``final_norm`` where they have parameters). The gradient
      is one extra forward and backward of the training loss on the fixed *training* batch, with the
      weights of the moment, through ``torch.autograd.grad``: the optimizer's ``.grad`` buffers are
      left alone. It is the gradient the next step would see, at the same batch every epoch, so epochs and
      runs compare.

    Also ``diag/train_loss`` and ``diag/val_loss`` (the module's loss on the two fixed batches, the same
    weights) and ``diag/generalization_gap = val_loss - train_loss``; at step 0 ``diag/parameters``, the
    number of parameters. The per-layer measures need the model's internals (``AttentionStack``); for another
    network only the gradient norms (by top-level module), losses, gap and parameter count are logged.

    The TensorBoard step is the number of completed epochs: step 0 is measured at the start of training
    (the initialisation), step ``e`` after epoch ``e``. Every step's values also go to ``<run
    dir>/diagnostics.json`` (``{"parameters": n, "epochs": [{"epoch": step, "<tag>": value, ...}, ...]}``,
    written atomically), what ``python -m posenc_exp.analysis.figures`` reads. The history is part of the callback's
    state, so a resumed run continues it. With several replicas each replica is measured on its own (its
    data, its weights) into its own run, ``replica_<k>/`` and ``replica_<k>/diagnostics.json``. Without a
    TensorBoardLogger (e.g. under ``fast_dev_run``) it does nothing.
    """

    def __init__(self, n_examples: int = 128) -> None:
        self.n_examples = n_examples
        self.history: dict[int, list[dict[str, float]]] = {}  # replica -> the record of each step

    def fixed_batches(
        self, trainer: L.Trainer, replica: int = 0
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``(train_x, train_y), (val_x, val_y)``: the first ``n_examples`` of each split of replica ``replica``
        (the shared data when the replicas share it), with a replica axis of 1, on the module's device."""
        splits = trainer.datamodule.splits
        device = trainer.lightning_module.device

        def first(split: str) -> tuple[Tensor, ...]:
            index = min(replica, len(splits[split][0]) - 1)
            return tuple(t[index : index + 1, : self.n_examples].to(device) for t in splits[split])

        return first("train"), first("val")

    def measure(
        self, pl_module: L.LightningModule, net: nn.Module, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor]
    ) -> dict[str, float]:
        """Every diagnostic of the class docstring for the weights of ``net`` (one replica), as ``{tag: value}``."""
        MEASUREMENTS["count"] += 1
        values: dict[str, float] = {}
        with torch.no_grad():
            if isinstance(net, AttentionStack):
                values["diag/val_loss"] = self.measure_layers(net, pl_module.loss, val, values)
            else:
                values["diag/val_loss"] = pl_module.loss(net(val[0]), val[1]).item()
        with torch.enable_grad():
            named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
            loss = pl_module.loss(net(train[0]), train[1]).sum()  # one replica: its loss
            gradients = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        values["diag/train_loss"] = loss.item()
        values["diag/generalization_gap"] = values["diag/val_loss"] - values["diag/train_loss"]
        present = {name: g for (name, _), g in zip(named, gradients, strict=True) if g is not None}
        values.update({f"diag/{group}/grad_norm": norm for group, norm in gradient_norms(present).items()})
        return values

    @staticmethod
    def measure_layers(net: AttentionStack, loss: Callable, val: tuple[Tensor, Tensor], values: dict) -> float:
        """Add the per-layer measures of the val batch to ``values`` (one forward with internals); return
        the val loss. ``net`` is one replica: the internals' replica axis is dropped."""
        prediction, internals = net(val[0], return_internals=True)
        for index, hidden in enumerate([internals.inputs, *internals.layers]):
            values[f"diag/layer{index}/rank_collapse"] = rank_collapse_ratio(hidden[0].double()).item()
            values[f"diag/layer{index}/position_probe"] = position_probe_accuracy(hidden[0])
        for index, attention in enumerate(internals.attention, start=1):
            if not net.blocks[index - 1].attention.softmax:
                continue
            per_head = attention_entropy(attention[0].double(), net.causal).tolist()
            values[f"diag/layer{index}/attention_entropy"] = sum(per_head) / len(per_head)
            for head, entropy in enumerate(per_head):
                values[f"diag/layer{index}/attention_entropy/head{head}"] = entropy
        return loss(prediction, val[1]).item()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history:  # a resumed run has its initial records already
            self.record(trainer, pl_module, step=0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record(trainer, pl_module, step=trainer.current_epoch + 1)

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """Measure each replica, log at ``step`` (completed epochs) and rewrite its ``diagnostics.json``."""
        writers = replica_writers(trainer)
        if not writers or trainer.sanity_checking or not trainer.is_global_zero:
            return
        several = len(writers) > 1
        for index, writer in writers:
            net = replica(pl_module.net, index) if several else pl_module.net
            parameters = sum(p.numel() for p in net.parameters())
            if step == 0:
                writer.add_scalar("diag/parameters", parameters, step)
            values = self.measure(pl_module, net, *self.fixed_batches(trainer, index))
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
            history = self.history.setdefault(index, [])
            history.append({"epoch": step, **values})
            payload: dict[str, Any] = {"parameters": parameters, "epochs": history}
            write_json(Path(writer.log_dir) / DIAGNOSTICS_FILE, payload, indent=2)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): list(v) for k, v in state_dict["history"].items()}
