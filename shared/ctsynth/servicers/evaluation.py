"""EvaluationService: a thin servicer over `ctsynth.evaluation` and the job
manager. A request is validated into a plan when it is submitted (bad
values INVALID_ARGUMENT naming the field, unknown models and datasets
NOT_FOUND); the job draws the synthetic set in-process through the sampling
service's engine, so evaluating needs no second network hop.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

from google.protobuf import json_format

from ctsynth.config import ServerSettings
from ctsynth.errors import InvalidArgument, NotFound
from ctsynth.evaluation.job import run_evaluation
from ctsynth.evaluation.plan import plan_evaluation
from ctsynth.evaluation.report import ROOT, prefix
from ctsynth.evaluation.settings import EvaluationSettings
from ctsynth.jobs import JobManager
from ctsynth.registry import parse_ref
from ctsynth.sampling.engine import SamplingEngine
from ctsynth.sampling.settings import SamplingSettings
from ctsynth.servicers.jobs import JobRpcs
from ctsynth.servicers.sampling import sample_spec
from ctsynth.storage import ObjectNotFound, ObjectStore
from ctsynth.v1 import common_pb2, evaluation_pb2, evaluation_pb2_grpc, sampling_pb2

FIELDS = ("synthetic_dataset", "dataset", "split", "inception_weights", "med3d_weights", "domain_extractor",
          "repeats", "seed", "kid_subset_size", "spatial_dims")


def request_values(request: evaluation_pb2.StartEvaluationRequest) -> dict:
    """The request as the plain values `plan_evaluation` takes; the model's
    sampling fields are read as the sampling service reads them."""
    values = {name: getattr(request, name) for name in FIELDS}
    values["metrics"] = list(request.metrics)
    if request.HasField("model"):
        model = request.model
        sample = sampling_pb2.SampleRequest(model=model.model, count=model.count, seed=model.seed,
                                            condition=model.condition, sampler=model.sampler)
        if model.HasField("truncation_psi"):
            sample.truncation_psi = model.truncation_psi
        try:
            spec = sample_spec(sample)
        except InvalidArgument as exc:
            raise InvalidArgument(f"model.{exc.field}", str(exc).split(": ", 1)[-1]) from None
        values["model"] = {"model": model.model, "count": model.count, "seed": model.seed,
                           "condition": spec.condition, "sampler": dict(spec.sampler),
                           "truncation_psi": spec.truncation_psi}
    return values


def _artifact(store: ObjectStore, key: str, entry: dict, media_type: str) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(uri=store.uri_for(key), sha256=entry["sha256"], size_bytes=entry["size"],
                                  media_type=media_type)


def report_message(store: ObjectStore, report_id: str) -> evaluation_pb2.Report:
    """The Report of a published reports/<id>/."""
    if not report_id or "/" in report_id:
        raise NotFound(f"no report {report_id!r}")
    try:
        files = store.read_manifest(prefix(report_id))["files"]
    except ObjectNotFound:
        raise NotFound(f"no report {report_id!r} (it is published when its evaluation job succeeds)") from None
    summary = store.get_json(f"{prefix(report_id)}/report.json")
    message = evaluation_pb2.Report(
        id=summary["id"], job_id=summary["job_id"], model=summary["model"],
        synthetic_dataset=summary["synthetic_dataset"], dataset=summary["dataset"], split=summary["split"],
        domain_extractor=summary["domain_extractor"],
        metrics=[json_format.ParseDict(m, evaluation_pb2.MetricResult()) for m in summary["metrics"]])
    message.created.FromDatetime(datetime.fromisoformat(summary["created"]))
    message.json.CopyFrom(_artifact(store, f"{prefix(report_id)}/report.json", files["report.json"],
                                    "application/json"))
    message.html.CopyFrom(_artifact(store, f"{prefix(report_id)}/report.html", files["report.html"], "text/html"))
    message.images.extend(_artifact(store, f"{prefix(report_id)}/{name}", files[name], "image/png")
                          for name in summary["images"])
    return message


def list_reports(store: ObjectStore, model: str = "", page_size: int = 0,
                 page_token: str = "") -> tuple[list[evaluation_pb2.Report], str]:
    """Reports, newest first, optionally of one model ("name" or "name:version")."""
    wanted = parse_ref(model, "model") if model else None
    found = []
    for info in store.list(f"{ROOT}/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            manifest = store.get_json(info.key)
            name, _, version = manifest.get("model", "").partition(":")
            if wanted is None or (name == wanted.name and wanted.version in (None, version)):
                found.append((manifest["published_at"], parts[1]))
    ids = [report_id for _, report_id in sorted(found, reverse=True)]
    if page_token:
        if page_token not in ids:
            raise NotFound(f"page_token {page_token!r} does not name a listed report")
        ids = ids[ids.index(page_token) + 1:]
    token = ids[page_size - 1] if 0 < page_size < len(ids) else ""
    return [report_message(store, report_id) for report_id in (ids[:page_size] if page_size > 0 else ids)], token


class EvaluationServicer(JobRpcs, evaluation_pb2_grpc.EvaluationServiceServicer):
    def __init__(self, store: ObjectStore, settings: ServerSettings, evaluation: EvaluationSettings | None = None,
                 sampling: SamplingSettings | None = None):
        self._store = store
        self._settings = dataclasses.replace(evaluation or EvaluationSettings.from_env(),
                                             import_roots=settings.allowed_roots().roots)
        self._sampling = sampling or SamplingSettings.from_env()
        self._max_message_bytes = settings.max_message_bytes
        self._engine: SamplingEngine | None = None
        self._engine_lock = threading.Lock()
        self._jobs = JobManager(store, "evaluation", lambda job, request, ctx: run_evaluation(
            job, request, ctx, store=store, settings=self._settings, engine=self.engine))
        self._jobs.recover()

    def engine(self) -> SamplingEngine:
        """The sampling engine, made on the first evaluation that draws from a model."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = SamplingEngine(self._store, self._sampling, max_message_bytes=self._max_message_bytes)
            return self._engine

    def StartEvaluation(self, request, context):
        plan = plan_evaluation(request_values(request), self._store, self._settings, self._sampling.max_count)
        return self._jobs.submit(plan.to_json())

    def GetReport(self, request, context):
        return report_message(self._store, request.report_id)

    def ListReports(self, request, context):
        reports, token = list_reports(self._store, request.model, request.page_size, request.page_token)
        return evaluation_pb2.ListReportsResponse(reports=reports, next_page_token=token)

    def close(self) -> None:
        super().close()
        if self._engine is not None:
            self._engine.close()
