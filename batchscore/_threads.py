"""Two small helpers that connect pipeline stages through bounded queues.

A slow stage makes the others wait instead of piling batches up in memory, and
an exception in any stage stops the others and reaches the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from batchscore import _interrupt

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.1


class Prefetch(Generic[T]):
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead."""

    def __init__(self, source: Iterable[T], *, depth: int, name: str) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fill, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _fill(self, source: Iterable[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        self._put(_DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                _interrupt.check()
                if not self._thread.is_alive() and self._queue.empty():
                    return  # stopped by close(): nothing more will come
                continue
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the producer and wait for it."""
        self._stop.set()
        self._thread.join()


class Sink(Generic[T]):
    """Feed items to ``consume`` in a background thread through a queue of ``depth``."""

    def __init__(self, consume: Callable[[Iterator[T]], None], *, depth: int, name: str) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self._thread = threading.Thread(target=self._drain, args=(consume,), name=name, daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    def _drain(self, consume: Callable[[Iterator[T]], None]) -> None:
        try:
            consume(self._items())
        except BaseException as exc:  # handed to the producer
            self._error = exc
            self._failed.set()

    def put(self, item: T) -> None:
        """Queue one item; raises the consumer's exception if it failed."""
        while True:
            if self._failed.is_set():
                raise self._error  # type: ignore[misc]
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                _interrupt.check()
                continue

    def close(self) -> None:
        """Signal the end, wait for the consumer, and raise its exception if any."""
        if not self._failed.is_set():
            self.put(_DONE)  # type: ignore[arg-type]
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without waiting for queued items to be consumed (used on failure)."""
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self._queue.put(_DONE, timeout=_POLL_S)
            except queue.Full:
                continue
            self._thread.join(timeout=_POLL_S * 10)
