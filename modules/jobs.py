"""One FIFO job queue shared by the HTTP API and the Gradio UI (A1111's ``call_queue`` + ``progress`` in one place).

A1111 serialises GPU work with ``queue_lock`` and tracks task ids separately in ``modules/progress.py``; here a single
worker thread owns the model, so jobs can never interleave, and the same object answers ``/internal/progress`` and
``/sdapi/v1/progress`` for any task id (queued, running or finished).
"""

from __future__ import annotations

import base64
import collections
import io
import random
import string
import threading
import time
from collections.abc import Callable
from typing import Any

from modules.shared_state import State

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
_ID_CHARS = string.ascii_lowercase + string.digits
_HISTORY = 256  # finished jobs remembered so a late progress poll still says "completed"


def _png_data_uri(image: Any) -> str | None:
    """A PIL image as ``data:image/png;base64,...`` (None for anything else), as A1111's progress JSON carries it."""
    if not hasattr(image, "save"):
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class JobCancelled(Exception):
    """Raised by :meth:`Job.wait` for a job removed from the queue before it ran."""


def new_task_id(kind: str = "api") -> str:
    """A1111's task id form, ``task(<kind>-<7 chars>)``, so its JS and extensions recognise it."""
    return f"task({kind}-{''.join(random.choices(_ID_CHARS, k=7))})"


