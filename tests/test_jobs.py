"""``modules.jobs.JobQueue``: the single FIFO that keeps API and UI jobs from interleaving on the model."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from modules.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobCancelled, JobQueue, new_task_id
from modules.shared_state import State


class RecordingState(State):
    """Logs begin/end so tests can check every job is wrapped in them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def begin(self, job: str = "(unknown)") -> None:
        self.calls.append(("begin", job))
        super().begin(job)

    def end(self) -> None:
        self.calls.append(("end", self.job))
        super().end()


@pytest.fixture
def state() -> RecordingState:
    return RecordingState()


@pytest.fixture
def queue(state: RecordingState) -> Iterator[JobQueue]:
    q = JobQueue(state)
    yield q
    q.shutdown(timeout=5)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll briefly instead of sleeping a fixed time, so tests stay fast and deterministic enough."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def blocker() -> tuple[threading.Event, threading.Event, Callable[[], str]]:
    """A job that signals it started and then waits to be released, to hold the worker busy on demand."""
    started, release = threading.Event(), threading.Event()

    def fn() -> str:
        started.set()
        assert release.wait(5)
        return "released"

    return started, release, fn


def test_task_id_format() -> None:
    assert re.fullmatch(r"task\(txt2img-[a-z0-9]{7}\)", new_task_id("txt2img"))


def test_fifo_order_from_many_threads_and_never_two_at_once(queue: JobQueue) -> None:
    order: list[tuple[int, int]] = []
    running = threading.Event()
    started, release, hold = blocker()
    queue.submit(hold)  # keep the worker busy while everyone submits
    assert started.wait(5)

    def make(submitter: int, n: int) -> Callable[[], int]:
        def fn() -> int:
            assert not running.is_set(), "two jobs ran at once"
            running.set()
            time.sleep(0.001)
            order.append((submitter, n))
            running.clear()
            return submitter * 100 + n

        return fn

    submitted: list[Any] = []
    lock = threading.Lock()

    def submitter(i: int) -> None:
        for n in range(10):
            with lock:  # the lock fixes the global submit order we expect to see executed
                submitted.append((queue.submit(make(i, n)), (i, n)))

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    release.set()
    results = [job.wait(5) for job, _ in submitted]
    assert order == [key for _, key in submitted]
    assert results == [i * 100 + n for _, (i, n) in submitted]
    assert all(job.status == DONE for job, _ in submitted)


def test_failure_is_confined_to_its_job(queue: JobQueue) -> None:
    def boom() -> None:
        raise ValueError("bad prompt")

    bad = queue.submit(boom)
    good = queue.submit(lambda: 42)
    with pytest.raises(ValueError, match="bad prompt"):
        bad.wait(5)
    assert bad.status == FAILED and isinstance(bad.error, ValueError)
    assert good.wait(5) == 42 and good.status == DONE
    assert bad.time_started is not None and bad.time_finished is not None


def test_state_begin_end_around_each_job(queue: JobQueue, state: RecordingState) -> None:
    seen: list[str] = []

    def fn() -> None:
        seen.append(state.job)
        raise RuntimeError("fails, end still called")

    a = queue.submit(lambda: seen.append(state.job), description="txt2img")
    b = queue.submit(fn, kind="img2img")
    a.wait(5)
    with pytest.raises(RuntimeError):
        b.wait(5)
    wait_until(lambda: len(state.calls) == 4)
    assert state.calls == [("begin", "txt2img"), ("end", "txt2img"), ("begin", "img2img"), ("end", "img2img")]
    assert seen == ["txt2img", "img2img"] and state.job == ""


