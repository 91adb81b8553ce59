"""DDP on CPU: torchrun with 2 gloo processes reproduces one process with the same global batch.

Reference: 1 process, batch 8, gradient accumulation 2 (global batch 16). DDP: 2 processes, batch 8 each,
no accumulation. Both see the same micro-batches per optimizer step (the length-bucketed sampler gives rank r
batches r::2 of the same global list), dropout is off, so losses and weights agree up to float summation
order. Tolerance: max abs weight difference < 1e-5 after 10 steps, logged losses within 1e-5 (on x86 CPU the
two runs come out bit-identical: halving before accumulation and averaging after the all-reduce are exact).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HERE = Path(__file__).parent
CHILD = HERE / "_ddp_child.py"
WEIGHT_TOL = 1e-5
LOSS_TOL = 1e-5


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))
    }
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    return env


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for part in ("bert", "head"):
        out.update(
            {f"{part}.{k}": v for k, v in load_file(run / "model" / part / "model.safetensors").items()}
        )
    return out


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, str(CHILD), str(single), "2"])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(CHILD),
            str(ddp),
            "1",
        ]
    )
    logs = [json.loads(Path(f"{ddp}.writes.rank{r}.json").read_text()) for r in (0, 1)]
    assert [(log["world_size"], log["backend"]) for log in logs] == [(2, "gloo"), (2, "gloo")]
    ref_log = json.loads(Path(f"{single}.writes.rank0.json").read_text())
    assert logs[0]["steps"] == logs[1]["steps"] == ref_log["steps"] == 10
    # only rank 0 writes: model, checkpoints, history, metrics, predictions
    assert logs[1]["written"] == []
    names = {Path(p).name for p in logs[0]["written"]}
    assert {
        "model",
        "history.csv",
        "metrics.json",
        "valid_predictions.csv",
        "test_predictions.csv",
        "config.yaml",
        "step-4",
        "step-8",
    } <= names
    # weights after 10 steps
    a, b = _weights(single), _weights(ddp)
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst < WEIGHT_TOL, f"max abs weight difference {worst:.2e}"
    # the logged (global) training loss of every step and the validation loss
    ha, hb = pd.read_csv(single / "history.csv"), pd.read_csv(ddp / "history.csv")
    np.testing.assert_allclose(hb["train_loss"].dropna(), ha["train_loss"].dropna(), atol=LOSS_TOL)
    np.testing.assert_allclose(hb["val_loss"].dropna(), ha["val_loss"].dropna(), atol=LOSS_TOL)
    ma, mb = json.loads((single / "metrics.json").read_text()), json.loads((ddp / "metrics.json").read_text())
    assert mb["valid"]["accuracy"] == pytest.approx(ma["valid"]["accuracy"])
    pd.testing.assert_frame_equal(
        pd.read_csv(single / "test_predictions.csv"), pd.read_csv(ddp / "test_predictions.csv")
    )
