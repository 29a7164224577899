"""Deployment settings fail fast with the variable's name."""

from __future__ import annotations

import pytest

from ctsynth.config import ServerSettings


def test_defaults_from_an_empty_environment():
    settings = ServerSettings.from_env({})
    assert settings.port == 50051 and settings.metrics_port is None
    assert settings.store_uri.startswith("file://")
    assert settings.auth_token is None and settings.tls_cert is None


def test_overrides_win_over_environment():
    settings = ServerSettings.from_env({"CTSYNTH_PORT": "7000", "CTSYNTH_STORE": "s3://b/p"}, port=8000)
    assert settings.port == 8000 and settings.store_uri == "s3://b/p"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CTSYNTH_PORT": "http"}, "CTSYNTH_PORT='http' is not an integer"),
        ({"CTSYNTH_PORT": "70000"}, "outside 0-65535"),
        ({"CTSYNTH_MAX_MESSAGE_BYTES": "10"}, "CTSYNTH_MAX_MESSAGE_BYTES=10 must be >= 1024"),
        ({"CTSYNTH_GRACE_SECONDS": "-1"}, "CTSYNTH_GRACE_SECONDS=-1 must be a finite number >= 0"),
        ({"CTSYNTH_TLS_CERT": "/nonexistent/cert.pem"}, "CTSYNTH_TLS_CERT='/nonexistent/cert.pem': no such file"),
    ],
)
def test_malformed_variables_are_named(env, message):
    with pytest.raises(ValueError) as err:
        ServerSettings.from_env(env)
    assert message in str(err.value)


def test_tls_cert_without_key_is_refused(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ValueError, match="CTSYNTH_TLS_CERT and CTSYNTH_TLS_KEY must be set together"):
        ServerSettings.from_env({"CTSYNTH_TLS_CERT": str(cert)})


def test_token_file_is_read_and_empty_file_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    assert ServerSettings.from_env({"CTSYNTH_AUTH_TOKEN_FILE": str(token)}).auth_token == "abc"
    token.write_text("\n")
    with pytest.raises(ValueError, match="file is empty"):
        ServerSettings.from_env({"CTSYNTH_AUTH_TOKEN_FILE": str(token)})


def test_import_roots_default_to_the_store_and_the_import_dir(tmp_path):
    settings = ServerSettings.from_env({"CTSYNTH_IMPORT_DIR": str(tmp_path / "import")},
                                       store_uri=(tmp_path / "store").as_uri())
    assert settings.allowed_roots().roots == ((tmp_path / "store").as_uri(), str(tmp_path / "import"))
    explicit = ServerSettings.from_env({"CTSYNTH_IMPORT_ROOTS": f"{tmp_path}/a, s3://bucket/imports"})
    assert explicit.allowed_roots().roots == (f"{tmp_path}/a", "s3://bucket/imports")


@pytest.mark.parametrize(("env", "message"), [
    ({"CTSYNTH_IMPORT_ROOTS": "data/lidc"}, "CTSYNTH_IMPORT_ROOTS: allowed root 'data/lidc': must be absolute"),
    ({"CTSYNTH_IMPORT_DIR": "import"}, "CTSYNTH_IMPORT_DIR='import' must be an absolute path"),
])
def test_malformed_import_roots_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        ServerSettings.from_env(env)


def test_each_service_of_each_store_has_its_own_work_dir(tmp_path):
    one, other = (ServerSettings(store_uri=f"file:///{name}", work_dir=str(tmp_path)) for name in ("a", "b"))
    assert one.service_work_dir("ingest").parent.parent == tmp_path
    assert len({one.service_work_dir("ingest"), one.service_work_dir("evaluation"),
                other.service_work_dir("ingest")}) == 3
