"""The job RPCs every job-running service shares (GetJob, WatchJob,
CancelJob, ListJobs), served from its JobManager."""

from __future__ import annotations

from ctsynth.jobs import JobManager
from ctsynth.v1 import common_pb2


class JobRpcs:
    """Mixin for a servicer that keeps its JobManager in `self._jobs`."""

    _jobs: JobManager

    def GetJob(self, request, context):
        return self._jobs.get(request.job_id)

    def WatchJob(self, request, context):
        yield from self._jobs.watch(request.job_id, request.from_sequence, context.is_active)

    def CancelJob(self, request, context):
        return self._jobs.cancel(request.job_id)

    def ListJobs(self, request, context):
        jobs, token = self._jobs.list(request.states, request.page_size, request.page_token)
        return common_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    def close(self) -> None:
        self._jobs.close(wait=False)
