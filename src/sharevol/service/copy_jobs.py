"""Background copies: a bounded worker pool with progress, cancellation and a reader registry.

Only copies that cost data (pools without btrfs or reflink) run here. A job is keyed by what it
makes (`snapshot:<id>`, `volume:<id>`) and says which sources it reads, so a delete of a source
that a copy still reads answers FAILED_PRECONDITION. Jobs live in memory only: the records on
the pool say what was being copied, and the services start such copies again after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sharevol.sys.copy_control import CopyCancelled, CopyControl, Gate

log = logging.getLogger(__name__)

R = TypeVar("R")

DEFAULT_WORKERS = 2
"""Copies are disk-bound: two at a time keep a disk busy without starving the RPC threads."""


@dataclass
class Job(Generic[R]):
    """One background copy: what it makes, what it reads, its progress and its outcome."""

    key: str
    reads: tuple[str, ...]
    control: CopyControl
    future: Future[R] = field(repr=False)

    @property
    def running(self) -> bool:
        """Queued or copying (not finished, failed or cancelled yet)."""
        return not self.future.done()

    @property
    def progress(self) -> tuple[int, int]:
        return self.control.progress

    def error(self) -> BaseException | None:
        """The exception the copy ended with, once finished (None on success)."""
        if not self.future.done():
            return None
        try:
            return self.future.exception()
        except CancelledError as exc:
            return exc

    def cancel_and_wait(self) -> None:
        """Stop the copy at its next checkpoint and wait until its thread has let go."""
        self.control.cancel()
        self.future.cancel()
        with contextlib.suppress(BaseException):
            self.future.result()


class CopyJobs:
    """The server's background copies, at most `workers` at a time (the rest wait queued)."""

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job[object]] = {}
        self._instant_readers: Counter[str] = Counter()
        self.gate = Gate()

    def submit(
        self, key: str, work: Callable[[CopyControl], R], reads: tuple[str, ...] = ()
    ) -> Job[R]:
        """Start `work` in the background unless a job with that key is still running (then
        that job is returned). A finished job under the same key is replaced."""
        with self._lock:
            existing = self._jobs.get(key)
            if existing is not None and existing.running:
                return existing  # type: ignore[return-value]
            control = CopyControl(self.gate)
            future = self._executor.submit(self._run, key, work, control)
            job: Job[R] = Job(key, reads, control, future)
            self._jobs[key] = job  # type: ignore[assignment]
            return job

    @staticmethod
    def _run(key: str, work: Callable[[CopyControl], R], control: CopyControl) -> R:
        log.info("copy %s: started", key)
        try:
            result = work(control)
        except CopyCancelled:
            log.info("copy %s: cancelled", key)
            raise
        except BaseException:
            log.exception("copy %s: failed", key)
            raise
        log.info("copy %s: done", key)
        return result

    def get(self, key: str) -> Job[object] | None:
        with self._lock:
            return self._jobs.get(key)

    def forget(self, key: str) -> None:
        """Drop a finished job's outcome (once its result has been acted on)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.running:
                del self._jobs[key]

    def cancel(self, key: str) -> None:
        """Cancel the job with that key (if any), wait for it to stop, and forget it."""
        job = self.get(key)
        if job is not None:
            job.cancel_and_wait()
            self.forget(key)

    def readers_of(self, source: str) -> list[str]:
        """Keys of the running jobs (and instant operations) reading `source`."""
        with self._lock:
            readers = [k for k, j in self._jobs.items() if j.running and source in j.reads]
            if self._instant_readers[source]:
                readers.append(f"an operation on {source}")
            return readers

    @contextlib.contextmanager
    def reading(self, source: str) -> Iterator[None]:
        """Mark `source` as read by an instant (foreground) snapshot or clone meanwhile."""
        with self._lock:
            self._instant_readers[source] += 1
        try:
            yield
        finally:
            with self._lock:
                self._instant_readers[source] -= 1

    def wait_all(self, timeout: float) -> bool:
        """Wait until every copy known now has finished; False if some still run at `timeout`.
        (A copy's outcome is acted on by the next call that asks for it.)"""
        with self._lock:
            futures = [job.future for job in self._jobs.values()]
        _done, pending = wait(futures, timeout=timeout)
        return not pending

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every copy at its next checkpoint meanwhile (tests use it to observe a copy in
        progress without racing it)."""
        self.gate.close()
        try:
            yield
        finally:
            self.gate.open()

    def shutdown(self) -> None:
        """Cancel every copy and wait for the workers (server stop): a copy must not write
        into a filesystem that is about to be unmounted. The records restart them later."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.control.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
