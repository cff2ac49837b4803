"""Time-budgeted training loops: a progress bar, a log file, and the moments to checkpoint.

Training here is planned in minutes of wall time rather than in steps (the machine's speed varies with load), so a
loop runs until its budget is spent or an optional step limit is reached. The elapsed time survives a resume: it is
stored in the checkpoint and handed back as ``elapsed``. ``fraction`` (how far along, by time or steps, whichever is
further) drives learning-rate schedules.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm import tqdm


class TrainingLog:
    """Timestamped lines appended to a file (kept across resumes) and echoed to a stream."""

    def __init__(self, path: Path | None, echo: TextIO | None = sys.stderr) -> None:
        self.path = path
        self.echo = echo
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        if self.path is not None:
            with open(self.path, "a", encoding="utf8") as handle:
                handle.write(line + "\n")
        if self.echo is not None:
            tqdm.write(line, file=self.echo)


class BudgetedLoop:
    """Yields step numbers until ``budget_s`` seconds (counting ``elapsed`` from earlier sessions) or ``max_steps``.

    Call ``report(**metrics)`` once per step: it advances the bar and writes a log line every ``log_every_s``.
    ``checkpoint_due()`` turns true every ``checkpoint_every_s`` seconds of this session.
    """

    def __init__(self, name: str, budget_s: float, *, start_step: int = 0, elapsed: float = 0.0,
                 max_steps: int | None = None, log: TrainingLog | None = None, log_every_s: float = 60.0,
                 checkpoint_every_s: float = 300.0, show_bar: bool = True) -> None:
        self.name = name
        self.budget_s = budget_s
        self.step = start_step
        self.start_step = start_step
        self.max_steps = max_steps
        self.log = log
        self.log_every_s = log_every_s
        self.checkpoint_every_s = checkpoint_every_s
        self._elapsed_before = elapsed
        self._session_start = time.monotonic()
        self._last_log = self._session_start
        self._last_checkpoint = self._session_start
        total = max_steps if max_steps is not None else max(1, math.ceil(budget_s))
        self._bar = tqdm(total=total, initial=min(start_step if max_steps else int(elapsed), total), desc=name,
                         unit="step" if max_steps else "s", disable=not show_bar, dynamic_ncols=True,
                         file=sys.stderr, leave=True)
        self._bar_position = self._bar.n

    @property
    def elapsed(self) -> float:
        """Seconds spent in this loop over all sessions."""
        return self._elapsed_before + time.monotonic() - self._session_start

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]: the larger of the time and step fractions."""
        by_time = self.elapsed / self.budget_s if self.budget_s > 0 else 1.0
        by_steps = self.step / self.max_steps if self.max_steps else 0.0
        return min(1.0, max(by_time, by_steps))

    def finished(self) -> bool:
        if self.max_steps is not None and self.step >= self.max_steps:
            return True
        return self.elapsed >= self.budget_s

    def __iter__(self) -> Iterator[int]:
        while not self.finished():
            yield self.step
            self.step += 1
        self._bar.close()

    def steps_per_second(self) -> float:
        session = time.monotonic() - self._session_start
        return (self.step - self.start_step) / session if session > 0 else 0.0

    def report(self, **metrics: float) -> None:
        """Advance the bar after a step; log a line when ``log_every_s`` has passed."""
        position = self.step + 1 if self.max_steps is not None else min(int(self.elapsed), self._bar.total)
        self._bar.update(max(0, position - self._bar_position))
        self._bar_position = max(self._bar_position, position)
        shown = {"step": self.step + 1, **{k: f"{v:.4g}" for k, v in metrics.items()}}
        self._bar.set_postfix(shown, refresh=False)
        now = time.monotonic()
        if self.log is not None and now - self._last_log >= self.log_every_s:
            self._last_log = now
            text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.log(f"{self.name} step {self.step + 1} ({self.elapsed / 60:.1f} min, "
                     f"{self.steps_per_second():.2f} steps/s) {text}")

    def checkpoint_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_checkpoint >= self.checkpoint_every_s:
            self._last_checkpoint = now
            return True
        return False


def cosine_lr(base: float, fraction: float, step: int, warmup_steps: int, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from ``base`` to ``floor * base`` as ``fraction`` -> 1."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction))))
    return base * warm * cosine