def test_progress_of_queued_running_done_and_unknown(queue: JobQueue, state: RecordingState) -> None:
    started, release, hold = blocker()
    running = queue.submit(hold, kind="txt2img")
    assert started.wait(5)
    waiting = queue.submit(lambda: None)
    later = queue.submit(lambda: None)
    assert queue.pending_count() == 2 and waiting.position == 0 and later.position == 1

    state.job_count, state.sampling_steps, state.sampling_step = 2, 10, 5
    state.textinfo = "step 5"
    p = queue.progress(running.id)
    assert p["active"] and not p["queued"] and not p["completed"]
    assert abs(p["progress"] - 0.26) < 1e-9 and p["eta_relative"] >= 0 and p["textinfo"] == "step 5"

    assert p["live_preview"] is None  # no preview yet
    state.assign_current_image(Image.new("RGB", (4, 4), (255, 0, 0)))
    with_preview = queue.progress(running.id)
    assert with_preview["live_preview"].startswith("data:image/png;base64,")
    preview = Image.open(io.BytesIO(base64.b64decode(with_preview["live_preview"].split(",", 1)[1])))
    assert preview.size == (4, 4) and preview.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    # A caller that already has this preview id gets no image again.
    assert queue.progress(running.id, id_live_preview=with_preview["id_live_preview"])["live_preview"] is None

    q = queue.progress(later.id)
    assert q["queued"] and not q["active"] and q["queue_position"] == 1 and "2" in q["textinfo"]

    release.set()
    later.wait(5)
    d = queue.progress(running.id)
    assert d["completed"] and not d["active"] and not d["queued"] and d["progress"] == 1.0

    u = queue.progress("task(nope-0000000)")
    assert u["queued"] is False and u["completed"] is False and u["active"] is False


def test_cancel_queued_job(queue: JobQueue) -> None:
    started, release, hold = blocker()
    first = queue.submit(hold)
    assert started.wait(5)
    ran: list[str] = []
    doomed = queue.submit(lambda: ran.append("doomed"))
    kept = queue.submit(lambda: ran.append("kept"))
    assert queue.cancel(doomed.id)
    assert not queue.cancel(doomed.id) and not queue.cancel(first.id) and not queue.cancel("task(x-1234567)")
    assert doomed.status == CANCELLED and kept.position == 0
    with pytest.raises(JobCancelled):
        doomed.wait(1)
    release.set()
    kept.wait(5)
    assert ran == ["kept"]
    assert queue.progress(doomed.id)["completed"]


def test_interrupt_and_skip_reach_the_running_job(queue: JobQueue, state: RecordingState) -> None:
    queue.interrupt()  # idle: nothing to interrupt, and the next begin() would reset it anyway
    assert not state.interrupted
    started = threading.Event()

    def fn() -> tuple[bool, bool]:
        assert not state.interrupted
        started.set()
        wait_until(lambda: state.interrupted and state.skipped)
        return state.interrupted, state.skipped

    job = queue.submit(fn)
    assert started.wait(5)
    queue.interrupt()
    queue.skip()
    assert job.wait(5) == (True, True)
    assert queue.submit(lambda: state.interrupted).wait(5) is False  # begin() clears it for the next job


def test_force_task_id(queue: JobQueue) -> None:
    job = queue.submit(lambda: "ok", task_id="task(ui-abcdefg)")
    assert job.id == "task(ui-abcdefg)" and job.wait(5) == "ok"
    assert queue.get("task(ui-abcdefg)") is job and queue.progress("task(ui-abcdefg)")["completed"]


def test_shutdown_finishes_current_and_cancels_rest(state: RecordingState) -> None:
    queue = JobQueue(state)
    assert queue.shutdown(timeout=1)  # never started: nothing to stop
    queue = JobQueue(state)
    started, release, hold = blocker()
    current = queue.submit(hold)
    assert started.wait(5)
    rest = queue.submit(lambda: "never")
    stopper = threading.Thread(target=queue.shutdown, kwargs={"timeout": 5})
    stopper.start()
    wait_until(lambda: rest.status == CANCELLED)
    assert current.status == RUNNING
    release.set()
    stopper.join(5)
    assert current.wait(1) == "released" and not stopper.is_alive()
    assert queue._worker is not None and not queue._worker.is_alive()
    with pytest.raises(RuntimeError):
        queue.submit(lambda: None)
    assert rest.status != QUEUED


def test_wait_timeout_and_deadlock_guard(queue: JobQueue) -> None:
    started, release, hold = blocker()
    first = queue.submit(hold)
    assert started.wait(5)
    second = queue.submit(lambda: "second")
    with pytest.raises(TimeoutError):
        second.wait(0.05)
    release.set()
    assert first.wait(5) == "released" and second.wait(5) == "second"

    inner = queue.submit(lambda: queue.submit(lambda: None).wait(1))
    with pytest.raises(RuntimeError, match="deadlock"):
        inner.wait(5)
