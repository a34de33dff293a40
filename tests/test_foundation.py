"""Unit tests of the foundation (issue 2): every config option composes, the seed net's shapes and gradients,
one optimizer step moves the encoding, the bias identity on a trained encoding, the data module's determinism
and splits, and ChunkedBatches' coverage of every sample once per epoch.

In-process and fast; the real CLI is exercised in ``test_cli.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import fast_in_process, split
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posenc_exp import CONFIG_DIR
from posenc_exp.config import ConfigError, compose_train, validate
from posenc_exp.data import ChunkedBatches, RandomWindows
from posenc_exp.encodings import LearnedAbsolute, NoPE
from posenc_exp.models import FeedForward
from posenc_exp.module import PosEncModule
from posenc_exp.train import build


def group_options() -> list[str]:
    """``group=option`` for every ``conf/<group>/<option>.yaml`` (nested groups such as ``hydra/launcher``
    included), so an option added later is covered without touching this file."""
    return [
        f"{path.parent.relative_to(CONFIG_DIR).as_posix()}={path.stem}"
        for path in sorted(CONFIG_DIR.rglob("*.yaml"))
        if path.parent != CONFIG_DIR and not path.stem.startswith("_")  # _name.yaml: a base, not an option
    ]


def missing_sweeper_plugin(override: str) -> str | None:
    """The Hydra sweeper plugin an option selects (``override /hydra/sweeper: <name>``) when it is not
    installed; such plugins are optional extras (e.g. ``pip install -e '.[optuna]'``)."""
    group, option = override.split("=")
    text = (CONFIG_DIR / group / f"{option}.yaml").read_text()
    match = re.search(r"override /hydra/sweeper:\s*(\w+)", text)
    if match and match[1] != "basic":
        module = f"hydra_plugins.hydra_{match[1]}_sweeper"
        if importlib.util.find_spec(module) is None:
            return module
    return None


def resolved(cfg: DictConfig) -> dict:
    """Every interpolation of the job config resolved (the ``hydra`` node aside)."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(job, resolve=True)


def test_every_group_option_is_listed() -> None:
    options = group_options()
    for expected in ("data=random", "model=feedforward", "encoding=learned", "trainer=default", "experiment=toy"):
        assert expected in options


@functools.cache
def model_variants() -> list[list[str]]:
    """Each model option, and again with its ``causal`` switch on where it has one (token tasks need it)."""
    variants = []
    for model in (option for option in group_options() if option.startswith("model=")):
        variants.append([model])
        if "causal" in compose_train([model]).model:
            variants.append([model, "model.causal=true"])
    return variants


def combinations_with(override: str) -> list[list[str]]:
    """Configs to try an option in: with the defaults first, then with each model variant."""
    if override.startswith("model="):
        return [[override]]
    if override.startswith("trainer=") and not torch.cuda.is_available():
        # A GPU trainer is refused without a GPU; on the CPU it runs as many processes as given (not -1: every GPU)
        return [[override], [override, "trainer.accelerator=cpu", "trainer.devices=1"]]
    return [[override], *([override, *variant] for variant in model_variants())]


@pytest.mark.parametrize("override", group_options())
def test_every_group_option_composes(override: str, tmp_path: Path) -> None:
    """Each option composes, is the choice Hydra records, and in at least one combination (the defaults, or a
    model option it needs) passes validation and resolves every interpolation. Where the defaults cannot take
    it (a token task on the feed-forward model), it is refused with a one-line ConfigError."""
    if plugin := missing_sweeper_plugin(override):
        pytest.skip(f"optional sweeper plugin {plugin} is not installed")
    group, option = override.split("=")
    refusals = []
    for overrides in combinations_with(override):
        cfg = compose_train([*overrides, f"paths.output_dir={tmp_path}"], return_hydra_config=True)
        assert cfg.hydra.runtime.choices[group] == option
        try:
            validate(cfg)
        except ConfigError as error:
            assert "\n" not in str(error) and "=" in str(error)
            refusals.append(f"{overrides}: {error}")
            continue
        assert resolved(cfg)["paths"]["output_dir"] == str(tmp_path)
        return
    pytest.fail("no valid combination:\n" + "\n".join(refusals))


def test_shared_values_are_written_once_and_interpolated() -> None:
    values = resolved(compose_train(["data.length=7", "paths.output_dir=x"]))
    assert values["model"]["length"] == 7
    assert values["data"]["max_positions"] == 7
    assert values["encoding"]["max_positions"] == 7
    assert values["model"]["encoding"] == values["encoding"]


def test_defaults_are_the_seed_model_and_data_and_experiment_seed_its_exact_settings() -> None:
    default = compose_train()
    assert (default.data.length, default.data.xlen, default.model.n_hidden) == (10, 100, 128)
    assert default.optimizer._target_ == "torch.optim.Adam" and default.optimizer.lr == 5e-3
    assert default.data.batch_size > 1  # the fast default
    toy = compose_train(["experiment=toy"])
    assert (toy.data.batch_size, toy.trainer.max_epochs, toy.optimizer.lr) == (1, 1000, 5e-3)
    assert (toy.data.length, toy.data.xlen, toy.model.n_hidden) == (10, 100, 128)
    assert compose_train(["model.n_hidden=64"]).model.n_hidden == 64


