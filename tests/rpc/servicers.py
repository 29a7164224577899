"""A test servicer hosted with the real bootstrap: it implements two
IngestService methods with behaviour the tests control through the request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ctsynth.errors import InvalidArgument
from ctsynth.servicers import ServiceSpec
from ctsynth.storage.errors import ObjectNotFound
from ctsynth.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc


class ScriptedIngest(ingest_pb2_grpc.IngestServiceServicer):
    """GetJob's job_id says what to do: "ok", "invalid", "missing", "crash",
    "until-ended" (returns half a second after the call has ended: give it
    a deadline; a stop that does not wait for handlers misses its log), or
    "sleep:<seconds>:<marker file>" (touches the marker, then sleeps)."""

    def GetJob(self, request, context):
        action = request.job_id
        if action == "invalid":
            raise InvalidArgument("job_id", "must be a job id")
        if action == "missing":
            raise ObjectNotFound("jobs/missing.json", "file:///srv/ctsynth/store/jobs/missing.json")
        if action == "crash":
            raise RuntimeError("boom")
        if action == "until-ended":
            ended = threading.Event()
            if context.add_callback(ended.set):
                ended.wait()
                time.sleep(0.5)
        if action.startswith("sleep:"):
            _, seconds, marker = action.split(":", 2)
            Path(marker).touch()
            time.sleep(float(seconds))
        return common_pb2.Job(id=action, kind="test")

    def WatchJob(self, request, context):
        for sequence in range(3):
            yield common_pb2.JobEvent(job_id=request.job_id, sequence=sequence)
        if request.job_id == "fail-after-3":
            raise InvalidArgument("job_id", "failed mid-stream")


SCRIPTED = ServiceSpec(
    name="scripted",
    full_name=ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    create=lambda store, settings: ScriptedIngest(),
    register=ingest_pb2_grpc.add_IngestServiceServicer_to_server,
)
