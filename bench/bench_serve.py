"""Loopback load test of ``bertkit serve``: N concurrent clients for a fixed duration.

Starts ``bertkit serve MODEL`` as a subprocess on 127.0.0.1 (a free port), waits for ``/health``, then runs
``--clients`` asyncio clients (httpx) that each send ``POST /predict`` requests back to back for
``--duration`` seconds, one text per request (``--texts-per-request`` for batches). Every answer is checked
against a reference computed in this process with the same model and precision: a 200 whose probabilities are
further than ``--tolerance`` from the reference (or whose label differs where there are no probabilities) is
*wrong*; a request that gets no HTTP answer (connection error, timeout) is *lost*; 503s are counted apart
(the bounded queue doing its job). Reports requests/s, texts/s, p50/p90/p99 latency, lost, wrong and 503s.
Traffic goes only to 127.0.0.1 and stops by itself after the duration.

Usage::

    # smoke
    python bench/bench_serve.py --model exports/sst2 --data ../shared/data/sst2/test.csv --clients 4 --duration 5
    # full (the lead's benchmark)
    python bench/bench_serve.py --model exports/sst2 --data ../shared/data/sst2/test.csv --clients 32 \\
        --duration 60 --output bench/results/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import numpy as np  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _texts(data: str | None, column: str | None, n: int) -> list[str]:
    from bertkit.data import read_table

    if data is None:
        from importlib import resources

        data = str(resources.files("bertkit.data").joinpath("examples/demo_reviews_test.csv"))
    df = read_table(data)
    col = column or ("text" if "text" in df.columns else str(df.columns[0]))
    return [str(t) for t in df[col].dropna().astype(str).tolist()[:n]]


def _reference(model: str, texts: list[str], precision: str | None) -> list[dict[str, Any]]:
    from bertkit.inference import load_predictor
    from bertkit.inference.serve import rows_from_outputs

    kwargs = {"precision": precision} if precision else {}
    predictor = load_predictor(model, batch_size=32, **kwargs)
    return rows_from_outputs(predictor.model.head, predictor.outputs(texts), len(texts))


def _matches(got: dict[str, Any], ref: dict[str, Any], tol: float) -> bool:
    if ref.get("probabilities") and got.get("probabilities"):
        return all(abs(got["probabilities"][k] - v) <= tol for k, v in ref["probabilities"].items())
    return bool(got.get("prediction") == ref.get("prediction"))


async def _load(
    base: str,
    texts: list[str],
    refs: list[dict[str, Any]],
    clients: int,
    duration: float,
    per_request: int,
    tol: float,
) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"ok": 0, "lost": 0, "wrong": 0, "busy_503": 0, "other_status": 0, "texts": 0}
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        i = worker * 7919
        while time.perf_counter() < stop_at:
            idx = [(i + j) % len(texts) for j in range(per_request)]
            i += per_request
            body = {"text": texts[idx[0]]} if per_request == 1 else {"texts": [texts[k] for k in idx]}
            t0 = time.perf_counter()
            try:
                res = await http.post("/predict", json=body)
            except httpx.HTTPError:
                counts["lost"] += 1
                continue
            if res.status_code == 503:
                counts["busy_503"] += 1
                await asyncio.sleep(0.01)
                continue
            if res.status_code != 200:
                counts["other_status"] += 1
                continue
            latencies.append(time.perf_counter() - t0)
            rows = [res.json()] if per_request == 1 else res.json()["predictions"]
            counts["ok"] += 1
            counts["texts"] += len(rows)
            if len(rows) != len(idx) or not all(_matches(r, refs[k], tol) for r, k in zip(rows, idx)):
                counts["wrong"] += 1

    t_start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(w, http) for w in range(clients)))
    elapsed = time.perf_counter() - t_start
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        **counts,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(counts["ok"] / elapsed, 2),
        "texts_per_s": round(counts["texts"] / elapsed, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p90_ms": round(float(np.percentile(lat, 90)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="export folder, run folder or model folder")
    ap.add_argument("--data", default=None, help="texts to send (default: the bundled demo reviews)")
    ap.add_argument("--text-column", default=None)
    ap.add_argument("--n-texts", type=int, default=500, help="size of the text pool")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--precision", default=None, help="export folders: fp32 or int8 (default: the folder's)")
    ap.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max |probability - reference| of a right answer (default 1e-3 fp32, 0.05 int8)",
    )
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    texts = _texts(args.data, args.text_column, args.n_texts)
    refs = _reference(args.model, texts, args.precision)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "bertkit.cli",
        "serve",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--max-queue",
        str(args.max_queue),
        "--log-level",
        "warning",
    ]
    if args.precision:
        cmd += ["--precision", args.precision]
    server = subprocess.Popen(cmd, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with code {server.returncode}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("the server did not become healthy within 300 s")
            time.sleep(0.2)
        meta = httpx.get(f"{base}/metadata").json()
        tol = (
            args.tolerance
            if args.tolerance is not None
            else (0.05 if meta.get("precision") == "int8" else 1e-3)
        )
        result = asyncio.run(
            _load(base, texts, refs, args.clients, args.duration, args.texts_per_request, tol)
        )
        health = httpx.get(f"{base}/health").json()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    report = {
        "model": args.model,
        "clients": args.clients,
        "duration_s": args.duration,
        "texts_per_request": args.texts_per_request,
        "tolerance": tol,
        "server": meta,
        "batches_run": health["batches_run"],
        "texts_run": health["texts_run"],
        "mean_batch_size": round(health["texts_run"] / max(1, health["batches_run"]), 2),
        **result,
    }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