def test_default_net_has_the_seed_shapes() -> None:
    net = instantiate(compose_train().model)
    assert isinstance(net, FeedForward) and isinstance(net.encoding, LearnedAbsolute)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "encoding.table": (1, 10, 1),  # each with a leading replica axis (one replica)
        "hidden.weight": (1, 128, 10),
        "hidden.bias": (1, 128),
        "out.weight": (1, 1, 128),
        "out.bias": (1, 1),
    }


def test_feedforward_shapes_and_gradients() -> None:
    """Output ``(1, batch)`` (one replica) in (-1, 1); every parameter gets a finite, non-zero gradient of its
    own shape; the encoding's gradient is the input's gradient summed over the batch, since ``p`` is added to
    every ``x``."""
    torch.manual_seed(0)
    net = FeedForward(length=6, n_hidden=16, encoding=LearnedAbsolute(max_positions=6))
    x = torch.randn(1, 5, 6, requires_grad=True)
    prediction = net(x)
    assert prediction.shape == (1, 5)
    assert (prediction.abs() < 1).all()
    prediction.square().sum().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name
    torch.testing.assert_close(net.encoding.table.grad.squeeze(-1), x.grad.sum(dim=1))


def test_net_accepts_any_batch_size_and_no_encoding() -> None:
    net = FeedForward(length=4, n_hidden=3, encoding=NoPE())
    for batch in (1, 7):
        assert net(torch.randn(1, batch, 4)).shape == (1, batch)


