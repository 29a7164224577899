"""`ctsynth sample`: synthetic images or volumes from a trained model, as files."""

from __future__ import annotations

import argparse

from ctsynth.cli.connection import open_services
from ctsynth.client import SamplingClient
from ctsynth.proto_enums import CONDITION, OUTPUT_FORMAT, SAMPLER_KIND


def add_parser(commands) -> None:
    parser = commands.add_parser("sample", help="generate synthetic samples from a model into a folder")
    parser.add_argument("--model", required=True, help="NAME[:version] (default: the latest version)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same samples")
    parser.add_argument("--condition", choices=CONDITION.names, help="conditional models only")
    parser.add_argument("--sampler", choices=SAMPLER_KIND.choices, help="diffusion models only")
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (default: the model's)")
    parser.add_argument("--eta", type=float, help="DDIM stochasticity (default 0)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    parser.add_argument("--psi", type=float, help="truncation psi (style GANs only)")
    parser.add_argument("--format", choices=OUTPUT_FORMAT.choices, default="npy",
                        help="npy: float16 in [0, 1]; hu: int16 Hounsfield units (.npy); png, png16: 2D only; "
                             "dicom: CT files marked synthetic; nifti: volumes only")
    parser.add_argument("--batch-size", type=int, default=0, help="items per streamed batch (default: the server's)")
    parser.add_argument("--slab-slices", type=int, help="volumes: at most this many slices per streamed message "
                                                        "(default: as many as fit)")
    parser.add_argument("--mask", help="mask-conditioned models: a mask file (.npy, .nii[.gz], .png) for every item")
    parser.add_argument("--mask-uri", help="mask-conditioned models: a mask object in the server's store")
    parser.add_argument("--nodule", action="append", default=[], type=nodule_argument, metavar="CENTRE:DIAMETER",
                        help="mask-conditioned models: a nodule at voxel CENTRE ([z,]row,col) of DIAMETER mm, "
                             "e.g. 20,64,40:8; 'mm:' first for an LPS position x,y[,z] in mm; ':texture=5,...' "
                             "after for reader ratings; repeat for more nodules")
    parser.add_argument("--nodules", type=int, default=0, metavar="N",
                        help="mask-conditioned models: N nodules per item, placed like the training set's")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def nodule_argument(text: str) -> dict:
    """[mm:]C1,C2[,C3]:DIAMETER[:name=value,...] as the client's nodule mapping."""
    units = "voxel"
    if text.startswith("mm:"):
        units, text = "mm", text[3:]
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError("expected CENTRE:DIAMETER[:RATINGS]")
        centre = [float(value) for value in parts[0].split(",")]
        ratings = dict(item.split("=") for item in parts[2].split(",")) if len(parts) == 3 else {}
        return {"centre": centre, "diameter_mm": float(parts[1]), "units": units,
                "characteristics": {name: int(value) for name, value in ratings.items()}}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}; e.g. 20,64,40:8 or mm:-30,12,5:8:texture=5") from None


def run(args) -> int:
    with open_services(args, ["sampling"]) as channel:
        written = SamplingClient(channel).save(
            args.out, args.model, args.count, seed=args.seed, condition=args.condition, sampler=args.sampler,
            steps=args.steps, eta=args.eta, guidance=args.guidance, psi=args.psi, format=args.format,
            batch_size=args.batch_size, slab_slices=args.slab_slices, mask=args.mask, mask_uri=args.mask_uri,
            nodules=args.nodule, nodule_count=args.nodules, progress=not args.quiet)
    print(f"{len(written)} samples in {args.out}")
    return 0
