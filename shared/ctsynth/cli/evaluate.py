"""`ctsynth evaluate`, `ctsynth report` and `ctsynth reports`: evaluation
jobs and the reports they publish."""

from __future__ import annotations

from ctsynth.cli.connection import open_services
from ctsynth.client.jobs import follow
from ctsynth.client import SamplingClient
from ctsynth.proto_enums import CONDITION, SAMPLER_KIND
from ctsynth.v1 import evaluation_pb2, evaluation_pb2_grpc

DETAILS_SHOWN = 4


def build_request(args) -> evaluation_pb2.StartEvaluationRequest:
    request = evaluation_pb2.StartEvaluationRequest(
        dataset=args.dataset, split=args.split, repeats=args.repeats, seed=args.seed,
        metrics=[m.strip() for m in (args.metrics or "").split(",") if m.strip()],
        inception_weights=args.inception_weights or "", med3d_weights=args.med3d_weights or "",
        domain_extractor=args.domain_extractor or "", kid_subset_size=args.kid_subset_size)
    if args.synthetic_dataset:
        request.synthetic_dataset = args.synthetic_dataset
        return request
    sample = SamplingClient.request(args.model, args.count, seed=args.seed, condition=args.condition,
                                    sampler=args.sampler, steps=args.steps, eta=args.eta, guidance=args.guidance,
                                    psi=args.psi)
    request.model.CopyFrom(evaluation_pb2.ModelSamples(model=sample.model, count=sample.count, seed=sample.seed,
                                                       condition=sample.condition, sampler=sample.sampler))
    if sample.HasField("truncation_psi"):
        request.model.truncation_psi = sample.truncation_psi
    return request


def add_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="measure a model's synthetic data against a real dataset")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="NAME[:version]: draw the synthetic set from this model")
    source.add_argument("--synthetic-dataset", help="NAME[:version]: a stored synthetic set instead")
    parser.add_argument("--dataset", required=True, help="the real dataset, NAME[:version]")
    parser.add_argument("--split", default="test", help="real split to compare with (default: test)")
    parser.add_argument("--count", type=int, default=1000, help="synthetic samples per draw")
    parser.add_argument("--metrics", help="comma-separated: fid, kid, pr, ct-fid, fid-3d, fid-2.5d, ms-ssim, "
                                          "variety, memorization, utility, efficiency (default: per dimensionality)")
    parser.add_argument("--inception-weights", metavar="PATH|URI",
                        help="InceptionV3 weights for fid/kid/pr (torch-fidelity's "
                             "pt_inception-2015-12-05-6726825d.pth); a path on the evaluation service's machine "
                             "or an object-store URI")
    parser.add_argument("--med3d-weights", metavar="PATH|URI", help="MedicalNet ResNet weights for fid-3d")
    parser.add_argument("--domain-extractor", help="CT feature extractor NAME[:version] (default: trained on demand)")
    parser.add_argument("--repeats", type=int, default=1, help="independent synthetic draws (mean ± std)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kid-subset-size", type=int, default=0, help="default: min(1000, the smaller set)")
    parser.add_argument("--condition", choices=CONDITION.names, help="conditional models only")
    parser.add_argument("--sampler", choices=SAMPLER_KIND.choices, help="diffusion models only")
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (default: the model's)")
    parser.add_argument("--eta", type=float, help="DDIM stochasticity")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    parser.add_argument("--psi", type=float, help="truncation psi (style GANs only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_evaluate)

    report = commands.add_parser("report", help="show an evaluation report's headline table")
    report.add_argument("id", help="the report id (the evaluation job's id)")
    report.set_defaults(run=run_report)

    reports = commands.add_parser("reports", help="list evaluation reports")
    reports.add_argument("--model", default="", help="NAME[:version] (default: all)")
    reports.set_defaults(run=run_reports)


def format_report(report: evaluation_pb2.Report) -> str:
    lines = [f"report {report.id}: {report.model or report.synthetic_dataset} against {report.dataset} "
             f"({report.split} split)", f"{'metric':<14}{'value':>22}  {'space':<10}details"]
    for metric in report.metrics:
        if metric.failed:
            lines.append(f"{metric.name:<14}{'failed':>22}  {metric.error}")
            continue
        value = f"{metric.value:.4g}" + (f" ± {metric.std:.3g}" if metric.repeats > 1 or metric.std else "")
        details = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metric.details.items())[:DETAILS_SHOWN])
        lines.append(f"{metric.name:<14}{value:>22}  {metric.feature_space:<10}{details}")
    lines += [f"html: {report.html.uri}", f"json: {report.json.uri}"]
    return "\n".join(lines)


def run_evaluate(args) -> int:
    request = build_request(args)
    with open_services(args, ["evaluation"]) as channel:
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        job = follow(stub, stub.StartEvaluation(request), quiet=args.quiet)
        report = stub.GetReport(evaluation_pb2.GetReportRequest(report_id=job.result))
    print(format_report(report))
    return 0


def run_report(args) -> int:
    with open_services(args, ["evaluation"]) as channel:
        report = evaluation_pb2_grpc.EvaluationServiceStub(channel).GetReport(
            evaluation_pb2.GetReportRequest(report_id=args.id))
    print(format_report(report))
    return 0


def run_reports(args) -> int:
    with open_services(args, ["evaluation"]) as channel:
        response = evaluation_pb2_grpc.EvaluationServiceStub(channel).ListReports(
            evaluation_pb2.ListReportsRequest(model=args.model))
    for report in response.reports:
        figures = ", ".join(f"{m.name}={m.value:.4g}" for m in report.metrics if not m.failed)
        print(f"{report.id}  {report.created.ToJsonString()}  {report.model or report.synthetic_dataset}  {figures}")
    return 0
