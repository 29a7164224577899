"""`ctsynth jobs` and `ctsynth watch`: jobs of every job-running service."""

from __future__ import annotations

from ctsynth.client.jobs import follow
from ctsynth.cli.connection import open_services
from ctsynth.v1 import common_pb2, evaluation_pb2_grpc, ingest_pb2_grpc, training_pb2_grpc

STUBS = {
    "ingest": ingest_pb2_grpc.IngestServiceStub,
    "training": training_pb2_grpc.TrainingServiceStub,
    "evaluation": evaluation_pb2_grpc.EvaluationServiceStub,
}


def service_of(job_id: str) -> str:
    """Job ids start with their kind (ingest-..., training-..., evaluation-...)."""
    kind = job_id.split("-", 1)[0]
    if kind not in STUBS:
        raise ValueError(f"job id {job_id!r} does not start with one of: {', '.join(STUBS)}")
    return kind


def add_parser(commands) -> None:
    jobs = commands.add_parser("jobs", help="list jobs")
    jobs.add_argument("--service", choices=sorted(STUBS), action="append",
                      help="only this service's jobs (repeatable; default: all)")
    jobs.set_defaults(run=run_jobs)
    watch = commands.add_parser("watch", help="follow a job until it ends")
    watch.add_argument("job_id")
    watch.set_defaults(run=run_watch)


def run_jobs(args) -> int:
    services = args.service or list(STUBS)
    with open_services(args, services) as channel:
        jobs = [job for name in services
                for job in STUBS[name](channel).ListJobs(common_pb2.ListJobsRequest()).jobs]
    print(f"{'job':<30}{'state':<12}{'progress':<22}result")
    for job in sorted(jobs, key=lambda j: j.created.ToNanoseconds(), reverse=True):
        state = common_pb2.JobState.Name(job.state)[len("JOB_STATE_"):].lower()
        progress = f"{job.progress.stage} {job.progress.done}/{job.progress.total}" if job.progress.stage else ""
        print(f"{job.id:<30}{state:<12}{progress:<22}{job.result or job.error.message}")
    return 0


def run_watch(args) -> int:
    service = service_of(args.job_id)
    with open_services(args, [service]) as channel:
        stub = STUBS[service](channel)
        job = follow(stub, stub.GetJob(common_pb2.GetJobRequest(job_id=args.job_id)))
    print(job.result)
    return 0
