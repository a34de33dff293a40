"""The LightningModule: builds the network from a primitive config and trains it on chunks of batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor, nn

from posenc_exp.data.tokens import IGNORE
from posenc_exp.errors import NonFiniteLossError
from posenc_exp.loggers import ReplicaLogger, replica_tag_suffix
from posenc_exp.models.layers import broadcast_replicas, stack_replicas
from posenc_exp.perplexity import lm_metrics

# Lightning's hooks around each manual optimizer step: what :meth:`PosEncModule.plain_steps` checks is unused.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
# How PosEncModule.log_values calls self.log: once per epoch, reduced over the ranks, into trainer.callback_metrics
# only (PosEncModule.write_logged writes the loggers).
FOR_CALLBACKS = {"on_step": False, "on_epoch": True, "logger": False, "add_dataloader_idx": False, "sync_dist": True}


def build_net(net: dict[str, Any], replicas: int, seed: int) -> nn.Module:
    """``replicas`` networks of config ``net`` stacked on the replica axis, replica ``k`` initialised as an
    ordinary run with seed ``seed + k`` (built under that seed, without touching the global RNG)."""
    models = []
    for k in range(replicas):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            models.append(instantiate(net))
    return stack_replicas(models)


class PosEncModule(L.LightningModule):
    """Wraps a network built with ``hydra.utils.instantiate(net)``.

    The init arguments are plain dicts (the resolved ``model`` and ``optimizer`` configs), so checkpoints
    hold only primitives and load with ``torch.load(path, weights_only=True)``.

    Replicas: the network holds ``replicas`` models on a leading replica axis (``posenc_exp.models.layers``),
    replica ``k`` initialised as the ordinary run with seed ``seed + k``, all trained by one optimizer step per
    mini-batch on the sum of their losses (each replica's gradient is its own loss's). Every loss and metric
    is computed per replica, ``(R,)``; the run's ``train/loss``, ``val/<metric>`` are the means over the
    replicas that are still finite, and with ``R > 1`` each replica's value goes under the plain tag to its own
    TensorBoard run (``replica_<k>/``) and, as ``<tag>/replica_<k>``, to :attr:`logged` (:meth:`log_values`,
    :meth:`write_logged`). A replica whose training loss becomes non-finite is dropped from the means and
    reported; the run stops only when none is left.

    Logging: every value is written once per epoch, at the epoch as TensorBoard's step, by :meth:`write_logged`
    (one ``(tags, R)`` tensor, one host sync), not by Lightning's loggers: each ``self.log`` costs about 0.5 ms
    (Lightning walks and copies the metric's state at every call), and a toy epoch logged eight values, a
    Chomsky task's over thirty. ``self.log`` (``logger=False``) carries only the values a callback monitors
    (``callbacks.model_checkpoint.monitor``: ``val/loss``), into ``trainer.callback_metrics`` where Lightning's
    callbacks read them; every value is in :attr:`logged`.

    Training uses manual optimization over a chunk of mini-batches (see ``posenc_exp.data.base``): one
    optimizer step per mini-batch, loss ``MSE(f(x), y)`` for ``task="regression"`` and the token-mean
    cross-entropy over targets other than ``IGNORE`` for ``task="tokens"``. The loss stays on the device
    during the chunk; a single finiteness check per chunk is the only host sync. Under DDP every logged value
    is averaged over the ranks once, at epoch end.

    Validation: one dataloader per length of ``eval_lengths`` (the task's unit: window values or items),
    logged as ``val/<metric>@len=<n>``; the training length ``train_length`` is also logged without the
    suffix (``val/loss`` is what checkpoints monitor). Metrics: ``loss``; with a known ``loss_floor`` (the
    best achievable loss), ``loss_gap = loss - loss_floor``; for token tasks ``acc``, the accuracy over
    answer tokens, and ``seq_acc``, the share of sequences whose answer tokens are all right (torchmetrics'
    micro accuracy and exact match, ignoring ``IGNORE``); for language modelling (``task="lm"``, every position
    a target) ``bpb`` and ``ppl``, and ``position_loss``, the loss at each position of the longest evaluation
    windows (see :mod:`posenc_exp.perplexity`). With ``score`` (the Chomsky tasks, :mod:`posenc_exp.data.chomsky`),
    ``val/score``: ``acc`` averaged over the evaluation lengths beyond ``train_length``. A training chunk may also be
    a sequence of mini-batches of different widths (:class:`posenc_exp.data.base.FreshBatches`).

    Resuming (``trainer.fit(..., ckpt_path=...)``): the optimizer's settings are this module's, not the
    checkpoint's (a resumed run with another ``optimizer.lr`` trains at that rate; its moments are restored);
    :meth:`differences` lists what makes a checkpoint another experiment's (model, encoding or task).
    ``data`` is the task's resolved config, kept in the checkpoint for that comparison.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        task: str = "regression",
        train_length: int | None = None,
        eval_lengths: list[int] | None = None,
        loss_floor: float | None = None,
        data: dict[str, Any] | None = None,
        replicas: int = 1,
        seed: int = 0,
        score: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.replicas, self.seed = replicas, seed
        self.net: nn.Module = build_net(net, replicas, seed)
        self.register_buffer("alive", torch.ones(replicas, dtype=torch.bool))
        self.everyone = True  # alive.all(), kept on the host: set by drop_non_finite and on_load_checkpoint
        self.encoding_initial: Tensor | None = None
        self.task, self.loss_floor = task, loss_floor
        self.train_length = train_length
        self.eval_lengths = list(eval_lengths) if eval_lengths else []
        self.position_loss: Tensor | None = None  # language modelling: (replica, position) loss, longest length
        self.score = score  # log val/score (on_validation_epoch_end)
        self.beyond: list[Tensor] = []  # the epoch's acc (R,) at each evaluation length beyond the training length
        self.pending: dict[str, tuple[Tensor, float]] = {}  # tag -> (weighted sum (R,), weight), not yet written
        # tag -> the value last written (metrics.json): the run's (the replicas' mean) and "<tag>/replica_<k>"
        self.logged: dict[str, float] = {}
        self.monitored: set[str] = set()  # the tags the trainer's callbacks monitor (on_fit_start)

    def metric_names(self) -> list[str]:
        """The validation metrics, per length: ``loss`` (+ ``loss_gap``); ``loss``, ``acc``, ``seq_acc`` (token
        tasks); ``loss``, ``bpb``, ``ppl`` (language modelling, :func:`posenc_exp.perplexity.lm_metrics`)."""
        if self.task == "tokens":
            return ["loss", "acc", "seq_acc"]
        if self.task == "lm":
            return ["loss", "bpb", "ppl"]
        return ["loss", "loss_gap"] if self.loss_floor is not None else ["loss"]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Each replica's loss, ``(R,)``: :meth:`step_loss` with its replica axis."""
        return self.step_loss(prediction, target).reshape(-1)

    def step_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """What a training step backpropagates from: each replica's loss, ``(R,)``, the MSE or the token-mean
        cross-entropy over targets other than ``IGNORE``; ``target`` ``(R or 1, batch, ...)`` is shared by the
        replicas when its replica axis is 1. One replica's MSE stays 0-d: a ``(1,)`` view of it would add a
        node to each step's backward graph (10-12 us of the seed model's ~405 us step at batch size 1 on the
        2-core CPU, 2026-12-04)."""
        target = broadcast_replicas(target, prediction.shape[0])
        if self.task in ("tokens", "lm"):
            per_token = nn.functional.cross_entropy(
                prediction.flatten(0, -2), target.flatten(), ignore_index=IGNORE, reduction="none"
            ).view(target.shape[0], -1)
            return per_token.sum(dim=1) / (target != IGNORE).flatten(1).sum(dim=1)
        if prediction.shape[0] == 1:  # the same value and gradient, bit for bit, from one fused reduction: ~2 % of
            # the seed model's step at batch size 1 (15-20 us of ~770 us, 2-core CPU, 2026-12-04)
            return nn.functional.mse_loss(prediction, target)
        return nn.functional.mse_loss(prediction, target, reduction="none").flatten(1).mean(dim=1)

    def log_values(self, name: str, values: Tensor, batch_size: int = 1) -> None:
        """Log each replica's value of ``name``, ``(R,)``: over an epoch the mean weighted by ``batch_size``, as
        Lightning's, written by :meth:`write_logged`. A tag a callback monitors (:attr:`monitored`) also goes
        through ``self.log`` (reduced over the ranks, not to the loggers), as the mean over the finite replicas."""
        if name in self.monitored:
            # Masked arithmetic rather than values[alive]: boolean indexing would sync with the host on every log.
            mean = torch.where(self.alive, values, 0.0).sum() / self.alive.sum()
            self.log(name, mean, batch_size=batch_size, **FOR_CALLBACKS)
        weight = float(batch_size)
        total, so_far = self.pending.get(name, (torch.zeros_like(values, dtype=torch.float), 0.0))
        self.pending[name] = (total + values.detach().float() * weight, so_far + weight)

    def write_logged(self) -> None:
        """Write the values logged since the last call, at the epoch as step: the means over the finite replicas
        to the run's loggers and, with several replicas, each replica's values under the plain tags to its own
        TensorBoard run (:class:`posenc_exp.loggers.ReplicaLogger`); all of them to :attr:`logged` (the replicas'
        as ``<tag>/replica_<k>``), for ``metrics.json``. One ``(tags, R)`` tensor, averaged over the ranks under
        DDP, and one host sync."""
        pending, self.pending = self.pending, {}
        if not pending or self.trainer.sanity_checking:
            return
        means = torch.stack([total / weight for total, weight in pending.values()])  # (tags, R)
        if self.trainer.world_size > 1:
            means = self.trainer.strategy.reduce(means, reduce_op="mean")
        run = torch.where(self.alive, means, 0.0).sum(dim=1, keepdim=True) / self.alive.sum()
        table = torch.cat([means, run], dim=1).tolist()  # the one host sync: each tag's R values, then their mean
        rows = {name: row[:-1] for name, row in zip(pending, table, strict=True)}
        values = {name: row[-1] for name, row in zip(pending, table, strict=True)}
        self.logged.update(values)
        replica_loggers = {}
        for logger in self.trainer.loggers:
            if isinstance(logger, ReplicaLogger):
                replica_loggers[logger.replica] = logger
            else:
                logger.log_metrics(values, step=self.current_epoch)
        if self.replicas == 1:
            return
        for k in range(self.replicas):
            own = {name: row[k] for name, row in rows.items()}
            self.logged.update({f"{name}{replica_tag_suffix(k)}": value for name, value in own.items()})
            if k in replica_loggers:
                replica_loggers[k].log_replica(own, step=self.current_epoch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return instantiate(self.hparams.optimizer, _partial_=True)(self.parameters())

    def on_fit_start(self) -> None:
        self.monitored = {c.monitor for c in self.trainer.callbacks if getattr(c, "monitor", None)}
        if self.encoding_initial is None:
            self.encoding_initial = self.net.encoding.snapshot()

    def on_train_epoch_start(self) -> None:
        """The last epoch is validated whatever ``trainer.check_val_every_n_epoch`` says (Lightning validates only
        the multiples of it): ``val_loss`` in ``metrics.json`` is the final model's, and a run shorter than the
        interval is validated too. Lightning reads the interval at each epoch's end; this sets it to 1 for the last.
        """
        trainer = self.trainer
        if self.current_epoch == trainer.max_epochs - 1:
            trainer.check_val_every_n_epoch = 1

    def plain_steps(self) -> bool:
        """Whether the optimizer steps may skip Lightning's per-step wrappers: one device, full precision, no
        profiler, and no callback or module method on the hooks around a step (:data:`STEP_HOOKS`, ``backward``).
        Then ``manual_backward`` and ``LightningOptimizer.step`` would only call empty hooks around
        ``loss.backward()`` and the torch optimizer's ``step()``, costing about as much as a tiny model's step."""
        trainer = self.trainer
        if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
            return False
        if not isinstance(trainer.profiler, PassThroughProfiler):
            return False
        hooked = [(type(c), L.Callback, h) for c in trainer.callbacks for h in STEP_HOOKS]
        hooked += [(type(self), L.LightningModule, h) for h in (*STEP_HOOKS, "backward")]
        return all(getattr(cls, h) is getattr(base, h) for cls, base, h in hooked)

    def training_step(self, chunk: tuple[Tensor, Tensor], batch_idx: int) -> None:
        plain = self.plain_steps()
        optimizer = self.optimizers(use_pl_optimizer=not plain)
        backward = Tensor.backward if plain else self.manual_backward
        total, ones = torch.zeros(self.replicas, device=self.device), torch.ones(self.replicas, device=self.device)
        # A stacked chunk is unbound once (one operation, not one per step); a sequence of batches is as it is.
        xs, ys = (chunk[0].unbind(), chunk[1].unbind()) if isinstance(chunk[0], Tensor) else chunk
        for x, y in zip(xs, ys, strict=True):
            losses = self.step_loss(self.net(x), y)  # (R,), or one replica's 0-d loss
            optimizer.zero_grad(set_to_none=True)
            # A replica that became non-finite is out: its (non-finite) loss no longer reaches the others. While
            # every replica is in, the mask is the identity and is skipped. Backward from the replicas' losses with
            # a gradient of ones is the backward of their sum, an operation less per step.
            backward(losses if self.everyone else torch.where(self.alive, losses, 0.0), ones if losses.ndim else None)
            optimizer.step()
            total.add_(losses.detach(), alpha=y.shape[1])
        if plain:  # what LightningOptimizer.step counts: trainer.global_step, the optimizer steps taken
            self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.increment_by(len(chunk[1]))
        n = sum(y.shape[1] for y in chunk[1])  # a stacked chunk or a sequence of batches of any widths
        if not torch.isfinite(torch.where(self.alive, total, 0.0)).all():  # the chunk's one host sync
            self.drop_non_finite(total)
        self.log_values("train/loss", total / n, batch_size=n)

    def drop_non_finite(self, total: Tensor) -> None:
        """Drop the replicas whose loss is no longer finite; :class:`NonFiniteLossError` when none is left."""
        where = f"at epoch {self.current_epoch}, step {self.global_step}"
        if self.replicas == 1 or not torch.isfinite(total).any():
            raise NonFiniteLossError(
                f"training loss became non-finite {where}; lower optimizer.lr{self.kept_checkpoint()}"
            )
        dropped = (~torch.isfinite(total) & self.alive).nonzero().flatten().tolist()
        self.alive[dropped] = False
        self.everyone = False
        seeds = ", ".join(f"{k} (seed={self.seed + k})" for k in dropped)
        print(f"warning: replica {seeds}: training loss became non-finite {where}; the other replicas go on")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch[0][0], batch[1][0]
        length = self.eval_lengths[dataloader_idx] if self.eval_lengths else self.train_length
        prediction = self.net(x)
        if self.task == "lm":
            metrics, position_loss = lm_metrics(prediction, broadcast_replicas(y, prediction.shape[0]))
            if length == self.eval_lengths[-1]:
                self.position_loss = position_loss
        else:
            metrics = {"loss": self.loss(prediction, y)}
        loss = metrics["loss"]
        if self.loss_floor is not None:
            metrics["loss_gap"] = loss - self.loss_floor
        if self.task == "tokens":
            metrics.update(token_accuracies(prediction, broadcast_replicas(y, prediction.shape[0])))
        if self.score and length > (self.train_length or 0):
            self.beyond.append(metrics["acc"])
        n = y.shape[1]
        for name, value in metrics.items() if self.eval_lengths else ():
            self.log_values(f"val/{name}@len={length}", value, batch_size=n)
        if length != self.train_length:
            return  # extrapolation may legitimately overflow; only the training length stops the run
        for name, value in metrics.items():
            if name != "loss":
                self.log_values(f"val/{name}", value, batch_size=n)
        # Checked before the epoch's checkpoints are written: finite weights can still overflow in the forward
        # pass, and last.ckpt must stay the last state that evaluates to a finite loss.
        if not torch.isfinite(torch.where(self.alive, loss, 0.0)).all():
            if self.replicas == 1:
                raise NonFiniteLossError(
                    f"validation loss became non-finite at epoch {self.current_epoch}; lower optimizer.lr"
                    f"{self.kept_checkpoint()}"
                )
            self.drop_non_finite(torch.where(torch.isfinite(loss), 0.0, loss))
        self.log_values("val/loss", loss, batch_size=n)

    def on_validation_epoch_start(self) -> None:
        self.beyond = []

    def on_train_epoch_end(self) -> None:
        self.write_logged()

    def on_validation_epoch_end(self) -> None:
        """``val/score`` (with ``score``): the per-token accuracy ``acc`` averaged, with equal weights, over the
        evaluation lengths beyond the training length: the score of Delétang et al. (ICLR 2023, Section 4)."""
        if self.beyond:
            self.log_values("val/score", torch.stack(self.beyond).mean(dim=0))
        self.beyond = []
        self.write_logged()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["encoding_initial"] = self.encoding_initial

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the initial encoding, and put this module's optimizer settings (``lr``, ``betas``, ...) into
        the checkpoint's optimizer state, which Lightning restores after this hook: its moments are kept, its
        settings are the ones the resumed run was started with."""
        self.encoding_initial = checkpoint.get("encoding_initial")
        alive = checkpoint.get("state_dict", {}).get("alive")
        self.everyone = alive is None or bool(alive.all())
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in self.hparams.optimizer.items()}
        for state in checkpoint.get("optimizer_states", []):
            for group in state.get("param_groups", []):
                group.update({k: v for k, v in settings.items() if k in group})

    def kept_checkpoint(self) -> str:
        """For the non-finite error: the newest checkpoint this run wrote or resumed from, with how to resume
        from it, or that there is none (a run that diverges in its first epoch has written no checkpoint)."""
        trainer = self._trainer
        paths = [trainer.ckpt_path] if trainer is not None and trainer.ckpt_path else []
        for callback in trainer.checkpoint_callbacks if trainer is not None else []:
            paths += [callback.last_model_path, callback.best_model_path]
        kept = [Path(p) for p in paths if p and Path(p).is_file()]
        if not kept:
            return "; no checkpoint was written before the loss diverged"
        newest = max(kept, key=lambda p: p.stat().st_mtime)
        return f" and resume from the last good checkpoint: ckpt_path={newest}"

    def differences(self, hparams: dict[str, Any]) -> list[str]:
        """What makes a checkpoint with init arguments ``hparams`` another experiment's: each model
        (``model.*``), encoding (``encoding.*``) or task (``data._target_``) setting that differs, as
        ``key: <checkpoint's> here <this module's>``, and the number of replicas. The optimizer and the task's
        other settings may change."""

        def flat(config: dict[str, Any] | None) -> dict[str, Any]:
            net = dict((config or {}).get("net") or {})
            encoding = net.pop("encoding", None) or {}
            keys = {f"model.{k}": v for k, v in net.items()} | {f"encoding.{k}": v for k, v in encoding.items()}
            task = {"data._target_": ((config or {}).get("data") or {}).get("_target_")}
            return keys | task | {"replicas": (config or {}).get("replicas", 1)}

        theirs, ours = flat(hparams), flat(dict(self.hparams))
        if theirs["data._target_"] is None:  # a checkpoint from before the task was recorded
            theirs["data._target_"] = ours["data._target_"]
        return [
            f"{key}: {theirs.get(key)} there, {ours.get(key)} here"
            for key in sorted(theirs.keys() | ours.keys())
            if theirs.get(key) != ours.get(key)
        ]


def token_accuracies(prediction: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per replica, ``(R,)`` each, from logits ``(R, B, L, V)`` and targets ``(R, B, L)``: ``acc``, the accuracy
    over answer tokens (targets other than ``IGNORE``), and ``seq_acc``, the share of sequences whose answer
    tokens are all right (what torchmetrics calls micro accuracy and exact match with ``ignore_index``)."""
    answer = target != IGNORE
    right = prediction.argmax(dim=-1) == target
    acc = (right & answer).flatten(1).sum(dim=1) / answer.flatten(1).sum(dim=1)
    seq_acc = (right | ~answer).all(dim=-1).float().mean(dim=1)
    return {"acc": acc, "seq_acc": seq_acc}
