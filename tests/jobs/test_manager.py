"""The shared job manager: states, events, idempotency, cancel, recovery."""

from __future__ import annotations

import threading
import time

import pytest

from ctsynth.errors import FailedPrecondition, NotFound
from ctsynth.jobs import JobContext, JobManager, JobResult
from ctsynth.jobs.manager import job_id_for
from ctsynth.storage import open_store
from ctsynth.v1 import common_pb2

State = common_pb2.JobState


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def wait_final(manager: JobManager, job_id: str) -> common_pb2.Job:
    events = list(manager.watch(job_id))
    assert events, "a watched job produces events"
    return manager.get(job_id)


def counting_runner(job, request, ctx: JobContext) -> JobResult:
    for step in range(request["steps"]):
        ctx.check_cancelled()
        ctx.progress("work", step + 1, request["steps"], "steps")
    if request.get("warn"):
        ctx.warn("file.dcm", "truncated")
    if request.get("fail"):
        raise FailedPrecondition("nothing usable")
    if request.get("crash"):
        raise ZeroDivisionError("bad math")
    return JobResult(result=f"out:{request['steps']}")


def test_job_runs_to_success_with_progress_events(store):
    manager = JobManager(store, "test", counting_runner)
    job = manager.submit({"steps": 3, "warn": True})
    assert job.id == job_id_for("test", {"steps": 3, "warn": True})
    events = list(manager.watch(job.id))
    assert [e.sequence for e in events] == list(range(len(events)))
    assert events[-1].state == State.JOB_STATE_SUCCEEDED
    done = [e.progress.done for e in events if e.progress.stage == "work"]
    assert done == sorted(done) and {1, 2, 3} <= set(done)
    assert any(e.warning.subject == "file.dcm" for e in events)
    final = manager.get(job.id)
    assert final.result == "out:3" and final.warnings[0].reason == "truncated"
    assert final.started.seconds > 0 and final.finished.seconds > 0
    manager.close()


def test_same_request_returns_the_same_job(store):
    manager = JobManager(store, "test", counting_runner)
    first = manager.submit({"steps": 1})
    wait_final(manager, first.id)
    again = manager.submit({"steps": 1})
    assert again.id == first.id and again.state == State.JOB_STATE_SUCCEEDED
    assert manager.submit({"steps": 2}).id != first.id
    manager.close()


@pytest.mark.parametrize(("request_", "code", "message"), [
    ({"steps": 1, "fail": True}, "FAILED_PRECONDITION", "nothing usable"),
    ({"steps": 1, "crash": True}, "INTERNAL", "ZeroDivisionError: bad math"),
])
def test_failures_are_recorded_with_a_status(store, request_, code, message):
    manager = JobManager(store, "test", counting_runner)
    job = wait_final(manager, manager.submit(request_).id)
    assert job.state == State.JOB_STATE_FAILED
    assert job.error.code == code and message in job.error.message
    manager.close()


def test_cancel_stops_a_running_job(store):
    started, release = threading.Event(), threading.Event()

    def blocking(job, request, ctx):
        started.set()
        release.wait(10)
        ctx.check_cancelled()
        return JobResult(result="never")

    manager = JobManager(store, "test", blocking)
    job = manager.submit({"n": 1})
    assert started.wait(10)
    assert manager.cancel(job.id).state == State.JOB_STATE_CANCELLING
    release.set()
    assert wait_final(manager, job.id).state == State.JOB_STATE_CANCELLED
    manager.close()


def test_cancel_of_a_queued_job_is_immediate(store):
    release = threading.Event()
    manager = JobManager(store, "test", lambda job, request, ctx: (release.wait(10), JobResult("x"))[1])
    running = manager.submit({"n": 1})
    queued = manager.submit({"n": 2})
    assert manager.cancel(queued.id).state == State.JOB_STATE_CANCELLED
    release.set()
    assert wait_final(manager, running.id).state == State.JOB_STATE_SUCCEEDED
    assert manager.get(queued.id).state == State.JOB_STATE_CANCELLED
    manager.close()


def test_records_survive_a_new_manager_and_interrupted_jobs_are_resumed(store):
    release = threading.Event()
    calls = []

    def runner(job, request, ctx):
        calls.append(job.labels.get("version"))
        if not job.labels.get("version"):
            ctx.label("version", "7")
        release.wait(10)
        return JobResult(result=f"ds:{ctx.job.labels['version']}")

    crashed = JobManager(store, "test", runner)
    job = crashed.submit({"n": 1})
    for _ in range(200):
        if crashed.get(job.id).labels.get("version"):
            break
        time.sleep(0.05)
    # The process "dies": its record still says RUNNING.
    assert JobManager(store, "test", runner).get(job.id).state == State.JOB_STATE_RUNNING

    restarted = JobManager(store, "test", runner)
    assert restarted.recover() == [job.id]
    release.set()
    final = wait_final(restarted, job.id)
    assert final.state == State.JOB_STATE_SUCCEEDED and final.result == "ds:7"
    assert calls == [None, "7"], "the resumed run kept the version the first run chose"
    crashed.close()
    restarted.close()


def test_watch_of_a_stored_job_yields_its_snapshot(store):
    manager = JobManager(store, "test", counting_runner)
    job = wait_final(manager, manager.submit({"steps": 1}).id)
    manager.close()
    events = list(JobManager(store, "test", counting_runner).watch(job.id))
    assert len(events) == 1 and events[0].state == State.JOB_STATE_SUCCEEDED


def test_unknown_and_hostile_job_ids_are_not_found(store):
    manager = JobManager(store, "test", counting_runner)
    for job_id in ("nope", "../../etc/passwd", ""):
        with pytest.raises(NotFound):
            manager.get(job_id)
    manager.close()


def test_list_filters_and_pages(store):
    manager = JobManager(store, "test", counting_runner)
    ids = [wait_final(manager, manager.submit({"steps": n}).id).id for n in (1, 2, 3)]
    failed = wait_final(manager, manager.submit({"steps": 1, "fail": True}).id)
    jobs, token = manager.list()
    assert [j.id for j in jobs] == [failed.id, *reversed(ids)]
    page, token = manager.list(page_size=2)
    assert len(page) == 2 and token == page[-1].id
    rest, token2 = manager.list(page_size=2, page_token=token)
    assert [j.id for j in page + rest] == [j.id for j in jobs] and token2 == ""
    only_failed, _ = manager.list(states=[State.JOB_STATE_FAILED])
    assert [j.id for j in only_failed] == [failed.id]
    manager.close()
