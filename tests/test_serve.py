"""HTTP serving: /predict (single, batch, pairs), /health, /metadata, OpenAPI, 4xx/503, micro-batching."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config

from bertkit import create_bert_with_head
from bertkit.data import analyze_dataset, read_table
from bertkit.inference import load_predictor
from bertkit.inference.serve import MicroBatcher, QueueFullError, create_app

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"
TEXTS = ["great food and friendly staff", "terrible, it broke after a day", "ok", "not bad at all, really"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: Any, tokenizer: Any) -> Path:
    profile = analyze_dataset(read_table(DEMO))
    torch.manual_seed(0)
    model = create_bert_with_head(
        num_labels=2,
        label_names=profile.label_names,
        bert_config=tiny_bert_config("bert"),
        tokenizer=tokenizer,
        metadata={"data": profile.to_dict(), "max_length": 32},
    )
    folder = tmp_path_factory.mktemp("serve") / "model"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Any:
    with TestClient(create_app(model_dir, max_batch_size=8, max_wait_ms=20)) as c:
        yield c


def test_predict_single_batch_and_pairs(client: Any, model_dir: Path) -> None:
    expected = load_predictor(model_dir).predict(TEXTS)
    res = client.post("/predict", json={"text": TEXTS[0]})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["prediction"] == expected[0]
    assert set(body["probabilities"]) == {"negative", "positive"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
    res = client.post("/predict", json={"texts": TEXTS})
    assert res.status_code == 200
    assert [p["prediction"] for p in res.json()["predictions"]] == expected
    res = client.post("/predict", json={"text_a": "a question", "text_b": "an answer"})
    assert res.status_code == 200 and res.json()["prediction"] in ("negative", "positive")
    res = client.post("/predict", json={"pairs": [["a", "b"], ["c", "d"]]})
    assert res.status_code == 200 and len(res.json()["predictions"]) == 2


def test_health_metadata_and_openapi(client: Any) -> None:
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["task"] == "binary" and meta["labels"] == ["negative", "positive"]
    assert meta["runtime"] == "pytorch" and meta["head_type"] == "binary_classification"
    schema = client.get("/openapi.json").json()
    assert "/predict" in schema["paths"] and "PredictRequest" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "exactly one of"),
        ({"text": "a", "texts": ["b"]}, "exactly one of"),
        ({"texts": []}, "texts"),
        ({"text": 3}, "text"),
        ({"text_a": "only one side"}, "both text_a and text_b"),
        ({"text": "a", "colour": "red"}, "colour"),
    ],
)
def test_invalid_requests_get_clear_422(client: Any, body: dict, fragment: str) -> None:
    res = client.post("/predict", json=body)
    assert res.status_code == 422
    assert fragment in res.json()["error"], res.json()


def test_too_many_texts_is_413(model_dir: Path) -> None:
    with TestClient(create_app(model_dir, max_texts=3)) as c:
        assert c.post("/predict", json={"texts": ["a"] * 4}).status_code == 413


def test_concurrent_requests_are_micro_batched_and_all_answered(client: Any, model_dir: Path) -> None:
    expected = dict(zip(TEXTS, load_predictor(model_dir).predict(TEXTS)))
    before = client.get("/health").json()
    jobs = [TEXTS[i % len(TEXTS)] for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda t: client.post("/predict", json={"text": t}), jobs))
    assert all(a.status_code == 200 for a in answers)
    assert [a.json()["prediction"] for a in answers] == [expected[t] for t in jobs]
    after = client.get("/health").json()
    assert after["texts_run"] - before["texts_run"] == 24
    assert after["batches_run"] - before["batches_run"] < 24  # some requests shared a batch


def test_full_queue_answers_503_and_batcher_recovers() -> None:
    gate = threading.Event()

    def slow(texts_a: list[str], texts_b: list[str] | None) -> list[dict[str, Any]]:
        gate.wait(5)
        return [{"prediction": t} for t in texts_a]

    async def scenario() -> tuple[list[Any], list[dict[str, Any]]]:
        batcher = MicroBatcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=2)
        tasks = [asyncio.ensure_future(batcher.submit(["t0"]))]
        await asyncio.sleep(0.3)  # the worker took it and waits inside slow()
        tasks += [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(1, 6)]
        await asyncio.sleep(0.1)  # one running, two queued, three refused
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        after = await batcher.submit(["again"])
        await batcher.stop()
        return results, after

    results, after = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, QueueFullError)]
    served = [r for r in results if isinstance(r, list)]
    assert len(refused) == 3 and len(served) == 3
    assert after == [{"prediction": "again"}]


def test_503_over_http(model_dir: Path) -> None:
    app = create_app(model_dir, max_batch_size=1, max_wait_ms=0, max_queue=1)
    gate = threading.Event()
    original = app.state.batcher.run

    def slow(texts_a: list[str], texts_b: list[str] | None) -> list[dict[str, Any]]:
        gate.wait(5)
        return original(texts_a, texts_b)

    app.state.batcher.run = slow
    with TestClient(app) as c, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(c.post, "/predict", json={"text": "x"}) for _ in range(6)]
        time.sleep(0.5)
        gate.set()
        codes = sorted(f.result().status_code for f in futures)
    assert 503 in codes and 200 in codes
    assert set(codes) <= {200, 503}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_http_server_with_uvicorn(model_dir: Path, tmp_path: Path) -> None:
    import uvicorn

    from bertkit.inference.export import export_model

    export_dir = tmp_path / "export"
    export_model(model_dir, export_dir, optimize=False)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(export_dir, max_batch_size=16), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        expected = load_predictor(model_dir).predict(TEXTS)

        async def many() -> list[Any]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                return await asyncio.gather(*(client.post("/predict", json={"text": t}) for t in TEXTS * 5))

        answers = asyncio.run(many())
        assert [a.json()["prediction"] for a in answers] == expected * 5
        meta = httpx.get(f"{base}/metadata").json()
        assert meta["runtime"] == "onnxruntime" and meta["precision"] == "fp32"
        assert httpx.post(f"{base}/predict", json={"texts": "not a list"}).status_code == 422
    finally:
        server.should_exit = True
        thread.join(10)
