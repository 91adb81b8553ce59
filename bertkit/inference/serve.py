"""HTTP inference server: FastAPI + uvicorn, dynamic micro-batching and a bounded queue.

``create_app(run_model_or_export_dir)`` returns a FastAPI app with

* ``POST /predict``: ``{"text": "..."}``, ``{"texts": ["...", ...]}``, ``{"text_a": "...", "text_b": "..."}`` or
  ``{"pairs": [["a", "b"], ...]}``; a single input answers one prediction object, a batch answers
  ``{"predictions": [...]}`` in request order.
* ``GET /health`` (liveness plus queue depth), ``GET /metadata`` (task, labels, backbone, runtime),
  ``GET /docs`` and ``GET /openapi.json``.

Concurrent requests are merged by one worker task: it takes the first waiting request, then keeps taking
requests until ``max_batch_size`` texts are gathered or ``max_wait_ms`` has passed, runs them as one batch in
a worker thread (the event loop keeps accepting requests meanwhile) and hands every request its own rows. The
queue holds at most ``max_queue`` requests; beyond that the server answers 503 with ``Retry-After`` instead of
piling up work. Invalid bodies get 422 with a one-line ``error`` plus pydantic's ``detail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertkit._version import __version__
from bertkit.errors import ConfigError

__all__ = ["MicroBatcher", "PredictRequest", "QueueFullError", "create_app", "rows_from_outputs", "serve"]

MAX_TEXTS_PER_REQUEST = 1024


class QueueFullError(RuntimeError):
    """The request queue is full (the server answers 503)."""


class PredictRequest(BaseModel):
    """One text, a batch of texts, one text pair or a batch of pairs (exactly one of them)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="One text.", examples=["The battery died after two days."])
    texts: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXTS_PER_REQUEST,
        description="A batch of texts (answered in the same order).",
    )
    text_a: str | None = Field(None, description="First text of a pair (with text_b).")
    text_b: str | None = Field(None, description="Second text of a pair (with text_a).")
    pairs: list[tuple[str, str]] | None = Field(
        None, min_length=1, max_length=MAX_TEXTS_PER_REQUEST, description="A batch of [text_a, text_b] pairs."
    )

    @model_validator(mode="after")
    def _exactly_one_input(self) -> PredictRequest:
        given = [
            name
            for name, ok in (
                ("text", self.text is not None),
                ("texts", self.texts is not None),
                ("text_a/text_b", self.text_a is not None or self.text_b is not None),
                ("pairs", self.pairs is not None),
            )
            if ok
        ]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of text, texts, text_a+text_b or pairs (got: {', '.join(given) or 'none'})"
            )
        if given[0] == "text_a/text_b" and (self.text_a is None or self.text_b is None):
            raise ValueError("a pair needs both text_a and text_b")
        return self

    @property
    def is_batch(self) -> bool:
        return self.texts is not None or self.pairs is not None

    def split(self) -> tuple[list[str], list[str] | None]:
        """(texts_a, texts_b or None)."""
        if self.text is not None:
            return [self.text], None
        if self.texts is not None:
            return list(self.texts), None
        if self.pairs is not None:
            return [p[0] for p in self.pairs], [p[1] for p in self.pairs]
        return [str(self.text_a)], [str(self.text_b)]


class Prediction(BaseModel):
    """One text's prediction: the decoded label/value, class probabilities and every prediction column."""

    prediction: Any = Field(description="Label name, label list, string such as 'INTJ', or number(s).")
    probabilities: dict[str, float] | None = Field(
        None, description="Probability per label, when the task has them."
    )
    columns: dict[str, Any] = Field(
        default_factory=dict, description="All columns of the head's prediction file."
    )


class BatchPrediction(BaseModel):
    """Predictions for a batch, in request order."""

    predictions: list[Prediction]


