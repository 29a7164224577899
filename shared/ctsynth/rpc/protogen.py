"""Generate the gRPC stubs (messages, services and .pyi) from proto/.

`make proto` runs this; the staleness test runs it into a temporary folder
and compares, so the committed stubs can never drift from the contract.
Usage: python -m ctsynth.rpc.protogen PROTO_ROOT OUT_ROOT
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path("ctsynth") / "v1"


def proto_files(proto_root: Path) -> list[Path]:
    """The .proto files of the contract, relative to `proto_root`, sorted."""
    return sorted(p.relative_to(proto_root) for p in (proto_root / PACKAGE_DIR).glob("*.proto"))


def generate(proto_root: Path, out_root: Path) -> list[Path]:
    """Compile every proto under proto_root/ctsynth/v1 into out_root/ctsynth/v1."""
    from grpc_tools import protoc

    proto_root, out_root = Path(proto_root), Path(out_root)
    files = proto_files(proto_root)
    if not files:
        raise FileNotFoundError(f"no .proto files under {proto_root / PACKAGE_DIR}")
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {proto_root}")
    init = out_root / PACKAGE_DIR / "__init__.py"
    init.write_text('"""Generated gRPC stubs of the ctsynth.v1 contract (make proto)."""\n')
    return sorted((out_root / PACKAGE_DIR).glob("*.py*"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m ctsynth.rpc.protogen PROTO_ROOT OUT_ROOT")
    for path in generate(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
