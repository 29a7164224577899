"""Running the metrics of a plan: each over every synthetic draw, reported
as mean ± std (the sample standard deviation over the draws, as seed 004
§3.4 reports FID over 3 repeats); a metric that cannot be computed is
reported failed with its reason while the others go on.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ctsynth.errors import ServiceError
from ctsynth.evaluation.catalog import METRICS, Outcome
from ctsynth.evaluation.run import EvaluationRun
from ctsynth.jobs import JobCancelled
from ctsynth.storage.errors import StorageError
from ctsynth.v1 import evaluation_pb2

log = logging.getLogger("ctsynth.evaluation")

# Failures a person can act on; anything else is a bug, logged with its traceback.
EXPECTED = (ServiceError, StorageError, ValueError, OSError)


def summarize(name: str, outcomes: list[Outcome]) -> evaluation_pb2.MetricResult:
    """Mean ± sample std over the draws, or a whole-run outcome's own."""
    first = outcomes[0]
    values = np.array([o.value for o in outcomes], dtype=np.float64)
    details = {key: float(np.mean([o.details[key] for o in outcomes])) for key in first.details}
    if first.repeats is not None:
        std, repeats = first.std, first.repeats
    else:
        std, repeats = (float(values.std(ddof=1)) if len(values) > 1 else 0.0), len(outcomes)
    return evaluation_pb2.MetricResult(name=name, value=float(values.mean()), std=std, repeats=repeats,
                                       details=details,
                                       feature_space=first.feature_space or METRICS[name].feature_space)


def failed(name: str, exc: BaseException) -> evaluation_pb2.MetricResult:
    reason = str(exc) if isinstance(exc, EXPECTED) else f"internal error: {type(exc).__name__}: {exc}"
    if not reason.startswith(f"{name}:"):
        reason = f"{name}: {reason}"
    return evaluation_pb2.MetricResult(name=name, failed=True, error=reason, feature_space=METRICS[name].feature_space)


def _outcomes(run: EvaluationRun, name: str) -> list[Outcome]:
    spec = METRICS[name]
    if not spec.per_draw:
        return [spec.compute(run)]
    outcomes = []
    for draw in range(len(run.draws)):
        run.reporter.check_cancelled()
        outcomes.append(spec.compute(run, draw))
    return outcomes


def compute_metrics(run: EvaluationRun) -> tuple[list[evaluation_pb2.MetricResult], dict[str, Any]]:
    """The plan's metrics in order, and the report extras of the first draw
    (or of the whole, for metrics that span draws) by metric name."""
    results, extras = [], {}
    for done, name in enumerate(run.plan.metrics):
        run.reporter.progress("metrics", done, len(run.plan.metrics), "metrics", message=name)
        try:
            outcomes = _outcomes(run, name)
        except JobCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one metric's failure must not stop the others
            if not isinstance(exc, EXPECTED):
                log.exception("metric failed", extra={"metric": name})
            results.append(failed(name, exc))
            run.reporter.warn(name, results[-1].error)
            continue
        results.append(summarize(name, outcomes))
        extras[name] = outcomes[0].extras
    run.reporter.progress("metrics", len(run.plan.metrics), len(run.plan.metrics), "metrics")
    return results, extras
