"""The four ctsynth services' short names (as on the command line) and their
fully qualified gRPC names, read from the proto descriptors.

Servicers, the server's health table and clients all name services by these;
this module imports only the message descriptors, so a client that needs a
name pulls in no servicer and no server.
"""

from __future__ import annotations

from ctsynth.v1 import evaluation_pb2, ingest_pb2, sampling_pb2, training_pb2

SERVICE_NAMES: dict[str, str] = {
    name: module.DESCRIPTOR.services_by_name[service].full_name
    for name, module, service in (
        ("ingest", ingest_pb2, "IngestService"),
        ("training", training_pb2, "TrainingService"),
        ("sampling", sampling_pb2, "SamplingService"),
        ("evaluation", evaluation_pb2, "EvaluationService"),
    )
}