def test_encoding_changes_after_one_optimizer_step() -> None:
    """Adam's first step moves every entry with a non-zero gradient by ``lr * sign(g)`` (up to eps)."""
    cfg = compose_train()
    L.seed_everything(0, verbose=False)
    module = PosEncModule(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
    )
    optimizer = module.configure_optimizers()
    before = module.net.encoding.snapshot()
    x, y = torch.randn(1, 8, cfg.data.length), torch.randn(1, 8)
    module.loss(module(x), y).sum().backward()
    gradient = module.net.encoding.table.grad.clone()
    optimizer.step()
    after = module.net.encoding.snapshot()
    assert (gradient != 0).all()
    torch.testing.assert_close(after - before, -cfg.optimizer.lr * gradient.sign(), rtol=1e-3, atol=1e-7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[L.LightningDataModule, PosEncModule, L.Trainer]:
    """The default model fitted in-process for 3 epochs with a real Trainer (batch 5, chunks of 4 steps)."""
    cfg = fast_in_process(
        tmp_path_factory.mktemp("trained"), "trainer.max_epochs=3", "data.batch_size=5", "data.chunk_steps=4"
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    return datamodule, module, trainer


def test_training_takes_one_optimizer_step_per_mini_batch(trained) -> None:
    datamodule, module, trainer = trained
    n_train = len(split(datamodule, "train")[0])
    assert n_train == 72
    assert trainer.global_step == 3 * math.ceil(n_train / 5)
    assert math.isfinite(module.logged["train/loss"])


def test_bias_identity_holds_for_the_trained_encoding(trained) -> None:
    """``W1 (x + p) + b1 = W1 x + (W1 p + b1)``: folding the trained ``p`` into ``b1`` keeps every output."""
    datamodule, module, _ = trained
    net: FeedForward = module.net
    trained_encoding = net.encoding.snapshot()
    assert not torch.equal(trained_encoding, module.encoding_initial)
    folded = net.fold_encoding()
    assert isinstance(folded.encoding, NoPE)
    assert torch.equal(folded.hidden.weight, net.hidden.weight)
    assert not torch.equal(folded.hidden.bias, net.hidden.bias)
    assert torch.equal(net.encoding.snapshot(), trained_encoding)  # the original is left as it was
    x = torch.cat([split(datamodule, "train")[0], split(datamodule, "val")[0]]).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-6)
        shifted = x + trained_encoding.squeeze(-1).unsqueeze(1)  # (1, 1, length): p added to every window
        torch.testing.assert_close(folded.hidden(x), net.hidden(shifted), rtol=1e-5, atol=1e-5)


def random_windows(**overrides: object) -> RandomWindows:
    cfg = compose_train([f"data.{key}={value}" for key, value in overrides.items()])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


def split_tensors(datamodule: RandomWindows) -> list[torch.Tensor]:
    return [tensor for name in ("train", "val") for tensor in split(datamodule, name)]


def test_data_is_deterministic_in_its_own_seed_and_independent_of_the_init_seed() -> None:
    torch.manual_seed(1)
    first = split_tensors(random_windows(seed=3))
    torch.manual_seed(2)  # the initialisation seed must not matter
    again = split_tensors(random_windows(seed=3))
    other = split_tensors(random_windows(seed=4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert compose_train(["seed=5"]).data.seed == compose_train().data.seed


@pytest.mark.parametrize(("xlen", "length", "val_fraction"), [(100, 10, 0.2), (25, 4, 0.25), (12, 3, 0.5), (7, 6, 0.3)])
def test_split_sizes(xlen: int, length: int, val_fraction: float) -> None:
    """``xlen - length`` samples, ``round(val_fraction * n)`` of them held out for validation."""
    datamodule = random_windows(xlen=xlen, length=length, val_fraction=val_fraction)
    n = xlen - length
    (x_train, y_train), (x_val, y_val) = split(datamodule, "train"), split(datamodule, "val")
    assert len(x_val) == len(y_val) == round(val_fraction * n)
    assert len(x_train) == len(y_train) == n - len(x_val)
    assert x_train.shape[1:] == x_val.shape[1:] == (length,)
    assert y_train.dim() == 1


def test_each_target_is_the_value_right_after_its_window() -> None:
    """The windows slide by one over one series: a window shifted by its target is the next window, so all
    ``n`` samples chain into a single series of ``xlen`` values."""
    datamodule = random_windows(xlen=30, length=5)
    x = torch.cat([split(datamodule, "train")[0], split(datamodule, "val")[0]])
    y = torch.cat([split(datamodule, "train")[1], split(datamodule, "val")[1]])
    windows = {tuple(row.tolist()): i for i, row in enumerate(x)}
    successors = [windows.get((*x[i, 1:].tolist(), y[i].item())) for i in range(len(x))]
    assert successors.count(None) == 1  # only the last window has no successor
    # Walk the chain from the first window: it visits every sample once.
    first = (set(range(len(x))) - {s for s in successors if s is not None}).pop()
    order, current = [], first
    while current is not None:
        order.append(current)
        current = successors[current]
    assert sorted(order) == list(range(len(x)))


@pytest.mark.parametrize(("n", "batch_size", "chunk_steps"), [(23, 4, 3), (24, 4, 2), (5, 8, 1), (10, 1, 64)])
def test_chunked_batches_cover_every_sample_once_per_epoch(n: int, batch_size: int, chunk_steps: int) -> None:
    """Two replicas with their own data (sample values offset by 100) and their own shuffling seeds."""
    y = torch.stack([torch.arange(n), 100 + torch.arange(n)])  # (replica, sample)
    x = y.float().unsqueeze(-1).repeat(1, 1, 3)
    batches = ChunkedBatches(x, y, batch_size, chunk_steps, seeds=[7, 8])
    size = min(batch_size, n)
    orders = []
    for _ in range(3):
        seen, steps, chunks = [], 0, 0
        for chunk_x, chunk_y in batches:
            k, replicas, b = chunk_y.shape
            assert replicas == 2 and chunk_x.shape == (k, 2, b, 3)
            assert torch.equal(chunk_x[..., 0], chunk_y.float())  # inputs stay with their targets
            assert (chunk_y[:, 0] < 100).all() and (chunk_y[:, 1] >= 100).all()  # and with their replica
            assert 1 <= k <= chunk_steps
            assert b == size or (k == 1 and b == n % size)  # full batches, then one short batch alone
            seen.append(chunk_y.transpose(0, 1).flatten(1))
            steps, chunks = steps + k, chunks + 1
        order = torch.cat(seen, dim=1)
        assert sorted(order[0].tolist()) == list(range(n))
        assert sorted((order[1] - 100).tolist()) == list(range(n))
        assert steps == math.ceil(n / size)
        assert chunks == len(batches)
        orders.append(order)
    if n > 1:
        assert not torch.equal(orders[0], orders[1])  # reshuffled every epoch
        assert not torch.equal(orders[0][0], orders[0][1] - 100)  # each replica by its own seed


def test_chunked_batches_order_depends_only_on_seed_and_epoch() -> None:
    """A resumed run (fresh loader, same epoch) sees the batches an uninterrupted run would."""
    x, y = torch.randn(1, 20, 2), torch.randn(1, 20)

    def order(seed: int, epoch: int) -> torch.Tensor:
        batches = ChunkedBatches(x, y, 3, 2, seeds=[seed], epoch_of=lambda: epoch)
        return torch.cat([chunk_y.flatten() for _, chunk_y in batches])

    assert torch.equal(order(1, 5), order(1, 5))
    assert not torch.equal(order(1, 5), order(1, 4))
    assert not torch.equal(order(1, 5), order(2, 5))


def test_validation_loader_yields_the_whole_split_in_order() -> None:
    datamodule = random_windows()
    (chunk_x, chunk_y), *rest = list(datamodule.val_dataloader())
    assert rest == []
    assert torch.equal(chunk_x[0, 0], split(datamodule, "val")[0])  # (chunk, replica, ...)
    assert torch.equal(chunk_y[0, 0], split(datamodule, "val")[1])
