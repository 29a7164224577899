"""`ctsynth train`, `ctsynth models`, `ctsynth families`."""

from __future__ import annotations

import json

from google.protobuf import struct_pb2

from ctsynth.client.jobs import follow
from ctsynth.cli.connection import open_services
from ctsynth.proto_enums import PRECISION
from ctsynth.v1 import common_pb2, training_pb2, training_pb2_grpc


def parse_settings(pairs: list[str]) -> dict:
    """`key=value` pairs; values are read as JSON when they parse (numbers,
    booleans, lists), as strings otherwise."""
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected key=value")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return values


def build_request(args) -> training_pb2.SubmitTrainingRequest:
    hyperparameters = struct_pb2.Struct()
    hyperparameters.update(parse_settings(args.set))
    budget = training_pb2.Budget()
    if args.epochs is not None:
        budget.epochs = args.epochs
    elif args.kimg is not None:
        budget.kimg = args.kimg
    else:
        budget.steps = args.steps
    return training_pb2.SubmitTrainingRequest(
        family=args.family, dataset=args.dataset, split=args.split, name=args.name or "",
        hyperparameters=hyperparameters,
        scaling=training_pb2.Scaling(workers=args.workers, gpus_per_worker=args.gpus, cpus_per_worker=args.cpus),
        precision=PRECISION.number(args.precision), budget=budget, checkpoint_interval=args.checkpoint_interval,
        seed=args.seed, image_size=args.size, batch_size=args.batch_size, resume_from=args.resume_from or "",
    )


def add_parser(commands) -> None:
    parser = commands.add_parser("train", help="train a model on a dataset (Ray Train)")
    parser.add_argument("--family", required=True, help="gan, wgan, dcgan, wgan_gp, unet_gan, stylegan2, vae, vqvae, ldm, rflow, ddpm3d")
    parser.add_argument("--dataset", required=True, help="NAME[:version]")
    parser.add_argument("--split", default="train")
    parser.add_argument("--name", help="model name (default: the family)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=1000)
    budget.add_argument("--epochs", type=float)
    budget.add_argument("--kimg", type=float, help="thousands of real images shown")
    parser.add_argument("--size", type=int, default=0, help="image size (default: the dataset's)")
    parser.add_argument("--batch-size", type=int, default=0, help="default: the family's")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP ranks)")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per worker")
    parser.add_argument("--cpus", type=float, default=1.0, help="CPUs per worker")
    parser.add_argument("--precision", choices=PRECISION.names, default="fp32")
    parser.add_argument("--checkpoint-interval", type=int, default=0, help="steps (default: a fifth of the run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume-from", help="continue from model NAME:version")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter")
    parser.set_defaults(run=run_train)

    models = commands.add_parser("models", help="list trained model versions")
    models.add_argument("--family", default="")
    models.set_defaults(run=run_models)

    families = commands.add_parser("families", help="list model families and their hyperparameters")
    families.set_defaults(run=run_families)


def run_train(args) -> int:
    request = build_request(args)
    with open_services(args, ["training"]) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        job = follow(stub, stub.SubmitTraining(request))
    print(job.result)
    return 0


def run_models(args) -> int:
    with open_services(args, ["training"]) as channel:
        response = training_pb2_grpc.TrainingServiceStub(channel).ListModels(
            common_pb2.ListModelsRequest(family=args.family))
    print(f"{'model':<28}{'family':<11}{'dims':>5}{'steps':>8}  dataset            headline")
    for m in response.models:
        if m.broken_reason:
            print(f"{m.name + ':' + m.version:<28}BROKEN: {m.broken_reason}")
            continue
        headline = ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.headline.items())[:4])
        print(f"{m.name + ':' + m.version:<28}{m.family:<11}{m.spatial_dims:>5}{m.step:>8}  {m.dataset:<18} {headline}")
    return 0


def run_families(args) -> int:
    with open_services(args, ["training"]) as channel:
        response = training_pb2_grpc.TrainingServiceStub(channel).ListFamilies(training_pb2.ListFamiliesRequest())
    for family in response.families:
        flags = ", ".join(f for f, on in (("conditional", family.conditional), ("needs masks", family.needs_masks)) if on)
        print(f"{family.name} ({family.spatial_dims}D{', ' + flags if flags else ''}): {family.description}")
        print("   " + " ".join(p.name for p in family.hyperparameters))
    return 0
