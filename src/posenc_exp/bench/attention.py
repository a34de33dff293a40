"""Training throughput of the attention model per positional encoding, at one fixed attention size.

``python -m posenc_exp.bench attention`` builds, for each encoding of ``conf/encoding``, exactly the network
and loss a run with ``model=attention encoding=<name>`` trains (composed from the configs, token task,
causal), and times real training steps (forward, cross-entropy, backward, Adam step) on the same random token
batches from the same seed. Warm-up steps are excluded; the encodings take turns within each repeat, so
a slow phase of a shared machine hits them all, and the median over repeats is reported.

``throughput = batch * length * steps / seconds`` (tokens per second); ``ratio = throughput /
throughput(none)``. ``randomized`` is the default wrapper (RoPE at positions drawn per step, as trained); RoPE's
``scaling`` acts only on evaluation passes past the training length, so it costs nothing here. For the bias
families (ALiBi, T5, KERPLE, FIRE) it also times the same model with the attention
written out by hand (``S = QK^T / sqrt(d) + B``, explicit masked softmax, ``A V``; ``use_sdpa = False``):
the floor that passing the bias to ``scaled_dot_product_attention`` as its float mask must at least match.
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from posenc_exp.config import compose_train
from posenc_exp.module import PosEncModule

ENCODINGS = ("none", "learned", "sinusoidal", "rope", "alibi", "t5", "xpos", "kerple", "fire", "cope", "randomized")
BIAS_FAMILIES = ("alibi", "t5", "kerple", "fire")


def build_module(encoding: str, args: argparse.Namespace) -> PosEncModule:
    """The module a run trains with ``model=attention encoding=<encoding>`` at the benchmark's size."""
    overrides = [
        "model=attention",
        "data=copy",
        f"encoding={encoding}",
        f"model.d_model={args.d_model}",
        f"model.n_heads={args.n_heads}",
        f"model.depth={args.depth}",
        "model.causal=true",
        f"data.vocab_size={args.vocab_size}",
        f"data.max_positions={args.length}",
    ]
    cfg = compose_train(overrides)
    torch.manual_seed(args.seed)
    return PosEncModule(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        task="tokens",
    ).to(args.device)


class Trainee:
    """One model under test: its module, optimizer, and a method that runs ``n`` training steps."""

    def __init__(self, name: str, module: PosEncModule, by_hand: bool) -> None:
        self.name, self.module = name, module
        for layer in module.net.blocks:
            layer.attention.use_sdpa = not by_hand
        self.optimizer = instantiate(module.hparams.optimizer, _partial_=True)(module.parameters())
        self.seconds: list[float] = []

    def steps(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Train on ``batches`` (one optimizer step each); seconds elapsed, device synchronised."""
        started = time.perf_counter()
        for x, y in batches:
            loss = self.module.loss(self.module.net(x), y).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if self.module.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m posenc_exp.bench attention", description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per encoding and repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per encoding before timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.steps, 1, args.batch, args.length)  # (step, replica, batch, length)
    x = torch.randint(0, args.vocab_size, shape, generator=generator).to(args.device)
    y = torch.randint(0, args.vocab_size, shape, generator=generator).to(args.device)
    batches = list(zip(x, y, strict=True))

    trainees = [Trainee(name, build_module(name, args), by_hand=False) for name in ENCODINGS]
    trainees += [Trainee(f"{name}_by_hand", build_module(name, args), by_hand=True) for name in BIAS_FAMILIES]
    for trainee in trainees:
        trainee.steps(batches[: args.warmup])
    for _ in range(args.repeats):
        for trainee in trainees:
            trainee.seconds.append(trainee.steps(batches))

    tokens = args.steps * args.batch * args.length
    throughput = {t.name: tokens / statistics.median(t.seconds) for t in trainees}
    size = {k: getattr(args, k) for k in ("length", "batch", "d_model", "n_heads", "depth", "threads", "device")}
    print(f"attention training throughput, {size}, median of {args.repeats} x {args.steps} steps:")
    print(f"{'encoding':>16} | {'tokens/s':>10} | {'ratio to none':>13}")
    for name, value in throughput.items():
        print(f"{name:>16} | {value:>10.0f} | {value / throughput['none']:>13.3f}")
    summary = {
        "tokens_per_s": {k: round(v, 1) for k, v in throughput.items()},
        "ratio_to_none": {k: round(v / throughput["none"], 3) for k, v in throughput.items()},
        **size,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
