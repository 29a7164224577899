"""`ctsynth ingest` and `ctsynth datasets`."""

from __future__ import annotations

import sys
from pathlib import Path

from ctsynth.client.jobs import follow
from ctsynth.cli.connection import open_services
from ctsynth.proto_enums import MASK_MODE, SOURCE_KIND, VIEW
from ctsynth.v1 import ingest_pb2, ingest_pb2_grpc


def _numbers(text: str, count: int, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected {count} comma-separated numbers") from None
    if len(values) != count:
        raise ValueError(f"{option} {text!r}: expected {count} comma-separated numbers")
    return values


def build_request(args) -> ingest_pb2.StartIngestRequest:
    """The StartIngestRequest for the command's flags (the service validates values)."""
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    unknown = [v for v in views if v not in VIEW.names]
    if unknown:
        raise ValueError(f"--views: unknown view {unknown[0]!r}; use {', '.join(VIEW.names)}")
    for option, value in (("--size", args.size), ("--volume-size", args.volume_size)):
        if value <= 0:  # 0 would mean "the default" on the wire
            raise ValueError(f"{option} {value}: must be a positive number of pixels")
    lo, hi = _numbers(args.window, 2, "--window")
    train, validation, test = _numbers(args.split, 3, "--split")
    return ingest_pb2.StartIngestRequest(
        source=args.source,
        source_kind=SOURCE_KIND.number(args.kind),
        dataset=args.dataset,
        window=ingest_pb2.Window(min_hu=lo, max_hu=hi),
        slices=ingest_pb2.SliceOptions(views=[VIEW.number(v) for v in views], size=args.size,
                                       no_balance=args.no_balance),
        volumes=ingest_pb2.VolumeOptions(disabled=args.no_volumes, size=args.volume_size,
                                         export_nifti=args.nifti),
        masks=ingest_pb2.MaskOptions(
            mode=MASK_MODE.number("consensus" if args.consensus else "merge"),
            consensus_level=args.consensus or 0.0),
        split=ingest_pb2.SplitFractions(train=train, validation=validation, test=test),
        seed=args.seed,
        max_series=args.max_series,
    )


def add_parser(commands) -> None:
    parser = commands.add_parser("ingest", help="turn CT studies into a versioned dataset")
    parser.add_argument("--source", required=True, help="DICOM tree, slice-image folder, or object-store URI")
    parser.add_argument("--dataset", required=True, help="dataset name")
    parser.add_argument("--kind", choices=SOURCE_KIND.choices, default="auto", help="source kind (default: detect)")
    parser.add_argument("--views", default="axial", help="comma-separated: axial,coronal,sagittal")
    parser.add_argument("--size", type=int, default=256, help="slice size in pixels")
    parser.add_argument("--volume-size", type=int, default=128, help="volume edge in voxels")
    parser.add_argument("--no-volumes", action="store_true", help="write no 3D volumes")
    parser.add_argument("--nifti", action="store_true", help="also export volumes as NIfTI")
    parser.add_argument("--window", default="-1000,400", help="HU window MIN,MAX")
    parser.add_argument("--no-balance", action="store_true", help="keep every slice instead of balancing")
    parser.add_argument("--consensus", type=float, default=None, metavar="LEVEL",
                        help="pylidc consensus masks at this agreement level instead of merging all readers")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,validation,test fractions by patient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-series", type=int, default=0, help="stop after this many series (0: all)")
    parser.set_defaults(run=run_ingest)

    listing = commands.add_parser("datasets", help="list datasets with their counts")
    listing.add_argument("name", nargs="?", default="", help="only this dataset")
    listing.set_defaults(run=run_datasets)


def run_ingest(args) -> int:
    request = build_request(args)
    own_folder = () if "://" in args.source else (str(Path(args.source).expanduser().resolve()),)
    with open_services(args, ["ingest"], import_roots=own_folder) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        job = follow(stub, stub.StartIngest(request))
    if job.warnings:
        print(f"{len(job.warnings)} warning(s): files or series were skipped (see above)", file=sys.stderr)
    print(job.result)
    return 0


def run_datasets(args) -> int:
    with open_services(args, ["ingest"]) as channel:
        response = ingest_pb2_grpc.IngestServiceStub(channel).ListDatasets(
            ingest_pb2.ListDatasetsRequest(name=args.name))
    print(f"{'dataset':<28}{'patients':>9}{'series':>8}{'slices':>8}{'tumor':>7}{'volumes':>9}  train/val/test slices")
    for d in response.datasets:
        splits = "/".join(str(d.splits[s].slices) for s in ("train", "validation", "test"))
        print(f"{d.name + ':' + d.version:<28}{d.patients:>9}{d.series:>8}{d.slices_count:>8}"
              f"{d.tumor_slices:>7}{d.volumes_count:>9}  {splits}")
    return 0
