"""The library's errors are plain exceptions; only the server edge knows gRPC."""

from __future__ import annotations


import grpc
import pytest

from ctsynth import errors
from ctsynth.rpc.errors import status_for
from ctsynth.storage import errors as storage_errors
from tests.imports import PACKAGE, imports_of, modules_loaded_by

FORBIDDEN = ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "ctsynth.rpc")
# Library folders that must stay free of gRPC (services/ and client/ may use it).
LIBRARY = ("data", "models", "diffusion", "metrics", "training", "evaluation", "sampling", "storage", "ingest")


def _build(cls: type[errors.ServiceError]) -> errors.ServiceError:
    return cls("field", "is wrong") if cls is errors.InvalidArgument else cls("it went wrong", field="field")


def test_invalid_argument_is_a_value_error_naming_its_field():
    error = errors.InvalidArgument("sampler.steps", "must be >= 1")
    assert isinstance(error, ValueError) and isinstance(error, errors.ServiceError)
    assert error.field == "sampler.steps" and str(error) == "sampler.steps: must be >= 1"
    with pytest.raises(ValueError, match="must be >= 1"):
        raise error


def test_status_names_are_the_grpc_status_codes():
    assert errors.STATUS_NAMES == {code.name for code in grpc.StatusCode}


@pytest.mark.parametrize("cls", errors.ERRORS, ids=lambda cls: cls.__name__)
def test_each_error_maps_to_its_grpc_status(cls):
    assert cls.status in grpc.StatusCode.__members__
    error = _build(cls)
    assert status_for(error) == (grpc.StatusCode[cls.status], str(error))


def test_every_service_error_is_listed():
    listed = set(errors.ERRORS)
    found = {value for value in vars(errors).values()
             if isinstance(value, type) and issubclass(value, errors.ServiceError) and value is not errors.ServiceError}
    assert found == listed


def test_a_subclass_keeps_its_parents_status():
    class MetricProblem(errors.FailedPrecondition):
        pass

    assert status_for(MetricProblem("fid: too few")) == (grpc.StatusCode.FAILED_PRECONDITION, "fid: too few")


def test_storage_errors_and_unexpected_ones():
    assert status_for(storage_errors.ObjectNotFound("a", "file:///srv/x/a")) == (
        grpc.StatusCode.NOT_FOUND, "object not found: a")
    assert status_for(RuntimeError("boom")) is None
    assert status_for(ValueError("not a service error")) is None


@pytest.mark.parametrize("cls", errors.ERRORS, ids=lambda cls: cls.__name__)
def test_error_from_status_round_trips_a_record(cls):
    original = _build(cls)
    rebuilt = errors.error_from_status(original.status, str(original), original.field)
    assert type(rebuilt) is cls and str(rebuilt) == str(original) and rebuilt.field == original.field
    assert status_for(rebuilt) == status_for(original)


def test_error_from_status_keeps_other_codes_and_falls_back_to_internal():
    aborted = errors.error_from_status("ABORTED", "try again")
    assert type(aborted) is errors.ServiceError and status_for(aborted) == (grpc.StatusCode.ABORTED, "try again")
    odd = errors.error_from_status("NO_SUCH_CODE", "odd")
    assert odd.status == "INTERNAL" and status_for(odd) == (grpc.StatusCode.INTERNAL, "odd")


def test_importing_the_errors_does_not_import_grpc():
    loaded = modules_loaded_by("ctsynth.errors", "ctsynth.roots", "ctsynth.registry", "ctsynth.ingest.options")
    assert "ctsynth.errors" in loaded
    assert [name for name in loaded if name.split(".")[0] in ("grpc", *FORBIDDEN[1:4])] == []


def test_the_scan_sees_forbidden_imports(tmp_path):
    fake = tmp_path / "ctsynth" / "models"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import grpc\nfrom ..rpc import errors\ndef f():\n    from ctsynth.rpc.errors import x\n"
                                 "    import grpc_health.v1\n    import grpcio_like\n")
    assert [line.split(": ", 1)[1] for line in imports_of(fake / "bad.py", FORBIDDEN, tmp_path / "ctsynth")] == [
        "grpc", "ctsynth.rpc", "ctsynth.rpc.errors", "ctsynth.rpc.errors", "ctsynth.rpc.errors.x", "grpc_health.v1"]


@pytest.mark.parametrize("folder", LIBRARY)
def test_library_modules_do_not_import_grpc_or_rpc(folder):
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files, f"no modules under {folder}"
    assert [hit for path in files for hit in imports_of(path, FORBIDDEN)] == []
