"""Child process for the SIGKILL/resume test: trains a tiny model on the demo data with slow batches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_bert_config  # noqa: E402

from bertkit import create_bert_with_head, load_tokenizer  # noqa: E402
from bertkit.config import TrainingConfig  # noqa: E402
from bertkit.data import TokenizedDataset, analyze_dataset, prepare_frame, read_table, tokenize_texts  # noqa: E402
from bertkit.data.tokenize import Collator  # noqa: E402
from bertkit.training import Trainer  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "bertkit" / "data" / "examples" / "demo_reviews.csv"


class SlowCollator(Collator):
    """Sleeps per batch so that the parent can kill the run mid-epoch."""

    def __init__(self, delay: float) -> None:
        super().__init__(0)
        self.delay = delay

    def __call__(self, items):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().__call__(items)


def main(out: str, resume: bool, delay: float) -> None:
    torch.manual_seed(0)
    tok = load_tokenizer("minilm")
    df = read_table(DEMO).iloc[:96]
    profile = analyze_dataset(df)
    prep = prepare_frame(df, profile)
    ds = TokenizedDataset(tokenize_texts(tok, prep.texts_a, max_length=32), prep.targets)
    model = create_bert_with_head(
        num_labels=2,
        bert_config=tiny_bert_config("bert"),
        tokenizer=tok,
        label_names=profile.label_names,
        head_config={"dropout_prob": 0.1},
    )
    cfg = TrainingConfig(
        epochs=2,
        batch_size=8,
        checkpoint_steps=3,
        keep_checkpoints=2,
        progress=False,
        learning_rate=1e-3,
        calibrate=False,
    )
    Trainer(model, out, cfg, collator=SlowCollator(delay)).train(
        ds, None, resume_from="auto" if resume else None
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "resume", float(sys.argv[3]))
