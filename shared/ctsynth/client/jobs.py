"""Following a job: a progress bar per stage on stderr,
warnings as they arrive, and a one-line outcome."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ctsynth.v1 import common_pb2

State = common_pb2.JobState


class JobFailed(Exception):
    """A followed job ended FAILED or CANCELLED; the message says why."""


def follow(stub, job: common_pb2.Job, *, quiet: bool = False) -> common_pb2.Job:
    """Stream a job's events until it ends; return the final Job, raise
    JobFailed when it did not succeed."""
    bar = None
    stage = None
    try:
        for event in stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id)):
            progress = event.progress
            if not quiet and progress.stage and progress.stage != stage:
                if bar is not None:
                    bar.close()
                stage = progress.stage
                bar = tqdm(total=progress.total or None, desc=stage, unit=f" {progress.unit}" if progress.unit else "it",
                           file=sys.stderr, dynamic_ncols=True)
            if bar is not None and progress.stage == stage:
                bar.total = progress.total or bar.total
                bar.update(progress.done - bar.n)
                if event.metrics:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in sorted(event.metrics.items())[:4]}, refresh=False)
            if event.HasField("warning") and not quiet:
                tqdm.write(f"warning: {event.warning.subject}: {event.warning.reason}", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    final = stub.GetJob(common_pb2.GetJobRequest(job_id=job.id))
    if final.state != State.JOB_STATE_SUCCEEDED:
        reason = final.error.message or State.Name(final.state)
        code = f"{final.error.code}: " if final.error.code else ""
        raise JobFailed(f"job {final.id} {State.Name(final.state)[10:].lower()}: {code}{reason}")
    return final
