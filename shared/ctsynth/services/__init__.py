"""The four ctsynth services: what each one is called, how its servicer is
built and how it is added to a gRPC server.

A servicer is thin: it parses the request, calls into the library and
streams results. Services whose logic has not landed yet answer
UNIMPLEMENTED through the generated base class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ctsynth.v1 import (
    evaluation_pb2,
    evaluation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    sampling_pb2,
    sampling_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # short name used on the command line
    full_name: str  # fully qualified gRPC service name
    create: Callable  # (store, settings) -> servicer
    register: Callable  # (servicer, server) -> None


def _spec(name: str, module, grpc_module, service: str, servicer: str | None = None) -> ServiceSpec:
    """`servicer` is "module:Class", imported only when the service starts,
    so hosting one service does not import every other one's dependencies."""
    base = getattr(grpc_module, f"{service}Servicer")

    def create(store, settings):
        if servicer is None:
            return base()
        module_name, class_name = servicer.split(":")
        return getattr(importlib.import_module(module_name), class_name)(store, settings)

    return ServiceSpec(
        name=name,
        full_name=module.DESCRIPTOR.services_by_name[service].full_name,
        create=create,
        register=getattr(grpc_module, f"add_{service}Servicer_to_server"),
    )


SERVICES: dict[str, ServiceSpec] = {
    "ingest": _spec("ingest", ingest_pb2, ingest_pb2_grpc, "IngestService", "ctsynth.services.ingest:IngestServicer"),
    "training": _spec("training", training_pb2, training_pb2_grpc, "TrainingService",
                      "ctsynth.services.training:TrainingServicer"),
    "sampling": _spec("sampling", sampling_pb2, sampling_pb2_grpc, "SamplingService",
                      "ctsynth.services.sampling:SamplingServicer"),
    "evaluation": _spec("evaluation", evaluation_pb2, evaluation_pb2_grpc, "EvaluationService",
                        "ctsynth.services.evaluation:EvaluationServicer"),
}
