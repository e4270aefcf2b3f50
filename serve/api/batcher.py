"""`QueryBatcher`: concurrent requests' queries encoded together, in one worker thread.

Contract: `await batcher.retrieve(queries, k, filters, diversity)` returns what
`PromptRetriever.retrieve_batch` returns for the same arguments (one list of hits per query), but
the query tower runs in a single dedicated thread that takes every query waiting at that moment
(up to `max_batch`) into one encoder call, then searches each request's rows with its own k,
filters and diversity (requests with the same options share one search call). One encoder call
over n queries costs far less than n calls (the per-call overhead and the small matrix products
dominate a short query), so under concurrent load throughput approaches the encoder's batched
capacity instead of its one-query rate. The thread owns torch: requests never run the model
concurrently. `close()` finishes the queued work and stops the thread; later calls raise
`RuntimeError`. An exception in the worker fails only the requests of that batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Job:
    queries: list[str]
    k: int
    filters: Any  # PromptFilter | None, hashable
    diversity: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


_STOP = object()


class QueryBatcher:
    """Batches the queries of concurrent requests into one encoder call each round."""

    def __init__(self, retriever: Any, max_batch: int = 64,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.retriever = retriever
        self.max_batch = max_batch
        self.on_batch = on_batch  # called with (n_queries, seconds) after each encoder call
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="uprise-encoder", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    async def retrieve(self, queries: Sequence[str], k: int, filters: Any = None,
                       diversity: float = 0.0) -> list[list[Any]]:
        if self._closed:
            raise RuntimeError("the query batcher is closed (the service is shutting down).")
        loop = asyncio.get_running_loop()
        job = _Job(list(queries), k, filters, diversity, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def close(self, timeout_s: float = 30.0) -> None:
        """Finishes the queued jobs, then stops the worker thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            jobs, stopping = self._take()
            if jobs:
                self._serve(jobs)
        while True:  # a job queued after close() began: fail it rather than leave it waiting
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job.loop.call_soon_threadsafe(_settle, job.future, None, RuntimeError(
                    "the query batcher is closed (the service is shutting down)."))

    def _take(self) -> tuple[list[_Job], bool]:
        """Blocks for one job, then takes every job already waiting, up to `max_batch` queries."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        jobs, n = [first], len(first.queries)
        while n < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            n += len(job.queries)
        return jobs, False

    def _serve(self, jobs: list[_Job]) -> None:
        try:
            t0 = time.perf_counter()
            q_emb = self.retriever.encode_queries([q for j in jobs for q in j.queries])
            if self.on_batch is not None:
                self.on_batch(len(q_emb), time.perf_counter() - t0)
            results = self._search(jobs, q_emb)  # (n_queries, dim) -> one row list per job
        except Exception as err:  # noqa: BLE001 - the batch's requests get the error
            log.exception("encoder batch of %d request(s) failed", len(jobs))
            for job in jobs:
                job.loop.call_soon_threadsafe(_settle, job.future, None, err)
            return
        for job, rows in zip(jobs, results, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, rows, None)

    def _search(self, jobs: list[_Job], q_emb: np.ndarray) -> list[list[list[Any]]]:
        """Each job's rows of `q_emb` searched; jobs with equal options share one search call."""
        offsets = np.cumsum([0] + [len(j.queries) for j in jobs])
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.k, job.filters, job.diversity), []).append(i)
        results: list[list[list[Any]]] = [[] for _ in jobs]
        for (k, filters, diversity), members in groups.items():
            rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members])
            hits = self.retriever.search_embeddings(q_emb[rows], k, filters, diversity)
            start = 0
            for i in members:
                results[i] = hits[start:start + len(jobs[i].queries)]
                start += len(jobs[i].queries)
        return results


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
