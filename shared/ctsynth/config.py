"""Deployment settings from environment variables, validated at start-up.

A service reads these once and fails fast with the variable's name when one
is malformed, rather than failing later on the first request.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ctsynth.env_values import env_float, env_int
from ctsynth.roots import AllowedRoots

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def default_store_uri() -> str:
    """The embedded default: a directory in the user's data dir."""
    return (Path(platformdirs.user_data_dir("ctsynth")) / "store").as_uri()


def default_import_dir() -> Path:
    """Where an operator puts data to ingest by path: beside the default store."""
    return Path(platformdirs.user_data_dir("ctsynth")) / "import"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where local processes keep their state: CTSYNTH_STATE_DIR (tests set it) or the user's data dir."""
    env = os.environ if env is None else env
    return Path(env.get("CTSYNTH_STATE_DIR") or platformdirs.user_data_dir("ctsynth"))


def torch_device(value: str, variable: str):
    """`auto` (CUDA when present), or a torch device name; ValueError naming
    the variable otherwise."""
    import torch

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(value)
    except RuntimeError:
        raise ValueError(f"{variable}={value!r} is not a torch device (cpu, cuda, cuda:1)") from None


def _readable_file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ValueError(f"{name}={raw!r}: no such file")
    return path


@dataclass(frozen=True)
class ServerSettings:
    """How a service process listens, authenticates and shuts down."""

    store_uri: str
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_workers: int = 128  # above the sampling service's concurrency limit (64)
    grace_seconds: float = 30.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token: str | None = None
    # Where paths and URIs a client names may lie; empty: the store and import_dir.
    import_roots: tuple[str, ...] = ()
    import_dir: str = ""  # empty: default_import_dir()
    work_dir: str = ""  # the services' scratch space; empty: <state dir>/work

    def __post_init__(self) -> None:
        try:
            AllowedRoots(self.import_roots)
        except ValueError as exc:
            raise ValueError(f"CTSYNTH_IMPORT_ROOTS: {exc}") from None
        if self.import_dir and not Path(self.import_dir).is_absolute():
            raise ValueError(f"CTSYNTH_IMPORT_DIR={self.import_dir!r} must be an absolute path")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("CTSYNTH_TLS_CERT and CTSYNTH_TLS_KEY must be set together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("CTSYNTH_TLS_CLIENT_CA needs CTSYNTH_TLS_CERT and CTSYNTH_TLS_KEY")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0-65535")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ServerSettings":
        """Settings from CTSYNTH_* variables; keyword overrides win (CLI flags)."""
        env = os.environ if env is None else env
        token = env.get("CTSYNTH_AUTH_TOKEN", "").strip() or None
        token_file = _readable_file(env, "CTSYNTH_AUTH_TOKEN_FILE")
        if token_file is not None:
            token = token_file.read_text().strip() or None
            if token is None:
                raise ValueError(f"CTSYNTH_AUTH_TOKEN_FILE={token_file}: file is empty")
        metrics_port = env_int(env, "CTSYNTH_METRICS_PORT", -1, minimum=-1)
        values = dict(
            store_uri=env.get("CTSYNTH_STORE", "").strip() or default_store_uri(),
            host=env.get("CTSYNTH_HOST", "").strip() or "127.0.0.1",
            port=env_int(env, "CTSYNTH_PORT", 50051),
            metrics_port=None if metrics_port < 0 else metrics_port,
            max_message_bytes=env_int(env, "CTSYNTH_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, minimum=1024),
            max_workers=env_int(env, "CTSYNTH_MAX_WORKERS", 128, minimum=1),
            grace_seconds=env_float(env, "CTSYNTH_GRACE_SECONDS", 30.0),
            tls_cert=_readable_file(env, "CTSYNTH_TLS_CERT"),
            tls_key=_readable_file(env, "CTSYNTH_TLS_KEY"),
            tls_client_ca=_readable_file(env, "CTSYNTH_TLS_CLIENT_CA"),
            auth_token=token,
            import_roots=tuple(r.strip() for r in env.get("CTSYNTH_IMPORT_ROOTS", "").split(",") if r.strip()),
            import_dir=env.get("CTSYNTH_IMPORT_DIR", "").strip(),
            work_dir=env.get("CTSYNTH_WORK_DIR", "").strip() or str(state_dir(env) / "work"),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def allowed_roots(self) -> AllowedRoots:
        """Where a client-named source or weights file may lie (see ctsynth.roots)."""
        store = self.store_uri if "://" in self.store_uri else str(Path(self.store_uri).expanduser().resolve())
        return AllowedRoots(self.import_roots or (store, self.import_dir or str(default_import_dir())))

    def service_work_dir(self, service: str) -> Path:
        """One service's scratch folder, per store (services of different stores never share or clean
        each other's). Temporary data lives here, not in the system temp dir, so a restarted service
        can remove what a crashed one left behind."""
        store = hashlib.sha256(self.store_uri.encode()).hexdigest()[:16]
        return Path(self.work_dir or state_dir() / "work") / store / service
