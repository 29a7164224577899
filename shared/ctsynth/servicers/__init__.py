"""The four ctsynth services: how each one's servicer is built and added to
a gRPC server, and `host_services` to run some of them.

A servicer is thin: it parses the request, calls into the library and
streams results.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from ctsynth.config import ServerSettings
from ctsynth.rpc.server import ServiceHost, ServiceSpec, build_server
from ctsynth.service_names import SERVICE_NAMES
from ctsynth.v1 import evaluation_pb2_grpc, ingest_pb2_grpc, sampling_pb2_grpc, training_pb2_grpc


def _spec(name: str, grpc_module, service: str, servicer: str) -> ServiceSpec:
    """`servicer` is "module:Class", imported only when the service starts,
    so hosting one service does not import every other one's dependencies."""

    def create(store, settings):
        module_name, class_name = servicer.split(":")
        return getattr(importlib.import_module(module_name), class_name)(store, settings)

    return ServiceSpec(name=name, full_name=SERVICE_NAMES[name], create=create,
                       register=getattr(grpc_module, f"add_{service}Servicer_to_server"))


SERVICES: dict[str, ServiceSpec] = {
    "ingest": _spec("ingest", ingest_pb2_grpc, "IngestService", "ctsynth.servicers.ingest:IngestServicer"),
    "training": _spec("training", training_pb2_grpc, "TrainingService", "ctsynth.servicers.training:TrainingServicer"),
    "sampling": _spec("sampling", sampling_pb2_grpc, "SamplingService", "ctsynth.servicers.sampling:SamplingServicer"),
    "evaluation": _spec("evaluation", evaluation_pb2_grpc, "EvaluationService",
                        "ctsynth.servicers.evaluation:EvaluationServicer"),
}


def host_services(names: Iterable[str], settings: ServerSettings, *, ready: bool = True) -> ServiceHost:
    """A started server hosting the named services (see `build_server`)."""
    return build_server([SERVICES[name] for name in names], settings, ready=ready)
