"""An evaluation's report, `reports/<id>/` (the id is the job id):

- report.json: the plan, every metric (as the proto's MetricResult JSON,
  failed ones with their reason), the closest memorization pairs;
- report.html: one self-contained page people can read (tables, real and
  synthetic sample grids side by side, the closest pairs, training curves,
  plots; images inlined);
- the PNGs on their own.

Published with the store's publish protocol: files verified, manifest last.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format

from ctsynth.evaluation import figures
from ctsynth.evaluation.compute import EXPECTED
from ctsynth.evaluation.run import EvaluationRun
from ctsynth.registry import Registry
from ctsynth.storage import ObjectStore
from ctsynth.training.grid import GRID
from ctsynth.v1 import evaluation_pb2

ROOT = "reports"
CLOSEST_PAIRS = 8
CAPTIONS = {
    "samples_real.png": "real samples", "samples_synthetic.png": "synthetic samples",
    "memorization_pairs.png": "the synthetic samples closest to training data (left) and their nearest "
                              "training samples (right)",
    "memorization_distances.png": "distances to the training set", "training_curves.png": "training curves",
    "utility.png": "utility classifiers",
}
# Grids of small tiles, shown enlarged to this width (em).
TILED = {"samples_real.png": 22, "samples_synthetic.png": 22, "memorization_pairs.png": 11}
STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eee}
.failed{color:#a00}.grids{display:flex;gap:2em}figure{margin:0}img{max-width:100%}
img.tiles{image-rendering:pixelated}
small{color:#555}"""


def prefix(report_id: str) -> str:
    return f"{ROOT}/{report_id}"


def _images(run: EvaluationRun, extras: dict[str, Any]) -> dict[str, bytes]:
    images = {"samples_synthetic.png": figures.grid_png(run.draws[0].images)}
    try:
        images["samples_real.png"] = figures.grid_png(run.real_preview(GRID * GRID).images)
    except EXPECTED as exc:  # the metrics that needed it said so already; the report goes on
        run.reporter.warn("report", f"no real sample grid: {exc}")
    memorized = extras.get("memorization", {})
    if memorized:
        pixels = memorized["pixels"]
        images["memorization_pairs.png"] = figures.pairs_png(run.draws[0].images, memorized["train"],
                                                             pixels.closest(CLOSEST_PAIRS))
        images["memorization_distances.png"] = figures.distances_png(pixels)
    if "result" in extras.get("utility", {}):
        images["utility.png"] = figures.utility_png(extras["utility"]["result"])
    if run.plan.model is not None:
        models = Registry(run.store, "models", "model")
        name, version = run.plan.model.model.split(":")
        metrics_key = f"{models.prefix(name, version)}/metrics.json"
        if run.store.exists(metrics_key):
            curves = figures.curves_png(run.store.get_json(metrics_key).get("history", []))
            if curves is not None:
                images["training_curves.png"] = curves
    return images


def report_json(report_id: str, run: EvaluationRun, results: list[evaluation_pb2.MetricResult],
                extras: dict[str, Any], image_names: list[str]) -> dict[str, Any]:
    plan = run.plan
    memorized = extras.get("memorization", {})
    return {
        "id": report_id, "job_id": report_id, "created": datetime.now(timezone.utc).isoformat(),
        "model": plan.model.model if plan.model else "", "synthetic_dataset": plan.synthetic_dataset,
        "dataset": plan.dataset, "split": plan.split, "spatial_dims": plan.spatial_dims,
        "domain_extractor": run.domain_extractor, "plan": plan.to_json(),
        "metrics": [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in results],
        "memorization_pairs": [{"synthetic": s, "train": t, "distance": d}
                               for s, t, d in memorized["pixels"].closest(CLOSEST_PAIRS)] if memorized else [],
        "images": image_names,
    }


def _value(result: dict[str, Any]) -> str:
    if result.get("failed"):
        return f'<span class="failed">failed: {html.escape(result.get("error", ""))}</span>'
    text = f"{result.get('value', 0.0):.4g}"
    if result.get("repeats", 1) > 1 or result.get("std"):
        text += f" ± {result.get('std', 0.0):.3g}"
    return text


def report_html(summary: dict[str, Any], images: dict[str, bytes]) -> str:
    def image(name: str) -> str:
        data = base64.b64encode(images[name]).decode()
        tiles = f' class="tiles" style="width:{TILED[name]}em"' if name in TILED else ""
        return (f'<figure><img{tiles} src="data:image/png;base64,{data}" alt="{html.escape(CAPTIONS[name])}">'
                f"<figcaption><small>{html.escape(CAPTIONS[name])}</small></figcaption></figure>")

    rows = "".join(
        f"<tr><td>{html.escape(m['name'])}</td><td>{_value(m)}</td><td>{m.get('repeats', 0)}</td>"
        f"<td>{html.escape(m.get('feature_space', ''))}</td><td><small>"
        + ", ".join(f"{html.escape(k)}={v:.4g}" for k, v in sorted(m.get("details", {}).items()))
        + "</small></td></tr>" for m in summary["metrics"])
    source = summary["model"] or summary["synthetic_dataset"]
    plan = summary["plan"]
    facts = {"synthetic": source, "real": f"{summary['dataset']} ({summary['split']} split)",
             "dimensionality": f"{summary['spatial_dims']}D",
             "samples per draw": str(plan["model"]["count"]) if plan.get("model") else "the stored set",
             "draws": str(plan["repeats"]), "seed": str(plan["seed"]),
             "CT feature extractor": summary["domain_extractor"] or "-", "created": summary["created"]}
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>ctsynth report {html.escape(summary['id'])}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>Evaluation of {html.escape(source)}</h1><table>"
             + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
             + "</table>",
             "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>draws</th><th>feature space</th>"
             f"<th>details</th></tr>{rows}</table>"]
    if "samples_real.png" in images:
        parts.append("<h2>Samples</h2><div class=\"grids\">" + image("samples_real.png")
                     + image("samples_synthetic.png") + "</div>")
    else:
        parts.append("<h2>Samples</h2>" + image("samples_synthetic.png"))
    for name, title in (("memorization_pairs.png", "Closest to training data"),
                        ("memorization_distances.png", "Memorization"), ("utility.png", "Utility"),
                        ("training_curves.png", "Training")):
        if name in images:
            parts.append(f"<h2>{title}</h2>{image(name)}")
    if summary["memorization_pairs"]:
        parts.append("<table><tr><th>synthetic sample</th><th>nearest training sample</th><th>distance</th></tr>"
                     + "".join(f"<tr><td>{p['synthetic']}</td><td>{p['train']}</td><td>{p['distance']:.4g}</td></tr>"
                               for p in summary["memorization_pairs"]) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(store: ObjectStore, report_id: str, run: EvaluationRun,
                 results: list[evaluation_pb2.MetricResult], extras: dict[str, Any]) -> None:
    """Publish reports/<id>/, the id being the job's (nothing, if an earlier
    run of the job already did)."""
    if store.exists(f"{prefix(report_id)}/manifest.json"):
        return
    images = _images(run, extras)
    summary = report_json(report_id, run, results, extras, sorted(images))
    files = {"report.json": json.dumps(summary, indent=2, sort_keys=True).encode(),
             "report.html": report_html(summary, images).encode(), **images}
    store.publish(prefix(report_id), files, {key: summary[key] for key in (
        "id", "job_id", "created", "model", "synthetic_dataset", "dataset", "split", "domain_extractor")})
