"""What a module of the package imports, read from its syntax tree (anywhere
in it, lazy imports included), for the tests of the package's layering."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import ctsynth

PACKAGE = Path(ctsynth.__file__).resolve().parent


def imported_names(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, dotted name) of every module and imported name in `path`, with
    relative imports made absolute against its place under `package_dir`."""
    module = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found += [(node.lineno, base), *((node.lineno, f"{base}.{alias.name}") for alias in node.names)]
    return found


def imports_of(path: Path, prefixes: tuple[str, ...], package_dir: Path = PACKAGE) -> list[str]:
    """"file:line: name" for each import in `path` of a module named by or under one of `prefixes`."""
    return [f"{path.relative_to(package_dir)}:{line}: {name}" for line, name in imported_names(path, package_dir)
            if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)]


def modules_loaded_by(*modules: str) -> list[str]:
    """Every module a fresh interpreter holds after importing `modules` (this
    checkout's package first on the path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    code = f"import sys, {', '.join(modules)}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()
