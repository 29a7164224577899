"""Long work as jobs: an id, a state that survives a restart, progress
events, cancellation and a result reference."""

from ctsynth.jobs.manager import JobCancelled, JobContext, JobManager, JobResult

__all__ = ["JobCancelled", "JobContext", "JobManager", "JobResult"]
