"""Weights files from a path or an object-store URI."""

from __future__ import annotations

import pytest

from ctsynth.metrics.weights import local_weights
from ctsynth.rpc.errors import FailedPrecondition
from ctsynth.storage import open_store
from tests.storage.conftest import bucket_name, moto_endpoint, s3_env, s3_store  # noqa: F401 - fixtures

HOW_TO = "pass --weights"


def test_paths_and_file_uris_are_used_in_place(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    local = tmp_path / "w.pth"
    local.write_bytes(b"weights")
    assert local_weights(store, str(local), tmp_path / "cache", HOW_TO) == local
    assert local_weights(store, local.as_uri(), tmp_path / "cache", HOW_TO) == local


def test_object_store_uris_are_fetched_once_into_the_cache(s3_store, tmp_path):
    s3_store.put("weights/w.pth", b"stored weights")
    uri = s3_store.uri_for("weights/w.pth")
    fetched = local_weights(s3_store, uri, tmp_path / "cache", HOW_TO)
    assert fetched.read_bytes() == b"stored weights" and fetched.parent == tmp_path / "cache"
    stamp = fetched.stat().st_mtime_ns
    assert local_weights(s3_store, uri, tmp_path / "cache", HOW_TO).stat().st_mtime_ns == stamp
    with pytest.raises(FailedPrecondition, match=f"weights object {uri[:-5]}x.pth does not exist. {HOW_TO}"):
        local_weights(s3_store, uri[:-5] + "x.pth", tmp_path / "cache", HOW_TO)


@pytest.mark.parametrize("reference, reason", [
    ("", "no weights file is configured"),
    ("/nonexistent/w.pth", "weights file /nonexistent/w.pth does not exist"),
])
def test_missing_weights_are_a_failed_precondition_saying_how(tmp_path, reference, reason):
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(FailedPrecondition, match=f"{reason}. {HOW_TO}"):
        local_weights(store, reference, tmp_path / "cache", HOW_TO)
