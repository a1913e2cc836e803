"""The background copy runner: one job per key, readers of sources, cancel, pause, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sharevol.service.copy_jobs import CopyJobs
from sharevol.sys.copy_control import CopyCancelled, CopyControl


@pytest.fixture
def jobs() -> CopyJobs:
    return CopyJobs(workers=2)


def held_until(release: threading.Event) -> Callable[[CopyControl], str]:
    """Work that reports progress, then waits at checkpoints until `release` is set."""

    def work(control: CopyControl) -> str:
        control.set_total(100)
        control.advance(40)
        while not release.wait(0.01):
            control.checkpoint()
        return "done"

    return work


def test_a_job_runs_in_the_background_and_reports_progress(jobs: CopyJobs) -> None:
    release = threading.Event()
    job = jobs.submit("snapshot:a", held_until(release), reads=("volume:v",))
    try:
        assert job.running
        assert jobs.readers_of("volume:v") == ["snapshot:a"]
        assert jobs.readers_of("volume:other") == []
    finally:
        release.set()
    assert job.future.result(10) == "done"
    assert job.progress == (40, 100)
    assert (job.running, job.error()) == (False, None)
    assert jobs.readers_of("volume:v") == []
    jobs.shutdown()


def test_submitting_the_same_key_twice_gives_the_running_job(jobs: CopyJobs) -> None:
    release = threading.Event()
    first = jobs.submit("k", held_until(release))
    second = jobs.submit("k", held_until(release))
    release.set()
    assert first is second
    jobs.shutdown()


def test_a_failed_job_keeps_its_error_until_forgotten(jobs: CopyJobs) -> None:
    def fail(control: CopyControl) -> None:
        raise ValueError("disk on fire")

    job = jobs.submit("k", fail)
    assert jobs.wait_all(10)
    assert isinstance(job.error(), ValueError)
    jobs.forget("k")
    assert jobs.get("k") is None
    jobs.shutdown()


def test_cancel_stops_a_running_copy_and_forgets_it(jobs: CopyJobs) -> None:
    job = jobs.submit("k", held_until(threading.Event()))
    jobs.cancel("k")
    assert not job.running
    assert isinstance(job.error(), CopyCancelled)
    assert jobs.get("k") is None
    jobs.shutdown()


def test_paused_copies_wait_and_resume(jobs: CopyJobs) -> None:
    steps: list[int] = []

    def work(control: CopyControl) -> None:
        control.checkpoint()
        steps.append(1)

    with jobs.paused():
        job = jobs.submit("k", work)
        assert not jobs.wait_all(0.2)
        assert steps == [] and job.running
    assert jobs.wait_all(10)
    assert steps == [1]
    jobs.shutdown()


def test_instant_readers_count_while_they_read(jobs: CopyJobs) -> None:
    with jobs.reading("snapshot:s"):
        assert jobs.readers_of("snapshot:s") == ["an operation on snapshot:s"]
    assert jobs.readers_of("snapshot:s") == []
    jobs.shutdown()


def test_shutdown_cancels_running_copies(jobs: CopyJobs) -> None:
    job = jobs.submit("k", held_until(threading.Event()))
    jobs.shutdown()
    assert isinstance(job.error(), CopyCancelled)
