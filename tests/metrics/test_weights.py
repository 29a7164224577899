"""Weights files from a path or an object-store URI, only from the store or the allowed roots."""

from __future__ import annotations

import hashlib

import pytest

from ctsynth.errors import FailedPrecondition, InvalidArgument
from ctsynth.metrics.weights import local_weights, read_copy
from ctsynth.roots import AllowedRoots
from ctsynth.storage import open_store
from tests.storage.conftest import bucket_name, moto_endpoint, s3_env, s3_store  # noqa: F401 - fixtures

HOW_TO = "pass --weights"
NOWHERE = AllowedRoots(())


def test_paths_and_file_uris_under_a_root_are_used_in_place(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    local = tmp_path / "import" / "w.pth"
    local.parent.mkdir()
    local.write_bytes(b"weights")
    roots = AllowedRoots((str(tmp_path / "import"),))
    assert local_weights(store, str(local), roots, tmp_path / "cache", HOW_TO, "w") == local
    assert local_weights(store, local.as_uri(), roots, tmp_path / "cache", HOW_TO, "w") == local
    assert read_copy(local) == (b"weights", hashlib.sha256(b"weights").hexdigest())


def test_files_outside_the_store_and_roots_are_refused_whether_or_not_they_exist(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    (tmp_path / "w.pth").write_bytes(b"weights")
    answers = set()
    for reference in (str(tmp_path / "w.pth"), str(tmp_path / "missing.pth")):
        with pytest.raises(InvalidArgument) as refused:
            local_weights(store, reference, NOWHERE, tmp_path / "cache", HOW_TO, "inception_weights")
        answers.add(str(refused.value).replace(reference, "REF"))
    assert len(answers) == 1 and next(iter(answers)).startswith("inception_weights: REF is outside the allowed roots")
    store.put("weights/w.pth", b"stored")
    assert local_weights(store, store.uri_for("weights/w.pth"), NOWHERE, tmp_path / "cache", HOW_TO,
                         "w").read_bytes() == b"stored", "the store itself is always allowed"


def test_object_store_uris_are_fetched_once_into_the_cache(s3_store, tmp_path):
    s3_store.put("weights/w.pth", b"stored weights")
    uri = s3_store.uri_for("weights/w.pth")
    fetched = local_weights(s3_store, uri, NOWHERE, tmp_path / "cache", HOW_TO, "w")
    assert fetched.read_bytes() == b"stored weights" and fetched.parent == tmp_path / "cache"
    stamp = fetched.stat().st_mtime_ns
    assert local_weights(s3_store, uri, NOWHERE, tmp_path / "cache", HOW_TO, "w").stat().st_mtime_ns == stamp
    with pytest.raises(FailedPrecondition, match=f"weights object {uri[:-5]}x.pth does not exist. {HOW_TO}"):
        local_weights(s3_store, uri[:-5] + "x.pth", NOWHERE, tmp_path / "cache", HOW_TO, "w")


@pytest.mark.parametrize("reference, reason", [
    ("", "no weights file is configured"),
    ("{root}/nonexistent/w.pth", "weights file {root}/nonexistent/w.pth does not exist"),
])
def test_missing_weights_are_a_failed_precondition_saying_how(tmp_path, reference, reason):
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(FailedPrecondition, match=f"{reason.format(root=tmp_path)}. {HOW_TO}"):
        local_weights(store, reference.format(root=tmp_path), AllowedRoots((str(tmp_path),)), tmp_path / "cache",
                      HOW_TO, "w")
