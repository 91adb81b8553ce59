"""Child of test_distributed: one `bertkit train` run (train_run) on the demo data, single process or DDP.

Usage: python _ddp_child.py RUN_DIR GRAD_ACCUMULATION  (under torchrun for the DDP run). Every file this
process puts in place (``os.replace``: atomic writes, model folders, checkpoints) is logged to
``RUN_DIR.writes.rank<R>.json`` so the parent can check that only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_bert_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"
DEMO_TEST = ROOT / "bertkit" / "data" / "examples" / "demo_reviews_test.csv"


def main() -> None:
    out, accumulation = Path(sys.argv[1]), int(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    written: list[str] = []
    real_replace = os.replace

    def tracking_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        written.append(str(dst))
        real_replace(src, dst, *args, **kwargs)

    os.replace = tracking_replace  # type: ignore[assignment]

    import torch

    from bertkit.runconfig import build_run_config
    from bertkit.training.run import train_run

    torch.set_num_threads(1)
    torch.manual_seed(0)  # train_run does not seed the model's initialisation; both runs must start equal
    bert = {**tiny_bert_config("bert"), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    cfg = build_run_config(
        "default",
        overrides={
            "data": {"max_train_samples": 160},
            "model": {"backbone": None, "bert_options": bert, "head_options": {"dropout_prob": 0.0}},
            "training": {
                "epochs": 1,
                "batch_size": 8,
                "gradient_accumulation_steps": accumulation,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.1,
                "max_length": 32,
                "progress": False,
                "device": "cpu",
                "num_threads": 1,
                "checkpoint_steps": 4,
                "log_every": 1,
                "seed": 7,
                # DDP reduces dense gradients, so sparse (lazy) embedding updates are off there: the
                # single-process reference must use the same dense AdamW to be comparable
                "sparse_embedding_updates": "off",
            },
        },
    )
    result = train_run(DEMO, out, cfg, test_path=DEMO_TEST, write_report=False)
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    backend = dist.get_backend() if world > 1 else None
    log = {
        "rank": rank,
        "world_size": world,
        "backend": backend,
        "written": written,
        "steps": result.train_result.global_step,
    }
    Path(f"{out}.writes.rank{rank}.json").write_text(json.dumps(log))


if __name__ == "__main__":
    main()
