"""On a CUDA machine: every encoding trains through the real CLI on the GPU. Skipped where there is none.

Run there with ``python -m pytest tests/test_gpu.py``; CI has no GPU and skips these.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_metrics, train_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ENCODINGS = ["none", "learned", "sinusoidal", "rope", "alibi", "t5"]
GPU = ["trainer.accelerator=gpu", "trainer.max_epochs=2"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_attention_trains_on_the_gpu(tmp_path: Path, encoding: str) -> None:
    run_dir = tmp_path / encoding
    train_run(run_dir, *GPU, "model=attention", "model.causal=true", "data=copy", f"encoding={encoding}")
    metrics = read_metrics(run_dir)
    assert metrics["epochs"] == 2
    assert all(torch.isfinite(torch.tensor(v["loss"])) for v in metrics["eval"].values())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())


def test_seed_model_trains_on_the_gpu(tmp_path: Path) -> None:
    train_run(tmp_path / "run", *GPU)
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics["encoding_final"]) == 10
    assert metrics["encoding_final"] != metrics["encoding_initial"]
