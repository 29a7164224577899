"""The job manager every job-running service shares.

A job's record (the `Job` message as JSON) lives in the object store at
`jobs/<kind>/<id>.json`, so a restarted service knows every job and re-runs
the ones a crash interrupted. Job ids derive from the request, so submitting
the same request again returns the same job instead of doing the work twice.
Events for `WatchJob` are kept in memory for the life of the process; a
watcher of a job from an earlier process gets its stored snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from ctsynth.errors import NotFound
from ctsynth.observability.prometheus import JOB_DURATION, JOBS, JOBS_ACTIVE
from ctsynth.rpc.errors import status_for
from ctsynth.storage import ObjectStore
from ctsynth.storage.errors import ObjectNotFound
from ctsynth.v1 import common_pb2

log = logging.getLogger("ctsynth.jobs")

State = common_pb2.JobState
FINAL_STATES = frozenset({State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED})
# States in which re-submitting the same request returns the existing job.
REUSED_STATES = frozenset({State.JOB_STATE_QUEUED, State.JOB_STATE_RUNNING, State.JOB_STATE_CANCELLING,
                           State.JOB_STATE_SUCCEEDED})
PERSIST_INTERVAL_S = 1.0


class JobCancelled(Exception):
    """Raised inside a job when it has been asked to stop."""


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced: a reference other services accept."""

    result: str
    artifacts: tuple[common_pb2.ArtifactRef, ...] = ()


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def normalize_request(value):
    """The request as it reads back from the stored `Struct`, where every
    number is a double: integral numbers become ints on both paths, so a
    resumed job sees and hashes the same request as the original."""
    if isinstance(value, dict):
        return {key: normalize_request(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize_request(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def job_id_for(kind: str, request: dict) -> str:
    """A stable id for a request: the same request always maps to the same job."""
    canonical = json.dumps(normalize_request(request), sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


@dataclass
class _Live:
    """A job known to this process: its record, its events and its stop flag."""

    job: common_pb2.Job
    events: list[common_pb2.JobEvent] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    cancel: threading.Event = field(default_factory=threading.Event)
    persisted_at: float = 0.0


class JobContext:
    """Handed to a running job: report progress, warnings and metrics, and
    learn whether to stop. It is the `Reporter` the library pipelines take."""

    def __init__(self, manager: "JobManager", live: _Live):
        self._manager = manager
        self._live = live
        self._started = time.monotonic()

    @property
    def job(self) -> common_pb2.Job:
        return self._live.job

    def check_cancelled(self) -> None:
        if self._live.cancel.is_set():
            raise JobCancelled(self._live.job.id)

    def progress(self, stage: str, done: int, total: int, unit: str, message: str = "") -> None:
        elapsed = time.monotonic() - self._started
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total > 0 else -1.0
        progress = common_pb2.Progress(stage=stage, done=done, total=total, unit=unit, rate=rate, eta_seconds=eta)
        self._manager._update(self._live, progress=progress, message=message)

    def warn(self, subject: str, reason: str) -> None:
        warning = common_pb2.JobWarning(subject=subject, reason=reason, time=_now())
        self._manager._update(self._live, warning=warning, persist=True)

    def report(self, metrics: dict[str, float], artifact: common_pb2.ArtifactRef | None = None,
               message: str = "") -> None:
        """Scalar values (losses, images/s) and optionally a new artifact."""
        self._manager._update(self._live, metrics=metrics, artifact=artifact, message=message)

    def label(self, key: str, value: str) -> None:
        """Remember a value with the job (persisted at once), e.g. the version it writes."""
        self._live.job.labels[key] = value
        self._manager._persist(self._live)


Runner = Callable[[common_pb2.Job, dict, JobContext], JobResult]


class JobManager:
    """Runs jobs of one kind in a thread pool and keeps their records."""

    def __init__(self, store: ObjectStore, kind: str, runner: Runner, *, max_concurrent: int = 1):
        self._store = store
        self._kind = kind
        self._runner = runner
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix=f"job-{kind}")

    # -- public API --------------------------------------------------------

    def submit(self, request: dict, labels: dict[str, str] | None = None) -> common_pb2.Job:
        """Start a job for `request` (a JSON-able dict), or return the one that
        already ran or runs for the same request."""
        request = normalize_request(request)
        job_id = job_id_for(self._kind, request)
        with self._lock:
            live = self._live.get(job_id)
            existing = live.job if live else self._load(job_id)
            if existing is not None and existing.state in REUSED_STATES and (live or existing.state in FINAL_STATES):
                return self._copy(existing)
            request_struct = struct_pb2.Struct()
            request_struct.update(request)
            job = common_pb2.Job(id=job_id, kind=self._kind, state=State.JOB_STATE_QUEUED, created=_now(),
                                 request=request_struct, labels=dict(labels or {}))
            if existing is not None:
                # An interrupted or failed run: keep what it remembered (e.g. its version).
                job.labels.update(existing.labels)
            live = _Live(job=job)
            self._live[job_id] = live
        JOBS_ACTIVE.labels(self._kind).inc()
        self._update(live, message="queued", persist=True)
        self._pool.submit(self._run, live, request)
        return self._copy(job)

    def get(self, job_id: str) -> common_pb2.Job:
        live = self._live.get(job_id)
        if live is not None:
            return self._copy(live.job)
        job = self._load(job_id)
        if job is None:
            raise NotFound(f"no {self._kind} job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> common_pb2.Job:
        """Ask a job to stop; a queued job is cancelled at once."""
        live = self._live.get(job_id)
        if live is None:
            return self.get(job_id)  # NotFound, or a finished job from an earlier process
        if live.job.state not in FINAL_STATES:
            live.cancel.set()
            if live.job.state == State.JOB_STATE_QUEUED:
                self._finish(live, State.JOB_STATE_CANCELLED, message="cancelled before it started")
            else:
                self._update(live, state=State.JOB_STATE_CANCELLING, message="cancelling", persist=True)
        return self._copy(live.job)

    def list(self, states=(), page_size: int = 0, page_token: str = "") -> tuple[list[common_pb2.Job], str]:
        """Jobs by creation time, newest first; page_token is the last id seen."""
        jobs = {job.id: job for job in self._stored_jobs()}
        jobs.update({job_id: self._copy(live.job) for job_id, live in list(self._live.items())})
        ordered = sorted(jobs.values(), key=lambda j: (j.created.ToNanoseconds(), j.id), reverse=True)
        if states:
            ordered = [job for job in ordered if job.state in set(states)]
        if page_token:
            ids = [job.id for job in ordered]
            if page_token not in ids:
                raise NotFound(f"page_token {page_token!r} does not name a listed job")
            ordered = ordered[ids.index(page_token) + 1:]
        if page_size > 0 and len(ordered) > page_size:
            return ordered[:page_size], ordered[page_size - 1].id
        return ordered, ""

    def watch(self, job_id: str, from_sequence: int = 0,
              is_active: Callable[[], bool] = lambda: True) -> Iterator[common_pb2.JobEvent]:
        """Events of a job from `from_sequence` on, until it finishes or the
        watcher goes away."""
        live = self._live.get(job_id)
        if live is None:
            job = self.get(job_id)
            yield common_pb2.JobEvent(job_id=job.id, sequence=0, time=_now(), state=job.state,
                                      progress=job.progress, error=job.error, message="stored snapshot")
            return
        index = max(from_sequence, 0)
        while is_active():
            with live.changed:
                if index >= len(live.events) and live.job.state not in FINAL_STATES:
                    live.changed.wait(timeout=0.5)
                fresh = live.events[index:]
                done = live.job.state in FINAL_STATES
            yield from fresh
            index += len(fresh)
            if done and index >= len(live.events):
                return

    def recover(self) -> list[str]:
        """Re-run jobs an earlier process left queued or running (a crash or
        a kill): their requests are idempotent, so running again finishes them."""
        resumed = []
        for job in self._stored_jobs():
            if job.state not in FINAL_STATES and job.id not in self._live:
                request = json_format.MessageToDict(job.request)
                log.info("resuming interrupted job", extra={"job_id": job.id, "kind": self._kind})
                if self.submit(request, labels=dict(job.labels)).id != job.id:
                    raise RuntimeError(f"job {job.id}: its request no longer maps to its id")
                resumed.append(job.id)
        return resumed

    def close(self, wait: bool = True) -> None:
        """Ask running jobs to stop and wait for the workers."""
        for live in list(self._live.values()):
            live.cancel.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- internals ---------------------------------------------------------

    def _key(self, job_id: str) -> str:
        return f"jobs/{self._kind}/{job_id}.json"

    def _load(self, job_id: str) -> common_pb2.Job | None:
        if "/" in job_id or not job_id:
            raise NotFound(f"no {self._kind} job {job_id!r}")
        try:
            data = self._store.get_json(self._key(job_id))
        except ObjectNotFound:
            return None
        return json_format.ParseDict(data, common_pb2.Job(), ignore_unknown_fields=True)

    def _stored_jobs(self) -> Iterator[common_pb2.Job]:
        for info in self._store.list(f"jobs/{self._kind}/"):
            if info.key.endswith(".json"):
                job = self._load(info.key.rsplit("/", 1)[1][: -len(".json")])
                if job is not None:
                    yield job

    def _persist(self, live: _Live) -> None:
        self._store.put_json(self._key(live.job.id), json_format.MessageToDict(live.job))
        live.persisted_at = time.monotonic()

    @staticmethod
    def _copy(job: common_pb2.Job) -> common_pb2.Job:
        copy = common_pb2.Job()
        copy.CopyFrom(job)
        return copy

    def _update(self, live: _Live, *, state=None, progress=None, warning=None, metrics=None, artifact=None,
                error=None, message: str = "", persist: bool = False) -> None:
        """Apply a change to the record, append the event, wake watchers."""
        with live.changed:
            job = live.job
            if state is not None:
                job.state = state
            if progress is not None:
                job.progress.CopyFrom(progress)
            if warning is not None:
                job.warnings.append(warning)
            if error is not None:
                job.error.CopyFrom(error)
            event = common_pb2.JobEvent(job_id=job.id, sequence=len(live.events), time=_now(), state=job.state,
                                        progress=job.progress, message=message, metrics=metrics or {})
            if warning is not None:
                event.warning.CopyFrom(warning)
            if artifact is not None:
                event.artifact.CopyFrom(artifact)
            if error is not None:
                event.error.CopyFrom(error)
            live.events.append(event)
            live.changed.notify_all()
        if persist or state is not None or time.monotonic() - live.persisted_at >= PERSIST_INTERVAL_S:
            self._persist(live)

    def _finish(self, live: _Live, state, *, message: str, error=None, result: JobResult | None = None) -> None:
        job = live.job
        job.finished.CopyFrom(_now())
        if result is not None:
            job.result = result.result
            job.artifacts.extend(result.artifacts)
        self._update(live, state=state, error=error, message=message)
        JOBS.labels(self._kind, State.Name(state)).inc()
        JOBS_ACTIVE.labels(self._kind).dec()
        if job.HasField("started"):
            JOB_DURATION.labels(self._kind).observe(
                (job.finished.ToNanoseconds() - job.started.ToNanoseconds()) / 1e9)

    def _run(self, live: _Live, request: dict) -> None:
        if live.job.state in FINAL_STATES:
            return  # cancelled while queued
        live.job.started.CopyFrom(_now())
        self._update(live, state=State.JOB_STATE_RUNNING, message="running")
        try:
            result = self._runner(self._copy(live.job), request, JobContext(self, live))
        except JobCancelled:
            self._finish(live, State.JOB_STATE_CANCELLED, message="cancelled")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
            mapped = status_for(exc)
            if mapped is None:
                log.exception("job failed", extra={"job_id": live.job.id, "kind": self._kind})
                mapped = ("INTERNAL", f"{type(exc).__name__}: {exc}")
            else:
                mapped = (mapped[0].name, mapped[1])
            error = common_pb2.ErrorInfo(code=mapped[0], message=mapped[1], field=getattr(exc, "field", ""))
            self._finish(live, State.JOB_STATE_FAILED, message=mapped[1], error=error)
        else:
            self._finish(live, State.JOB_STATE_SUCCEEDED, message="succeeded", result=result)
