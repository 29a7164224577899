"""An evaluation job from its plan to a published report: draw the synthetic
sets, compute the metrics, publish `reports/<job id>/`, and give the model's
registry entry its headline figures (`models/<name>/<version>/evaluation.json`,
which the model registry merges into `Model.headline`).
"""

from __future__ import annotations

from collections.abc import Callable

from ctsynth.evaluation.compute import compute_metrics
from ctsynth.evaluation.plan import EvaluationPlan
from ctsynth.evaluation.report import prefix, write_report
from ctsynth.evaluation.run import EvaluationRun
from ctsynth.evaluation.settings import EvaluationSettings
from ctsynth.jobs import JobContext, JobResult
from ctsynth.registry import Registry
from ctsynth.sampling.engine import SamplingEngine
from ctsynth.storage import ObjectStore
from ctsynth.v1 import common_pb2, evaluation_pb2

# Details worth a place in the headline beside each metric's value.
HEADLINE_DETAILS = {"pr": ("recall",), "ct-fid": ("precision", "recall"), "variety": ("real_kib",),
                    "utility": ("gain_extraction", "p_augmentation", "p_extraction"),
                    "efficiency": ("peak_memory_gb",)}


def headline(results: list[evaluation_pb2.MetricResult]) -> dict[str, float]:
    """Flat figures of the metrics that succeeded: `fid`, `ct_fid_recall`, ..."""
    figures = {}
    for result in results:
        if result.failed:
            continue
        key = result.name.replace("-", "_").replace(".", "_")
        figures[key] = result.value
        figures.update({f"{key}_{detail}": result.details[detail]
                        for detail in HEADLINE_DETAILS.get(result.name, ()) if detail in result.details})
    return figures


def update_headline(store: ObjectStore, model: str, results: list[evaluation_pb2.MetricResult]) -> None:
    """Merge the figures into the model version's evaluation.json (later evaluations win)."""
    models = Registry(store, "models", "model")
    name, version = model.split(":")
    key = f"{models.prefix(name, version)}/evaluation.json"
    current = store.get_json(key) if store.exists(key) else {}
    store.put_json(key, {**current, **headline(results)})


def artifact(store: ObjectStore, key: str, media_type: str) -> common_pb2.ArtifactRef:
    info = store.stat(key)
    return common_pb2.ArtifactRef(uri=store.uri_for(key), sha256=info.sha256 or "", size_bytes=info.size,
                                  media_type=media_type)


def run_evaluation(job: common_pb2.Job, request: dict, ctx: JobContext, *, store: ObjectStore,
                   settings: EvaluationSettings, engine: Callable[[], SamplingEngine]) -> JobResult:
    plan = EvaluationPlan.from_json(request)
    run = EvaluationRun(store, plan, settings, engine, ctx, job.id)
    run.make_draws()
    results, extras = compute_metrics(run)
    ctx.progress("report", 0, 1, "reports")
    write_report(store, job.id, run, results, extras)
    if plan.model is not None:
        update_headline(store, plan.model.model, results)
    ctx.progress("report", 1, 1, "reports")
    return JobResult(result=job.id, artifacts=(artifact(store, f"{prefix(job.id)}/report.json", "application/json"),
                                               artifact(store, f"{prefix(job.id)}/report.html", "text/html")))
