"""The api's worker threads: work off the event loop, its result or error back on it."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from ecs_service.api.worker_threads import WorkerThreads

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_the_work_runs_in_another_thread_and_its_result_comes_back() -> None:
    # Given two worker threads
    threads = WorkerThreads(2)

    async def scenario() -> tuple[int, str]:
        # When the event loop hands them work
        return await threads.run(lambda a, b: a + b, 40, 2), await threads.run(
            lambda: threading.current_thread().name
        )

    try:
        total, name = asyncio.run(scenario())
    finally:
        threads.close()

    # Then the result comes back, computed off the event loop's thread
    assert total == 42
    assert name.startswith("herald-api-worker-")


def test_what_the_work_raises_is_raised_to_the_caller() -> None:
    # Given a worker thread and work that fails
    threads = WorkerThreads(1)

    def fail() -> None:
        raise LookupError("no such key")

    # When the event loop runs it, Then the caller gets the same error
    with pytest.raises(LookupError, match="no such key"):
        asyncio.run(threads.run(fail))
    threads.close()


def test_the_work_sees_the_callers_context() -> None:
    # Given a request's context (its log keys, its trace)
    threads = WorkerThreads(1)

    async def scenario() -> str:
        REQUEST_ID.set("req-42")
        return await threads.run(REQUEST_ID.get)

    # When its work runs in a worker thread, Then the work sees the same context
    assert asyncio.run(scenario()) == "req-42"
    threads.close()


def test_a_cancelled_caller_waits_for_its_work_to_end() -> None:
    # Given work that is running in a worker thread (it may hold a pooled connection)
    threads = WorkerThreads(1)
    started, finish = threading.Event(), threading.Event()
    events: list[str] = []

    def work() -> None:
        started.set()
        finish.wait(5)
        events.append("work ended")

    async def caller() -> None:
        try:
            await threads.run(work)
        except asyncio.CancelledError:
            events.append("caller cancelled")
            raise

    async def scenario() -> None:
        task = asyncio.create_task(caller())
        await asyncio.to_thread(started.wait, 5)
        # When the caller is cancelled while the work runs
        task.cancel()
        await asyncio.sleep(0.05)
        events.append("work still running" if not task.done() else "caller gone")
        finish.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    threads.close()

    # Then the caller's cancellation goes on only once the work has ended
    assert events == ["work still running", "work ended", "caller cancelled"]
