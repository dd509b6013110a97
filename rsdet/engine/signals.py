"""Stopping a run at an iteration boundary on a signal (Ctrl-C, SIGTERM, a scheduler's SIGUSR2).

docs/resume.md, "Stopping": the first signal sets a flag that the training loop checks before each
iteration, so the checkpoint written on the way out describes a whole number of iterations; a
second signal stops at once.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)


class Stopped(KeyboardInterrupt):
    """Training stopped at an iteration boundary on a signal; the checkpoint is written.

    ``requeue`` is the handler a job scheduler (submitit) had installed for that signal, if any:
    calling it with ``(signum, None)`` requeues the job (on rank 0; other ranks return)."""

    def __init__(self, signum: int, requeue=None):
        super().__init__(f"signal {signum}")
        self.signum = signum
        self.requeue = requeue


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption, `kill`) stop training at the next
    iteration boundary, where the checkpoint is exact; a second signal stops at once.

    An interrupt in the middle of an iteration would leave the model half-way through it (batch-norm
    statistics already updated by the forward pass, parameters part-way through the optimiser
    step), which no checkpoint can describe.

    SIGUSR2 is what submitit (``hydra/launcher=slurm|local``) sends before a job's time limit or on
    preemption: the run stops the same way, and ``Stopped.requeue`` then hands the signal to
    submitit's own handler, which requeues the job; the requeued job resumes from the checkpoint.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ())
    #: agreement order between ranks (the largest code wins): a requeue request beats a plain stop
    _CODES = {signal.SIGINT: 1, signal.SIGTERM: 2, **({signal.SIGUSR2: 3} if hasattr(signal, "SIGUSR2") else {})}

    def __init__(self, immediate: bool = False) -> None:
        """``immediate``: the first signal already raises ``Stopped`` (for work that has no state to
        save, such as the final evaluation, which a resumed run simply repeats)."""
        self.received: int | None = None
        self.immediate = immediate
        self._previous: dict = {}

    def _stopped(self, signum: int) -> Stopped:
        previous = self._previous.get(signum)
        return Stopped(signum, previous if callable(previous) and signum == getattr(signal, "SIGUSR2", None) else None)

    def _handle(self, signum, frame) -> None:
        if self.immediate:
            self.received = signum
            log.warning("signal %d: stopping now; the checkpoint is written, resume=true evaluates again", signum)
            raise self._stopped(signum)
        if self.received is not None:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.received = signum
        log.warning("signal %d: stopping after this iteration with a checkpoint (send it again to stop now)", signum)

    def code(self) -> int:
        return self._CODES.get(self.received, 2) if self.received is not None else 0

    def check(self, code: int | None = None) -> None:
        """Raise ``Stopped`` if a signal came (``code``: the code the ranks agreed on)."""
        code = self.code() if code is None else code
        if code:
            raise self._stopped(next(s for s, c in self._CODES.items() if c == code))

    def __enter__(self) -> StopSignals:
        try:
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
