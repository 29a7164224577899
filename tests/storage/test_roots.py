"""Client-named paths and URIs confined to the allowed roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctsynth.errors import InvalidArgument
from ctsynth.roots import AllowedRoots


@pytest.fixture
def tree(tmp_path) -> Path:
    (tmp_path / "allowed" / "data").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("x")
    return tmp_path


def test_paths_and_file_uris_under_a_root_resolve(tree):
    roots = AllowedRoots((str(tree / "allowed"),))
    assert roots.resolve(str(tree / "allowed" / "data"), "source") == tree / "allowed" / "data"
    assert roots.resolve((tree / "allowed" / "data").as_uri(), "source") == tree / "allowed" / "data"
    assert roots.resolve(str(tree / "allowed" / "not-yet"), "source") == tree / "allowed" / "not-yet"
    (tree / "allowed" / "inner").symlink_to(tree / "allowed" / "data")
    assert roots.resolve(str(tree / "allowed" / "inner"), "source") == tree / "allowed" / "data"


@pytest.mark.parametrize("reference", [
    "{tree}/outside/secret", "{tree}/outside/missing", "{tree}/allowed/../outside/secret",
    "file://{tree}/allowed/%2E%2E/outside/secret", "{tree}/allowed-sibling", "{tree}/allowed/link-out/secret",
])
def test_anything_outside_gets_one_answer_whether_it_exists_or_not(tree, reference):
    (tree / "allowed" / "link-out").symlink_to(tree / "outside")
    roots = AllowedRoots((str(tree / "allowed"),))
    reference = reference.format(tree=tree)
    with pytest.raises(InvalidArgument) as refused:
        roots.resolve(reference, "inception_weights")
    assert str(refused.value) == (f"inception_weights: {reference} is outside the allowed roots ({tree}/allowed); "
                                  "put it under one of them, or have the operator add its folder to "
                                  "CTSYNTH_IMPORT_ROOTS")


@pytest.mark.parametrize("reference, reason", [
    ("relative/path", "must be an absolute path"), ("file://host/x", "file:///absolute/path"),
    ("http://host/x", "unsupported scheme 'http'"), ("/a\x00b", "NUL"), ("s3://b/p/../q", "'..'"),
])
def test_malformed_references_are_invalid_arguments(reference, reason):
    with pytest.raises(InvalidArgument, match=reason):
        AllowedRoots(("/",)).resolve(reference, "source")


def test_object_store_prefixes_match_by_bucket_and_whole_segments():
    roots = AllowedRoots(("s3://bucket/imports",))
    assert roots.resolve("s3://bucket/imports/lidc", "source") == "s3://bucket/imports/lidc"
    assert roots.resolve("s3://bucket/imports", "source") == "s3://bucket/imports"
    for outside in ("s3://bucket/imports-other", "s3://other/imports/lidc", "s3://bucket", "/imports"):
        with pytest.raises(InvalidArgument, match="outside the allowed roots"):
            roots.resolve(outside, "source")


def test_files_can_be_roots_and_bad_roots_are_refused(tree):
    roots = AllowedRoots(()).including("", str(tree / "outside" / "secret"))
    assert roots.resolve(str(tree / "outside" / "secret"), "w") == tree / "outside" / "secret"
    with pytest.raises(InvalidArgument, match=r"outside the allowed roots"):
        roots.resolve(str(tree / "outside"), "w")
    for bad in ("relative", "ftp://x/y", "s3://"):
        with pytest.raises(ValueError, match="allowed root"):
            AllowedRoots((bad,))
