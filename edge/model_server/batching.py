"""Server-side batching (``--enable_batching``), after TF Serving's BasicBatchScheduler + BatchingSession.

Concurrent ``Servable.run`` calls on the same signature with compatible inputs (same aliases,
dtypes and shapes past dim 0, same outputs) are concatenated along dim 0 into one runtime call,
padded up to the next ``allowed_batch_sizes`` entry (copies of the first row, as TF does), and the
outputs are split back. A batch runs when it is full or ``batch_timeout_micros`` after its first
task arrived. Ignored from BatchingParameters: ``pad_variable_length_inputs`` (requests whose
shapes differ are simply not merged), ``enable_large_batch_splitting`` and the ``max_execution_batch_size``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from edge.model_server.status import ServingError
from edge.serving.savedmodel import SignatureInfo

logger = logging.getLogger(__name__)

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass(frozen=True)
class BatchingOptions:
    """The BatchingParameters the scheduler uses, with BasicBatchScheduler's defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ValueError("max_batch_size, num_batch_threads and max_enqueued_batches must be positive")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be non-negative")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError("final entry in allowed_batch_sizes must equal max_batch_size")

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        """From a ``tensorflow.serving.BatchingParameters`` message (wrapper fields)."""
        kwargs: dict[str, Any] = {}
        for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
            if params.HasField(name):
                kwargs[name] = int(getattr(params, name).value)
        kwargs["allowed_batch_sizes"] = tuple(int(v) for v in params.allowed_batch_sizes)
        return cls(**kwargs)


class _Task:
    __slots__ = ("done", "error", "inputs", "result", "size")

    def __init__(self, inputs: dict[str, np.ndarray], size: int) -> None:
        self.inputs = inputs
        self.size = size
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


@dataclass
class _Batch:
    key: tuple[Any, ...]
    signature: str
    outputs: list[str]
    created: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    closed: bool = False


def _key(sig: SignatureInfo, inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[Any, ...]:
    return (sig.name, tuple(outputs), tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items())))


class BatchScheduler:
    """Merges concurrent calls to one servable; ``call(signature, inputs, outputs)`` runs a batch."""

    def __init__(self, call: Callable[[str, dict[str, np.ndarray], list[str]], dict[str, np.ndarray]],
                 options: BatchingOptions, name: str = "") -> None:
        self._call = call
        self.options = options
        self._cond = threading.Condition()
        self._batches: deque[_Batch] = deque()
        self._stopping = False
        self.calls = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # padded sizes of recent batches
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, sig: SignatureInfo, inputs: dict[str, Any], outputs: list[str]) -> dict[str, np.ndarray]:
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        sizes = set()
        for value in arrays.values():
            if value.ndim == 0:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "Batching Run() input tensors must have at least one dimension")
            sizes.add(value.shape[0])
        if len(sizes) > 1:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Batching Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop() if sizes else 0
        if size > self.options.max_batch_size:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size {self.options.max_batch_size}",
            )
        task = _Task(arrays, size)
        key = _key(sig, arrays, outputs)
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduler is shutting down")
            target = None
            for batch in self._batches:
                if batch.key == key and not batch.closed and batch.size + size <= self.options.max_batch_size:
                    target = batch
                    break
            if target is None:
                if len(self._batches) >= self.options.max_enqueued_batches:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
                for batch in self._batches:
                    if batch.key == key:
                        batch.closed = True  # a newer batch takes the next tasks
                target = _Batch(key, sig.name, list(outputs), time.monotonic())
                self._batches.append(target)
            target.tasks.append(task)
            target.size += size
            if target.size >= self.options.max_batch_size:
                target.closed = True
            self._cond.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _ready(self, now: float) -> tuple[_Batch | None, float | None]:
        timeout = self.options.batch_timeout_micros / 1e6
        wait = None
        for batch in self._batches:
            due = batch.created + timeout
            if batch.closed or now >= due:
                return batch, None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping and not self._batches:
                        return
                    batch, wait = self._ready(time.monotonic())
                    if batch is not None:
                        self._batches.remove(batch)
                        break
                    self._cond.wait(wait)
            self._process(batch)

    def _padded(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    def _process(self, batch: _Batch) -> None:
        try:
            total = batch.size
            padded = self._padded(total)
            merged = {}
            for alias in batch.tasks[0].inputs:
                parts = [t.inputs[alias] for t in batch.tasks]
                if padded > total:
                    parts.append(np.repeat(parts[0][:1], padded - total, axis=0))
                merged[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            self.calls += 1
            self.batch_sizes.append(padded)
            result = self._call(batch.signature, merged, batch.outputs)
            offset = 0
            for task in batch.tasks:
                out = {}
                for alias, value in result.items():
                    if value.ndim == 0 or value.shape[0] != padded:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                            "dimension sizes of the input tensors",
                        )
                    out[alias] = value[offset : offset + task.size]
                task.result = out
                offset += task.size
        except BaseException as exc:  # every task of the batch gets the error
            for task in batch.tasks:
                task.error = exc
        finally:
            for task in batch.tasks:
                task.done.set()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            for batch in self._batches:
                batch.closed = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=30)