class Job:
    """One unit of model work; callers keep it to wait for the result or to poll by ``id``."""

    def __init__(self, fn: Callable[[], Any], task_id: str, kind: str, description: str) -> None:
        self.fn = fn
        self.id = task_id
        self.kind = kind
        self.description = description
        self.status = QUEUED
        self.result: Any = None
        self.error: BaseException | None = None
        self.position: int | None = None  # 0-based place in the queue while queued, else None
        self.time_submitted = time.time()
        self.time_started: float | None = None
        self.time_finished: float | None = None
        self._done = threading.Event()
        self._queue: JobQueue | None = None  # set by submit, so wait() can spot a call from the worker itself

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends; return its result or re-raise its exception (``TimeoutError`` on timeout)."""
        if not self._done.is_set() and self._queue is not None and threading.current_thread() is self._queue._worker:
            raise RuntimeError(f"{self.id}: waiting on a queued job from the worker thread would deadlock")
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.id} did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def _finish(self, status: str, result: Any = None, error: BaseException | None = None) -> None:
        self.status, self.result, self.error = status, result, error
        self.position = None
        self.time_finished = time.time()
        self._done.set()

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.status})"


class JobQueue:
    """FIFO of :class:`Job` run one at a time by a lazily started daemon worker, wrapped in ``state.begin/end``."""

    def __init__(self, state: State | None = None) -> None:
        self.state = state if state is not None else State()
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}  # queued + running + recent finished, by id
        self._finished: collections.deque[str] = collections.deque()
        self._current: Job | None = None
        self._worker: threading.Thread | None = None
        self._stopping = False

    # submitting -------------------------------------------------------------------------------------------------
    def submit(
        self, fn: Callable[[], Any], *, kind: str = "api", task_id: str | None = None, description: str = ""
    ) -> Job:
        """Queue ``fn``; ``task_id`` is the UI's ``force_task_id`` so its progress polls match this job."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("job queue is shut down")
            job = Job(fn, task_id or new_task_id(kind), kind, description or kind)
            job.position, job._queue = len(self._queue), self
            self._queue.append(job)
            self._jobs[job.id] = job
            self._ensure_worker()
            self._cond.notify_all()
        return job

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="atelier-jobs", daemon=True)
            self._worker.start()

    # worker -----------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._renumber()
                job.status, job.position, job.time_started = RUNNING, None, time.time()
                self._current = job
            self._execute(job)
            with self._cond:
                self._current = None
                self._remember(job)
                self._cond.notify_all()

    def _execute(self, job: Job) -> None:
        """Run one job; any exception belongs to that job only, so the worker carries on with the next."""
        self.state.begin(job=job.description)
        try:
            result = job.fn()
        except BaseException as exc:  # noqa: B036 - even SystemExit/KeyboardInterrupt must not kill the worker
            job._finish(FAILED, error=exc)
        else:
            job._finish(DONE, result=result)
        finally:
            self.state.end()

    def _renumber(self) -> None:
        for i, queued in enumerate(self._queue):
            queued.position = i

    def _remember(self, job: Job) -> None:
        self._finished.append(job.id)
        while len(self._finished) > _HISTORY:
            old = self._finished.popleft()
            if (stale := self._jobs.get(old)) is not None and stale.finished:
                del self._jobs[old]

    # control ----------------------------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Stop the running job after its current step (``/sdapi/v1/interrupt``)."""
        if self._current is not None:
            self.state.interrupt()

    def skip(self) -> None:
        """Skip the running job's current image (``/sdapi/v1/skip``)."""
        if self._current is not None:
            self.state.skip()

    def cancel(self, task_id: str) -> bool:
        """Drop a still-queued job; its waiters get :class:`JobCancelled`. False if it is running, done or unknown."""
        with self._cond:
            job = self._jobs.get(task_id)
            if job is None or job.status != QUEUED:
                return False
            self._queue.remove(job)
            self._renumber()
            job._finish(CANCELLED, error=JobCancelled(f"{task_id} was cancelled"))
            self._remember(job)
            return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop the worker after the current job, cancelling what is still queued; True if the worker has ended."""
        with self._cond:
            self._stopping = True
            for job in self._queue:
                job._finish(CANCELLED, error=JobCancelled(f"{job.id} was cancelled by shutdown"))
                self._remember(job)
            self._queue.clear()
            self._cond.notify_all()
            worker = self._worker
        if worker is None or worker is threading.current_thread():
            return worker is None
        worker.join(timeout)
        return not worker.is_alive()

    # reporting --------------------------------------------------------------------------------------------------
    def pending_count(self) -> int:
        """Jobs waiting to run (not counting the running one)."""
        with self._cond:
            return len(self._queue)

    @property
    def current(self) -> Job | None:
        return self._current

    def get(self, task_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(task_id)

    def progress(self, task_id: str, id_live_preview: int = -1, live_preview: bool = True) -> dict[str, Any]:
        """A1111's ``/internal/progress`` answer for ``task_id`` (plus ``status`` and ``queue_position``).

        The live preview comes as a PNG data URI only when it is newer than the caller's ``id_live_preview``.
        """
        with self._cond:
            job = self._jobs.get(task_id)
            status = job.status if job is not None else None
            position = job.position if job is not None else None
            ahead = position + (1 if self._current is not None else 0) if position is not None else 0
        info: dict[str, Any] = {
            "active": status == RUNNING,
            "queued": status == QUEUED,
            "completed": status in (DONE, FAILED, CANCELLED),
            "status": status,
            "progress": None,
            "eta": None,
            "eta_relative": 0.0,
            "textinfo": None,
            "queue_position": position,
            "live_preview": None,
            "id_live_preview": -1,
        }
        if status == QUEUED:
            info["textinfo"] = f"In queue: {ahead} task(s) ahead" if ahead else "Waiting..."
        elif status == RUNNING:
            progress = self.state.progress()
            elapsed = time.time() - (self.state.time_start or time.time())
            eta = elapsed / progress - elapsed if progress > 0.01 else None
            info.update(
                progress=progress,
                eta=eta,
                eta_relative=eta or 0.0,
                textinfo=self.state.textinfo,
                id_live_preview=self.state.id_live_preview,
            )
            image = self.state.current_image
            if live_preview and image is not None and self.state.id_live_preview != id_live_preview:
                info["live_preview"] = _png_data_uri(image)
        elif status is not None:
            info.update(progress=1.0, textinfo={DONE: None, FAILED: "Failed", CANCELLED: "Cancelled"}[status])
        return info
