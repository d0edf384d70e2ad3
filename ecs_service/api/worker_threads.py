"""The api's worker threads: where a request's blocking work (its database statements)
runs, off the event loop.

Starlette's ``run_in_threadpool`` (anyio's ``to_thread.run_sync``) costs, per call, two
passes of the event loop (a checkpoint, and the capacity limiter's), a cancel scope, and a
``queue.Queue`` hand-over (a ``threading.Condition``) to the thread. Here a call is one
``SimpleQueue.put`` (C), the thread's result comes back with ``call_soon_threadsafe``, and
the admission gate is the only limit (a request uses a thread only while it holds a slot).
As with anyio's default, a caller cancelled while its work runs waits for the work to end
before its cancellation goes on: the work may hold a pooled connection, and the request
holds its admission slot until it gives the connection back.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_Job = tuple[Context, "Callable[..., Any]", tuple[Any, ...], asyncio.Future[Any]]


class WorkerThreads:
    """``count`` threads, started at once, that run what ``run`` gives them."""

    def __init__(self, count: int, *, name: str = "herald-api-worker") -> None:
        if count < 1:
            raise ValueError("at least one worker thread")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{number}", daemon=True)
            for number in range(count)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` in a worker thread, in a copy of the caller's context (its log
        keys, its trace); its result, or what it raised."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((copy_context(), func, args, future))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():  # the work goes on: wait for it, then be cancelled
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            raise

    def close(self, timeout: float = 5.0) -> None:
        """Let every thread finish its work and stop (the api's shutdown), waiting at most
        ``timeout`` seconds in all: the threads are daemons, so none holds the exit up."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            context, func, args, future = job
            loop = future.get_loop()
            try:
                result = context.run(func, *args)
            except BaseException as error:  # noqa: BLE001 - handed to the caller as raised
                self._report(loop, _fail, future, error)
            else:
                self._report(loop, _succeed, future, result)
            del job, context, func, args, future  # nothing kept alive while idle

    @staticmethod
    def _report(
        loop: asyncio.AbstractEventLoop,
        report: Callable[[asyncio.Future[Any], Any], None],
        future: asyncio.Future[Any],
        value: Any,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(report, future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if isinstance(error, StopIteration):  # a future cannot carry one
        wrapped = RuntimeError("the work raised StopIteration")
        wrapped.__cause__ = error
        error = wrapped
    if not future.done():
        future.set_exception(error)
