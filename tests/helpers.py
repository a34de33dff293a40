"""Test helpers: run the real CLI (a subprocess, or forked from this process), read its metrics and events back."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

import posenc_exp
from posenc_exp import CONFIG_DIR
from posenc_exp.config import compose_train

REPO = CONFIG_DIR.parent
# Small, fast settings for CLI runs in tests; individual tests override what they check.
FAST = ["trainer.max_epochs=3", "callbacks.progress_bar=null"]


def run_cli(*args: str, module: str = "posenc_exp.train", check: bool = True, timeout: float = 300):
    """Run `python -m <module> <args>` from the repository root, one torch thread, and return the result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )
    return result


def fork_cli(argvs: list[list[str]], workdirs: list[Path], parallel: int = 2) -> list[tuple[int, str]]:
    """The real entry point (``posenc_exp.train.main``, ``sys.argv`` set as ``python -m posenc_exp.train <argv>``
    sets it) for each argv, in a child forked from this process, ``parallel`` at a time: each in its workdir
    (made), one torch thread, stderr through a pipe, stdout discarded; ``(exit code, stderr)`` per argv.

    Every module of the package is imported here first, as a warm process has them: the entry point imports
    torch and Lightning only after the config's checks, and each child would import them again (~4 s a run
    on the 2-core machine, against ~2 s for a whole tiny run forked warm). For many runs whose results, not
    their processes, are under test; :func:`run_cli` runs a fresh interpreter."""
    from posenc_exp.train import main

    for module in pkgutil.walk_packages(posenc_exp.__path__, "posenc_exp."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    results: list[tuple[int, str] | None] = [None] * len(argvs)
    selector, running, pending = selectors.DefaultSelector(), {}, list(enumerate(argvs))
    chunks: dict[int, list[bytes]] = {}
    while pending or running:
        while pending and len(running) < parallel:
            index, argv = pending.pop(0)
            workdirs[index].mkdir(parents=True, exist_ok=True)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: the real entry point, as `python -m posenc_exp.train <argv>` runs it
                code = 1
                try:
                    os.close(read)
                    os.dup2(write, 2)
                    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                    # pytest's capture replaces sys.stdout/sys.stderr with its own objects (without -s): point
                    # them at the redirected file descriptors, where the CLI's error line must arrive
                    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                    os.chdir(workdirs[index])
                    torch.set_num_threads(1)
                    sys.argv = ["posenc_exp.train", *argv]
                    try:
                        main()
                        code = 0
                    except SystemExit as exit_:
                        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                    except BaseException:
                        import traceback

                        traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            os.close(write)
            os.set_blocking(read, False)
            selector.register(read, selectors.EVENT_READ, index)
            running[index], chunks[index] = (pid, read), []
        for key, _ in selector.select():
            index = key.data
            data = os.read(key.fd, 65536)
            if data:
                chunks[index].append(data)
                continue
            selector.unregister(key.fd)
            os.close(key.fd)
            pid, _ = running.pop(index)
            _, status = os.waitpid(pid, 0)
            results[index] = (os.waitstatus_to_exitcode(status), b"".join(chunks.pop(index)).decode(errors="replace"))
    return results  # type: ignore[return-value]


def train_run(run_dir: Path, *overrides: str, check: bool = True):
    """One training run into `run_dir` with the FAST settings."""
    return run_cli(*FAST, f"hydra.run.dir={run_dir}", *overrides, check=check)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def read_events(run_dir: Path):
    """TensorBoard's own reader over the event files of one run directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def hparams_session(run_dir: Path) -> dict[str, object]:
    """The hyperparameters of the run's HParams session (its start info)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = read_events(run_dir).PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    assert not any(d.HasField("experiment") for d in data.values()), "TensorBoard builds the experiment from all runs"
    start = next(d.session_start_info for d in data.values() if d.HasField("session_start_info"))
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


# A small real sweep: encoding x width x seed, where width 0 is a bad value only some jobs have (4 of 12 jobs
# fail, 8 finish: 2 seeds in each of 4 cells). Run with the joblib launcher, 2 jobs at once.
SMALL_SWEEP = [*FAST, "encoding=none,learned", "model.n_hidden=0,4,8", "seed=0,1"]


def split(datamodule: Any, name: str, replica: int = 0) -> tuple[Any, Any]:
    """``(x, y)`` of one replica of a set-up data module's split (splits carry a leading replica axis)."""
    x, y = datamodule.splits[name]
    return x[replica], y[replica]


def in_parallel(*runs: Callable[[], subprocess.CompletedProcess]) -> list[subprocess.CompletedProcess]:
    """Independent CLI runs, two at a time (each is mostly start-up on one core); results in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda run: run(), runs))


def fast_in_process(tmp_path: Path, *overrides: str) -> DictConfig:
    """A composed config for an in-process fit: no logger, no callbacks, no progress bar, into ``tmp_path``."""
    return compose_train(
        [
            "~logger",
            "callbacks.encoding_snapshot=null",
            "callbacks.progress_bar=null",
            "callbacks.model_checkpoint=null",
            "callbacks.last_checkpoint=null",
            "+trainer.enable_checkpointing=false",
            "trainer.enable_progress_bar=false",
            f"paths.output_dir={tmp_path}",
            *overrides,
        ]
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, payload: dict | None = None) -> object:
    """GET (or POST ``payload``, with TensorBoard's XSRF header) and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"} if data else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def tensorboard_server(logdir: Path, runs: set[str], log: Path) -> Iterator[str]:
    """A real ``tensorboard --logdir <logdir>`` on 127.0.0.1, up once it serves ``runs``; yields the base URL of
    its data API, and stops the server (its output in ``log``) on the way out."""
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    command = [str(tensorboard), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}/data"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline, served = time.monotonic() + 60, []
            while set(served) != runs:
                assert process.poll() is None, "tensorboard exited"
                assert time.monotonic() < deadline, f"tensorboard did not serve {sorted(runs)} within 60 s"
                time.sleep(0.5)
                try:
                    served = get_json(f"{base}/runs")
                except OSError:
                    continue
            time.sleep(1)  # let the first load finish
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def attention_three_ways(model: Any, x: Any) -> Any:
    """Run an ``AttentionStack`` through SDPA, through the explicit attention (with internals) and by hand
    (``use_sdpa`` off), assert the three outputs agree, and return the internals."""
    with torch.no_grad():
        fused = model(x)
        explicit, internals = model(x, return_internals=True)
        for block in model.blocks:
            block.attention.use_sdpa = False
        by_hand = model(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, by_hand, atol=1e-5, rtol=1e-5)
    return internals
