"""Following a UI job on the shared queue: progress HTML (bar, percent, step x/y, ETA) and the live preview.

A tab's click handler submits its job, then iterates :func:`follow`: a :class:`Tick` about every ``poll`` seconds
while the job waits or runs, and one :class:`Outcome` at the end. The handler turns these into Gradio updates, so
the progress bar streams and always ends (an error included).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modules.jobs import Job, JobQueue

POLL_SECONDS = 0.5


@dataclass
class Tick:
    """The job is still queued or running: progress HTML, and a new live preview when there is one."""

    html: str
    preview: Any = None


@dataclass
class Outcome:
    """The job ended: its result, or the exception it raised; ``elapsed`` seconds since submission."""

    result: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def progress_html(queue: JobQueue, job: Job) -> str:
    """The progress bar of ``job``: a waiting line while queued; percent, step, batch and ETA while running."""
    info = queue.progress(job.id)
    if info["queued"]:
        text = html.escape(info["textinfo"] or "Waiting...")
        return f"<div class='atelier-progress' data-status='queued'><span class='progress-text'>{text}</span></div>"
    state = queue.state
    fraction = float(info["progress"] or 0.0)
    percent = max(0, min(100, int(fraction * 100)))
    parts = [f"{percent}%"]
    if state.sampling_steps:
        parts.append(f"Step {state.sampling_step}/{state.sampling_steps}")
    if state.job_count and state.job_count > 1:
        parts.append(f"Batch {min(state.job_no + 1, state.job_count)}/{state.job_count}")
    eta = format_eta(info["eta"])
    if eta:
        parts.append(f"ETA {eta}")
    if info["textinfo"]:
        parts.append(html.escape(str(info["textinfo"])))
    text = " · ".join(parts)
    return (f"<div class='atelier-progress' data-status='running' data-percent='{percent}'>"
            f"<div class='progress-bar' style='width:{percent}%'></div>"
            f"<span class='progress-text'>{text}</span></div>")


def follow(queue: JobQueue, job: Job, poll: float = POLL_SECONDS,
           clock: Callable[[], float] = time.monotonic) -> Iterator[Tick | Outcome]:
    """Ticks until ``job`` ends, then its :class:`Outcome` (never raises: the error travels in the outcome)."""
    started = clock()
    shown_preview = -1
    while True:
        try:
            result = job.wait(poll)
        except TimeoutError:
            preview = None
            state = queue.state
            if queue.current is job and state.current_image is not None and state.id_live_preview != shown_preview:
                shown_preview = state.id_live_preview
                preview = state.current_image
            yield Tick(progress_html(queue, job), preview)
            continue
        except BaseException as exc:  # noqa: B036 - the job's own failure, reported in the UI
            yield Outcome(error=exc, elapsed=clock() - started)
            return
        yield Outcome(result=result, elapsed=clock() - started)
        return


def time_taken_html(seconds: float) -> str:
    return f"<p class='time-taken'>Time taken: <b>{seconds:.2f} s</b></p>"
