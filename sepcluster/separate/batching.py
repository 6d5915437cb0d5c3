"""Batching across tracks: several tracks separated at once share the model's calls.

A separating actor given several tracks at once (``--tracks-per-actor``) runs each through its
own engine in a thread; the engines' model calls go through one :class:`SharedBatches`, which
merges the chunks that the tracks have ready into calls of up to ``batch_size`` chunks (a GPU
works well only on large batches, and short tracks have few chunks each). Each engine is
unchanged: it asks for the model on its own chunks and gets exactly those back.

A call waits (holding its chunks) until ``batch_size`` chunks of the same model and shape are
waiting, or until no other track could add any (every other track is itself waiting for the
model, or finished). Then the thread that sees it runs one model call on the waiting chunks
(first come, first served, at most ``batch_size``, never splitting one track's request) and hands
each track its rows of the output. Models here compute each batch row on its own (no batch
statistics at inference), so a track's output equals its separation alone up to float rounding
of other batch compositions (about 1e-7; ``tests/separate/test_batching.py``).

    shared = SharedBatches(estimator, batch_size=8)
    with shared.track():               # in each track's thread
        write_stems(shared, reader, outputs, ...)
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import torch

from .estimator_base import Estimator


class _Request:
    __slots__ = ("key", "args", "rows", "taken", "result", "error")

    def __init__(self, key: tuple, args: tuple):
        self.key, self.args = key, args
        self.rows = int(next(a.shape[0] for a in args if isinstance(a, torch.Tensor)))
        self.taken = False
        self.result: Optional[torch.Tensor] = None
        self.error: Optional[BaseException] = None


def _key(args: tuple) -> tuple:
    """Requests with equal keys can share a call: the same model (non-tensor arguments) and the same
    shapes and dtypes of their tensor arguments past the batch dimension (None stays None)."""
    return tuple(("tensor", tuple(a.shape[1:]), a.dtype, a.device) if isinstance(a, torch.Tensor) else ("value", a)
                 for a in args)


class SharedBatches:
    """An estimator's stand-in whose ``separate_chunks`` merges concurrent calls of several tracks.

    Every attribute but ``separate_chunks`` is the wrapped estimator's. Each thread that separates
    a track through it must be inside :meth:`track` (so the batches know how many tracks could
    still add chunks). ``calls`` / ``chunks`` count the model calls made and their chunks.
    """

    def __init__(self, estimator, batch_size: int):
        self._estimator = estimator
        self.batch_size = max(1, int(batch_size))
        self._lock = threading.Condition()
        self._active = 0  # tracks inside track()
        self._waiting: list = []  # requests not yet taken, in arrival order
        self._running = 0  # requests taken by a call still running
        self.calls = 0
        self.chunks = 0

    def __getattr__(self, name: str):  # only for names this object does not have itself
        if name == "_estimator":
            raise AttributeError(name)
        return getattr(self._estimator, name)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """The calling thread separates a track through this object for the body."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()  # the tracks still waiting may now be all there is

    def separate_chunks(self, *args) -> torch.Tensor:
        """The wrapped estimator's ``separate_chunks(*args)`` on these rows, run in a shared call."""
        request = _Request(_key(args), args)
        with self._lock:
            self._waiting.append(request)
            while request.result is None and request.error is None:
                batch = None if request.taken else self._batch_to_run(request.key)
                if batch is None:
                    self._lock.wait()
                    continue
                self._lock.release()
                try:
                    self._run(batch)
                finally:
                    self._lock.acquire()
                    self._running -= len(batch)
                    self.calls += 1
                    self.chunks += sum(r.rows for r in batch)
                    self._lock.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def _batch_to_run(self, key: tuple) -> Optional[list]:
        """Under the lock: the requests of ``key`` to run now (taken from the queue), or None to wait."""
        same = [r for r in self._waiting if r.key == key]
        others_busy = self._active - len(self._waiting) - self._running  # tracks that may still add chunks
        if sum(r.rows for r in same) < self.batch_size and others_busy > 0:
            return None
        batch, rows = [], 0
        for r in same:
            if batch and rows + r.rows > self.batch_size:
                break
            batch.append(r)
            rows += r.rows
        for r in batch:
            r.taken = True
            self._waiting.remove(r)
        self._running += len(batch)
        return batch

    def _run(self, batch: list) -> None:
        """One model call on ``batch``'s rows (outside the lock); each request gets its rows or the error."""
        first = batch[0].args
        merged = first if len(batch) == 1 else tuple(
            torch.cat([r.args[i] for r in batch]) if isinstance(a, torch.Tensor) else a for i, a in enumerate(first))
        try:
            out = self._estimator.separate_chunks(*merged)
        except BaseException as exc:  # noqa: BLE001 - every track of the call gets the error
            for r in batch:
                r.error = exc
            return
        start = 0
        for r in batch:
            r.result = out[start:start + r.rows]
            start += r.rows


Estimator.register(SharedBatches)
