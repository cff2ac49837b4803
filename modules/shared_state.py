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
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


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
        # Turns a latent into a PIL preview. Sampling installs one per run from the live preview settings
        # (install_preview_decoder); a decoder someone else assigned here (a test, an extension) is kept.
        self.preview_decoder: Callable[[Any], Any] | None = None
        self._installed_decoder: Callable[[Any], Any] | None = None
        self._preview_error_logged = False

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
            self._preview_error_logged = False

    def end(self) -> None:
        """The job is over; an installed preview decoder is dropped so it keeps no model part alive."""
        with self._lock:
            self.job = ""
            self.job_count = 0
            self.time_start = None
            if self.preview_decoder is self._installed_decoder:
                self.preview_decoder = None
            self._installed_decoder = None

    def nextjob(self) -> None:
        """One unit of work (a batch, or a hires pass) is done."""
        with self._lock:
            self.job_no += 1
            self.sampling_step = 0
            self.current_image_sampling_step = 0

    # live preview -----------------------------------------------------------------------------------------------
    def install_preview_decoder(self, decoder: Callable[[Any], Any] | None) -> bool:
        """Make ``decoder`` (None: no previews) this run's ``preview_decoder``; False if one set by hand is kept."""
        with self._lock:
            if self.preview_decoder is not None and self.preview_decoder is not self._installed_decoder:
                return False
            self.preview_decoder = self._installed_decoder = decoder
            return True

    def set_current_latent(self, latent: Any, step: int | None = None) -> None:
        """Keep the latest preview latent and, if a ``preview_decoder`` is set, decode it now.

        Called by the sampler in the worker thread, so the preview is ready (``id_live_preview`` bumped) before the
        next step starts; readers on other threads only ever see a finished image.
        """
        with self._lock:
            self.current_latent = latent
            if step is not None:
                self.current_image_sampling_step = step
            decoder = self.preview_decoder
        if decoder is None:
            return
        try:
            image = decoder(latent)
        except Exception as e:  # a preview must never break generation
            if not self._preview_error_logged:
                self._preview_error_logged = True
                log.warning("Live preview failed (generation goes on without it): %s: %s", type(e).__name__, e)
            return
        if image is not None:
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