def rows_from_outputs(head: Any, outputs: dict[str, np.ndarray], n: int) -> list[dict[str, Any]]:
    """Per-text response rows from raw outputs, decoded by the head's own ``format_predictions``."""
    cols = head.format_predictions(outputs)
    names = head.label_names()
    probs = outputs.get("probabilities")
    with_probs = probs is not None and probs.ndim == 2 and probs.shape[1] == len(names)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row_cols = {k: _jsonable(v[i]) for k, v in cols.items()}
        pred = row_cols["prediction"] if "prediction" in row_cols else [m for m in names if row_cols.get(m)]
        row: dict[str, Any] = {"prediction": pred, "columns": row_cols}
        if with_probs:
            assert probs is not None
            row["probabilities"] = {m: float(p) for m, p in zip(names, probs[i])}
        rows.append(row)
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@dataclass
class _Job:
    texts_a: list[str]
    texts_b: list[str] | None
    future: asyncio.Future[list[dict[str, Any]]]


@dataclass
class MicroBatcher:
    """Merge concurrent requests into batches: one asyncio worker, one inference thread.

    Args:
        run: ``run(texts_a, texts_b) -> rows`` (blocking; called in a worker thread).
        max_batch_size: texts gathered before a batch runs without waiting longer.
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue: requests waiting at most; :meth:`submit` raises :class:`QueueFullError` beyond it.
    """

    run: Callable[[list[str], list[str] | None], list[dict[str, Any]]]
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    batches_run: int = 0
    texts_run: int = 0
    _queue: asyncio.Queue[_Job] | None = field(default=None, init=False, repr=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="bertkit-infer"),
        init=False,
        repr=False,
    )

    @property
    def queue_size(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker on the running loop (again after a new loop, e.g. a second TestClient)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        self._loop = loop
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._worker = loop.create_task(self._work(), name="bertkit-microbatcher")

    async def stop(self) -> None:
        """Cancel the worker; waiting requests get an error rather than hanging."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._worker = None

    async def submit(self, texts_a: list[str], texts_b: list[str] | None = None) -> list[dict[str, Any]]:
        """Queue one request and wait for its rows; raises :class:`QueueFullError` when the queue is full."""
        self.start()
        assert self._queue is not None and self._loop is not None
        job = _Job(texts_a, texts_b, self._loop.create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(
                f"the request queue is full ({self.max_queue} waiting); retry shortly"
            ) from None
        return await job.future

    async def _gather(self, first: _Job) -> list[_Job]:
        assert self._queue is not None and self._loop is not None
        jobs, n = [first], len(first.texts_a)
        deadline = self._loop.time() + self.max_wait_ms / 1000.0
        while n < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - self._loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            jobs.append(job)
            n += len(job.texts_a)
        return jobs

    async def _work(self) -> None:
        assert self._queue is not None and self._loop is not None
        while True:
            jobs = await self._gather(await self._queue.get())
            for pairs in (False, True):  # single texts and pairs run as separate batches
                group = [j for j in jobs if (j.texts_b is not None) == pairs and not j.future.done()]
                if group:
                    await self._run_group(group)

    async def _run_group(self, group: list[_Job]) -> None:
        assert self._loop is not None
        texts_a = [t for j in group for t in j.texts_a]
        texts_b = [t for j in group for t in j.texts_b] if group[0].texts_b is not None else None  # type: ignore[union-attr]
        try:
            rows = await self._loop.run_in_executor(self._executor, self.run, texts_a, texts_b)
        except Exception as exc:  # every waiting request learns about the failure
            for j in group:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        self.batches_run += 1
        self.texts_run += len(texts_a)
        start = 0
        for j in group:
            end = start + len(j.texts_a)
            if not j.future.done():
                j.future.set_result(rows[start:end])
            start = end


def create_app(
    model_or_export_dir: str | Path,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_queue: int = 256,
    max_texts: int = MAX_TEXTS_PER_REQUEST,
    **predictor_kwargs: Any,
) -> Any:
    """FastAPI app serving a run folder, a model folder or an export folder (ONNX Runtime).

    Args:
        model_or_export_dir: what to serve.
        max_batch_size: texts per micro-batch (also the predictor's batch size).
        max_wait_ms: how long a request waits for others to join its batch.
        max_queue: waiting requests beyond which the server answers 503.
        max_texts: texts allowed in one request (413 beyond).
        **predictor_kwargs: passed to :func:`bertkit.inference.load_predictor` (e.g. ``precision="fp32"``).
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from bertkit.inference.predictor import load_predictor

    if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
        raise ConfigError("max_batch_size and max_queue must be >= 1 and max_wait_ms >= 0")
    predictor_kwargs.setdefault("batch_size", max_batch_size)
    predictor = load_predictor(model_or_export_dir, **predictor_kwargs)
    head = predictor.model.head
    meta = dict(predictor.model.metadata)
    runtime = "onnxruntime" if hasattr(predictor, "runtime") else "pytorch"

    def run(texts_a: list[str], texts_b: list[str] | None) -> list[dict[str, Any]]:
        return rows_from_outputs(head, predictor.outputs(texts_a, texts_b), len(texts_a))

    batcher = MicroBatcher(run, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue)
    started = time.time()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="bertkit inference",
        version=__version__,
        lifespan=lifespan,
        description=f"{head.task} model ({head.registry_name}) served by bertkit on {runtime}.",
    )
    app.state.batcher = batcher
    app.state.predictor = predictor

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return JSONResponse(
            status_code=422, content={"error": f"invalid request ({where}): {msg}", "detail": _plain(errors)}
        )

    @app.post(
        "/predict",
        response_model=Prediction | BatchPrediction,
        responses={
            413: {"description": "Too many texts in one request."},
            422: {"description": "Invalid request body."},
            503: {"description": "The request queue is full; retry after the Retry-After seconds."},
        },
    )
    async def predict(body: PredictRequest) -> Any:
        """Predict one text, a batch of texts, one pair or a batch of pairs."""
        texts_a, texts_b = body.split()
        if len(texts_a) > max_texts:
            raise HTTPException(413, detail=f"{len(texts_a)} texts in one request; at most {max_texts}")
        try:
            rows = await batcher.submit(texts_a, texts_b)
        except QueueFullError as exc:
            raise HTTPException(503, detail=str(exc), headers={"Retry-After": "1"}) from None
        if body.is_batch:
            return {"predictions": rows}
        return rows[0]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load: queue depth, batches and texts served."""
        return {
            "status": "ok",
            "queue_size": batcher.queue_size,
            "max_queue": max_queue,
            "batches_run": batcher.batches_run,
            "texts_run": batcher.texts_run,
            "uptime_s": round(time.time() - started, 3),
        }

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """Task, labels, backbone, head, runtime and batching settings."""
        info = getattr(getattr(predictor, "model", None), "info", {}) or {}
        return {
            "task": head.task,
            "head_type": head.registry_name,
            "labels": head.label_names(),
            "backbone": meta.get("backbone"),
            "model_type": meta.get("model_type"),
            "runtime": runtime,
            "precision": getattr(predictor, "precision", "fp32"),
            "graph": info.get("graph"),
            "max_length": getattr(predictor, "max_length", None),
            "bertkit_version": __version__,
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "max_queue": max_queue,
            "max_texts_per_request": max_texts,
            "source": str(model_or_export_dir),
        }

    return app


def _plain(errors: Any) -> Any:
    """Pydantic error dicts made JSON-safe (their ``ctx`` may hold exception objects)."""
    out = []
    for e in errors:
        e = dict(e)
        if "ctx" in e:
            e["ctx"] = {k: str(v) for k, v in e["ctx"].items()}
        e.pop("url", None)
        out.append(e)
    return out


def serve(
    model_or_export_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **app_kwargs: Any,
) -> None:
    """Run :func:`create_app` with uvicorn until interrupted."""
    import uvicorn

    app = create_app(model_or_export_dir, **app_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
