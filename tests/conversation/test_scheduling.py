"""The earliest-deadline-first executor that orders speech synthesis across sessions."""

from __future__ import annotations

import threading
import time

import pytest

from npcserver.conversation.scheduling import DeadlineExecutor


def test_waiting_calls_run_earliest_deadline_first_and_ties_in_arrival_order() -> None:
    executor = DeadlineExecutor()
    gate = threading.Event()
    ran: list[str] = []
    try:
        executor.submit_by(0.0, gate.wait)  # holds the worker while the others queue up
        futures = [
            executor.submit_by(deadline, lambda name=name: ran.append(name))
            for name, deadline in [("late clause", 9.0), ("first clause A", 1.0), ("later clause", 5.0), ("first clause B", 1.0)]
        ]
        gate.set()
        for future in futures:
            future.result(5)
    finally:
        executor.shutdown()
    assert ran == ["first clause A", "first clause B", "later clause", "late clause"]


def test_results_and_failures_reach_the_caller() -> None:
    with DeadlineExecutor() as executor:
        assert executor.submit_by(1.0, lambda: 42).result(5) == 42
        assert executor.submit(lambda a, b: a + b, 2, 3).result(5) == 5

        def fail() -> None:
            raise ValueError("no voice")

        with pytest.raises(ValueError, match="no voice"):
            executor.submit_by(1.0, fail).result(5)
        assert executor.submit_by(1.0, lambda: "still working").result(5) == "still working"


def test_a_cancelled_call_never_runs_and_shutdown_stops_the_thread() -> None:
    executor = DeadlineExecutor(thread_name="tts-test")
    gate = threading.Event()
    ran: list[str] = []
    executor.submit_by(0.0, gate.wait)
    cancelled = executor.submit_by(1.0, lambda: ran.append("cancelled"))
    assert cancelled.cancel()
    kept = executor.submit_by(2.0, lambda: ran.append("kept"))
    gate.set()
    kept.result(5)
    executor.shutdown(wait=True)
    assert ran == ["kept"]
    assert not any(thread.name == "tts-test" for thread in threading.enumerate())
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit_by(time.perf_counter(), lambda: None)
