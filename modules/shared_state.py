"""Progress and control of the running generation job: A1111's ``State`` (``shared.state``).

One worker thread runs jobs and writes here; HTTP handlers (``/sdapi/v1/progress``, ``/internal/progress``) read the
fields and call :meth:`State.interrupt` / :meth:`State.skip` from other threads. Plain attribute reads and writes are
atomic in CPython, so readers never lock; the lock only keeps multi-field updates (``begin``, ``nextjob``, the live
preview) consistent for :meth:`State.dict` and :meth:`State.snapshot`.

Attribute names are A1111's, because extensions read and set them (``state.interrupted``, ``state.job_count``,
``state.sampling_step``, ``state.current_image`` ...).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Any


class State:
    """The current job's progress, its interrupt/skip flags and the latest live preview."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent: Any = None
        self.current_image: Any = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.textinfo: str | None = None
        self.time_start: float | None = None
        self.server_start: float | None = time.time()
        self.server_command: str | None = None
        # Turns a latent into a PIL preview; the job layer sets it (decoding costs time, so it is opt-in).
        self.preview_decoder: Callable[[Any], Any] | None = None

    # control ----------------------------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Stop the whole job after the current sampler step; finished images are kept."""
        self.interrupted = True

    def skip(self) -> None:
        """Abandon the current image (batch) and go on with the next one."""
        self.skipped = True

    def stop_generating(self) -> None:
        """A1111 1.8+: finish the current image, then stop."""
        self.stopping_generation = True

    # job lifecycle ----------------------------------------------------------------------------------------------
    def begin(self, job: str = "(unknown)") -> None:
        """Reset everything for a new job; called by the job queue before ``process_images``."""
        with self._lock:
            self.sampling_step = 0
            self.sampling_steps = 0
            self.time_start = time.time()
            self.job_count = -1
            self.processing_has_refined_job_count = False
            self.job_no = 0
            self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            self.current_latent = None
            self.current_image = None
            self.current_image_sampling_step = 0
            self.id_live_preview = 0
            self.skipped = False
            self.interrupted = False
            self.stopping_generation = False
            self.textinfo = None
            self.job = job

    def end(self) -> None:
        with self._lock:
            self.job = ""
            self.job_count = 0
            self.time_start = None

    def nextjob(self) -> None:
        """One unit of work (a batch, or a hires pass) is done."""
        with self._lock:
            self.job_no += 1
            self.sampling_step = 0
            self.current_image_sampling_step = 0

    # live preview -----------------------------------------------------------------------------------------------
    def set_current_latent(self, latent: Any, step: int | None = None) -> None:
        """Keep the latest preview latent; decode it now if a ``preview_decoder`` is set."""
        with self._lock:
            self.current_latent = latent
            if step is not None:
                self.current_image_sampling_step = step
            decoder = self.preview_decoder
        if decoder is not None:
            try:
                image = decoder(latent)
            except Exception:  # a preview must never break generation
                return
            self.assign_current_image(image)

    def assign_current_image(self, image: Any) -> None:
        with self._lock:
            self.current_image = image
            self.id_live_preview += 1

    # reporting --------------------------------------------------------------------------------------------------
    def dict(self) -> dict[str, Any]:
        """The ``state`` object of ``/sdapi/v1/progress``."""
        with self._lock:
            return {
                "skipped": self.skipped,
                "interrupted": self.interrupted,
                "stopping_generation": self.stopping_generation,
                "job": self.job,
                "job_count": self.job_count,
                "job_timestamp": self.job_timestamp,
                "job_no": self.job_no,
                "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps,
            }

    def progress(self) -> float:
        """A1111's progress fraction: 0.01 + job_no/job_count + (1/job_count) * step/steps; 0 when idle."""
        with self._lock:
            if not self.job and self.job_count == 0:
                return 0.0
            value = 0.01
            if self.job_count > 0:
                value += self.job_no / self.job_count
                if self.sampling_steps > 0:
                    value += 1 / self.job_count * self.sampling_step / self.sampling_steps
            return min(value, 1.0)
