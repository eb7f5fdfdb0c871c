"""Training progress: a tqdm bar on a terminal, else a log line every so often (Snakemake logs),
and log lines that print beside the bar without breaking it."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from typing import Any

log = logging.getLogger("dnndist.train")  # the training's progress lines, named as before


class Progress:
    """tqdm bar on a terminal; otherwise (e.g. in Snakemake logs) a log line every
    ``every_s`` seconds with the step, the rate and the time left."""

    def __init__(
        self,
        total_steps: int,
        done_steps: int = 0,
        enabled: bool | None = None,
        images_per_step: int = 1,
        every_s: float = 30.0,
    ):
        self.bar, self.total, self.done = None, total_steps, done_steps
        self.images_per_step, self.every_s = images_per_step, every_s
        self.t0 = self.t_last = time.perf_counter()
        self.done0 = done_steps
        if enabled if enabled is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=done_steps, unit="step", dynamic_ncols=True)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.t_last >= self.every_s:
            self.t_last = now
            rate = (self.done - self.done0) / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate else math.inf
            log.info(
                "step %d/%d (%.0f %%), %.0f images/s, about %s left",
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
                rate * self.images_per_step,
                _duration(left),
            )

    def epoch(self, line: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(line)
        else:
            log.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def log_beside(bar: Progress) -> Any:
    """Log lines above the progress bar instead of through it."""
    if bar.bar is None:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()
