"""The ObjectStore contract; every test runs on LocalStore and on S3Store (moto)."""

import hashlib
import io
import os
from datetime import datetime, timezone

import boto3
import pytest

from ctsynth.storage import (
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking payload (cheaper than os.urandom for MiBs)."""
    block = hashlib.sha256(str(size).encode()).digest() * 4096  # 128 KiB
    return (block * (size // len(block) + 1))[:size]


class OneWayStream:
    """read()-only source: no seek, no len, so stores must truly stream."""

    def __init__(self, data: bytes, fail_after: int | None = None, error=OSError):
        self._data = io.BytesIO(data)
        self._fail_after = fail_after
        self._error = error
        self.sent = 0

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self.sent >= self._fail_after:
            raise self._error("source broke mid-upload")
        chunk = self._data.read(1 * MiB if n is None or n < 0 else min(n, 1 * MiB))
        self.sent += len(chunk)
        return chunk


def keys(store, prefix=""):
    return [info.key for info in store.list(prefix)]


# -- put / get -------------------------------------------------------------


def test_put_bytes_round_trip(store):
    data = b"hello \x00 world"
    info = store.put("datasets/lidc/1/hello.bin", data)
    assert (info.key, info.size, info.sha256) == ("datasets/lidc/1/hello.bin", len(data), sha(data))
    assert info.modified.tzinfo is not None and info.modified.utcoffset().total_seconds() == 0
    assert store.get_bytes("datasets/lidc/1/hello.bin") == data
    assert store.stat("datasets/lidc/1/hello.bin") == info
    assert store.uri_for("datasets/lidc/1/hello.bin").endswith("/datasets/lidc/1/hello.bin")
    assert store.uri_for("x").startswith(store.uri)


def test_put_empty_object(store):
    info = store.put("empty", b"")
    assert (info.size, info.sha256) == (0, sha(b""))
    assert store.get_bytes("empty") == b""


def test_put_from_file(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(pattern(300_000))
    info = store.put("from/file.bin", src)
    assert (info.size, info.sha256) == (300_000, sha(src.read_bytes()))
    assert store.get_bytes("from/file.bin") == src.read_bytes()


def test_put_from_stream_and_overwrite(store):
    store.put("k", OneWayStream(b"first version"))
    info = store.put("k", OneWayStream(b"second"))
    assert store.get_bytes("k") == b"second"
    assert store.stat("k").sha256 == info.sha256 == sha(b"second")


def test_large_stream_is_stored_whole(store, tmp_path):
    """20 MiB from a one-way stream: multipart on S3 (16 MiB parts)."""
    data = pattern(20 * MiB)
    info = store.put("big/volume.raw", OneWayStream(data))
    assert (info.size, info.sha256) == (len(data), sha(data))
    assert store.stat("big/volume.raw").sha256 == sha(data)
    with store.open("big/volume.raw") as f:
        head = f.read(MiB)
        rest = f.read()
    assert head + rest == data
    out = store.get_file("big/volume.raw", tmp_path / "dl" / "volume.raw")
    assert out.read_bytes() == data
    assert os.listdir(tmp_path / "dl") == ["volume.raw"]  # no temp file left behind


@pytest.mark.parametrize(
    "start,end",
    [(0, None), (7, None), (7, 20), (90, 200), (100, None), (250, None), (30, 30), (30, 10)],
)
def test_ranged_get_is_a_slice(store, start, end):
    data = pattern(100)
    store.put("r", data)
    assert store.get_bytes("r", start, end) == data[start:end]


def test_negative_range_is_refused(store):
    store.put("r", b"abc")
    with pytest.raises(ValueError):
        store.get_bytes("r", -1)


def test_json_round_trip(store):
    obj = {"name": "lidc", "spacing": [0.7, 0.7, 1.25], "note": "µ-CT"}
    info = store.put_json("meta/info.json", obj)
    assert info.sha256 == sha(store.get_bytes("meta/info.json"))
    assert store.get_json("meta/info.json") == obj


def test_get_json_on_invalid_json_names_the_key(store):
    store.put("meta/broken.json", b"{not json")
    with pytest.raises(StorageError, match="meta/broken.json"):
        store.get_json("meta/broken.json")


# -- stat / exists / list ---------------------------------------------------


def test_stat_exists_and_sorted_relative_listing(store):
    for key in ["b.txt", "a/y/z", "ab/c", "a/x", "a.txt"]:
        store.put(key, key.encode())
    assert store.exists("a/x") and not store.exists("a/nope")
    assert not store.exists("a")  # a folder is not an object
    assert keys(store) == ["a.txt", "a/x", "a/y/z", "ab/c", "b.txt"]
    assert keys(store, "a/") == ["a/x", "a/y/z"]
    assert keys(store, "a") == ["a.txt", "a/x", "a/y/z", "ab/c"]
    assert keys(store, "a/y/z") == ["a/y/z"]
    assert keys(store, "nothing/") == []
    listed = {info.key: info for info in store.list()}
    assert listed["ab/c"].size == store.stat("ab/c").size == len(b"ab/c")


def test_internal_files_are_never_listed(store):
    store.put("x/data", pattern(1000))
    store.put_json("x/meta.json", {})
    with pytest.raises(OSError):
        store.put("x/broken", OneWayStream(pattern(2 * MiB), fail_after=MiB))
    assert keys(store) == ["x/data", "x/meta.json"]
    assert keys(store, ".t") == keys(store, ".m") == []


# -- missing keys -----------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        lambda s: s.stat("no/such"),
        lambda s: s.open("no/such"),
        lambda s: s.get_bytes("no/such"),
        lambda s: s.get_bytes("no/such", 3, 3),
        lambda s: s.get_json("no/such"),
        lambda s: s.delete("no/such"),
        lambda s: s.verify("no/such", sha(b"")),
    ],
    ids=["stat", "open", "get_bytes", "get_bytes_empty_range", "get_json", "delete", "verify"],
)
def test_missing_key_is_object_not_found(store, op):
    store.put("no/other", b"x")
    with pytest.raises(ObjectNotFound, match="no/such"):
        op(store)


def test_get_file_of_missing_key_leaves_nothing(store, tmp_path):
    with pytest.raises(ObjectNotFound):
        store.get_file("no/such", tmp_path / "out" / "f")
    assert not (tmp_path / "out" / "f").exists()


# -- hostile keys -----------------------------------------------------------

HOSTILE_KEYS = [
    "",
    "../x",
    "/etc/passwd",
    "a/../../b",
    "a/./b",
    "a//b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "k" * 2000,
    ".tmp/x",
    ".meta/x",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
@pytest.mark.parametrize(
    "op",
    [
        lambda s, k: s.put(k, b"x"),
        lambda s, k: s.get_bytes(k),
        lambda s, k: s.open(k),
        lambda s, k: s.stat(k),
        lambda s, k: s.exists(k),
        lambda s, k: s.delete(k),
        lambda s, k: s.list(k or "/"),
        lambda s, k: s.delete_prefix(k),
    ],
    ids=["put", "get_bytes", "open", "stat", "exists", "delete", "list", "delete_prefix"],
)
def test_hostile_keys_are_refused(store, key, op):
    with pytest.raises(InvalidKey) as err:
        op(store, key)
    assert isinstance(err.value, ValueError)
    assert keys(store) == []


def test_invalid_key_message_names_key_and_reason():
    from ctsynth.storage.base import validate_key

    with pytest.raises(InvalidKey, match=r"'a//b'.*empty path segment"):
        validate_key("a//b")
    assert validate_key("datasets/lidc/1/slices.h5") == "datasets/lidc/1/slices.h5"


def test_prefixes_may_end_with_one_slash(store):
    store.put("p/q", b"1")
    assert keys(store, "p/") == ["p/q"]
    with pytest.raises(InvalidKey):
        store.list("p//")


# -- atomicity --------------------------------------------------------------


@pytest.mark.parametrize("fail_after", [3 * MiB, 18 * MiB], ids=["first-part", "after-a-part"])
def test_interrupted_upload_leaves_nothing(store, fail_after):
    source = OneWayStream(pattern(24 * MiB), fail_after=fail_after)
    with pytest.raises(OSError, match="source broke"):
        store.put("up/vol.raw", source)
    assert source.sent >= fail_after  # it really failed midway, not up front
    assert not store.exists("up/vol.raw")
    assert keys(store) == []


def test_source_errors_are_not_mistaken_for_store_errors(store):
    """A network source failing is the caller's problem, not StoreUnavailable."""
    with pytest.raises(ConnectionError) as err:
        store.put("up/x", OneWayStream(pattern(2 * MiB), fail_after=MiB, error=ConnectionError))
    assert not isinstance(err.value, StorageError)
    assert keys(store) == []


def test_interrupted_overwrite_keeps_old_version(store):
    store.put("up/vol.raw", b"old")
    with pytest.raises(OSError):
        store.put("up/vol.raw", OneWayStream(pattern(4 * MiB), fail_after=2 * MiB))
    assert store.get_bytes("up/vol.raw") == b"old"


# -- verify -----------------------------------------------------------------


def test_verify(store):
    data = pattern(5000)
    store.put("v", data)
    store.verify("v", sha(data))
    store.verify("v", sha(data).upper())
    wrong = sha(b"other")
    with pytest.raises(IntegrityError) as err:
        store.verify("v", wrong)
    message = str(err.value)
    assert "'v'" in message and wrong in message and sha(data) in message


# -- delete -----------------------------------------------------------------


def test_delete(store):
    store.put("a/b", b"1")
    store.put("a/c", b"2")
    store.delete("a/b")
    assert keys(store) == ["a/c"]
    store.delete("a/c")
    store.put("a", b"a file where the folder was")  # deleting 'a/*' frees the name
    assert store.get_bytes("a") == b"a file where the folder was"


def test_delete_prefix(store):
    for key in ["run/1/a", "run/1/b/c", "run/10/a", "keep/x"]:
        store.put(key, b"x")
    assert store.delete_prefix("run/1/") == 2
    assert keys(store) == ["keep/x", "run/10/a"]
    assert store.delete_prefix("nothing/") == 0
    with pytest.raises(InvalidKey):
        store.delete_prefix("")
    assert keys(store) == ["keep/x", "run/10/a"]


# -- publish ----------------------------------------------------------------


def test_publish_then_read_manifest(store, tmp_path):
    path_src = tmp_path / "slices.h5"
    path_src.write_bytes(pattern(70_000))
    files = {
        "slices.h5": path_src,
        "labels/mask.bin": OneWayStream(b"mask bytes"),
        "readme.txt": b"readme",
    }
    info = store.publish("datasets/lidc/1", files, {"dataset": "lidc", "version": 1})
    assert info.key == "datasets/lidc/1/manifest.json"
    assert keys(store) == [
        "datasets/lidc/1/labels/mask.bin",
        "datasets/lidc/1/manifest.json",
        "datasets/lidc/1/readme.txt",
        "datasets/lidc/1/slices.h5",
    ]
    manifest = store.read_manifest("datasets/lidc/1", verify=True)
    assert manifest["dataset"] == "lidc" and manifest["version"] == 1
    assert manifest["files"] == {
        "slices.h5": {"sha256": sha(path_src.read_bytes()), "size": 70_000},
        "labels/mask.bin": {"sha256": sha(b"mask bytes"), "size": 10},
        "readme.txt": {"sha256": sha(b"readme"), "size": 6},
    }
    published = datetime.fromisoformat(manifest["published_at"])
    assert published.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - published).total_seconds()) < 3600


def test_read_manifest_verify_detects_tampering(store):
    store.publish("ds/2", {"a.bin": b"original"}, {})
    store.put("ds/2/a.bin", b"tampered")
    assert store.read_manifest("ds/2")["files"]["a.bin"]["size"] == 8
    with pytest.raises(IntegrityError, match="ds/2/a.bin"):
        store.read_manifest("ds/2", verify=True)


def test_unpublished_prefix_has_no_manifest(store):
    store.put("ds/3/a.bin", b"orphan")
    with pytest.raises(ObjectNotFound):
        store.read_manifest("ds/3")


def test_publish_failing_midway_leaves_nothing(store):
    files = {
        "a.bin": pattern(1000),
        "b.bin": OneWayStream(pattern(3 * MiB), fail_after=MiB),
        "c.bin": b"never uploaded",
    }
    with pytest.raises(OSError, match="source broke"):
        store.publish("ds/4", files, {"dataset": "x"})
    assert not store.exists("ds/4/manifest.json")
    assert keys(store, "ds/4/") == []
    assert keys(store) == []


def test_publish_refuses_existing_manifest(store):
    store.publish("ds/5", {"a.bin": b"v1"}, {"v": 1})
    with pytest.raises(StorageError, match="ds/5/manifest.json"):
        store.publish("ds/5", {"a.bin": b"v2", "new.bin": b"n"}, {"v": 2})
    assert store.read_manifest("ds/5", verify=True)["v"] == 1
    assert store.get_bytes("ds/5/a.bin") == b"v1"
    assert not store.exists("ds/5/new.bin")


def test_publish_rejects_reserved_manifest_fields(store):
    with pytest.raises(ValueError, match="files"):
        store.publish("ds/6", {"a.bin": b"x"}, {"files": {}})
    with pytest.raises(ValueError, match="manifest"):
        store.publish("ds/6", {"manifest.json": b"x"}, {})
    with pytest.raises(InvalidKey):
        store.publish("ds/6", {"ok.bin": b"x", "../escape": b"x"}, {})
    assert keys(store) == []


def test_publish_retracts_a_manifest_whose_write_reported_failure(store, monkeypatch):
    """E.g. a lost response: the manifest may exist although put() raised."""
    real_put = store.put

    def put_then_lose_response(key, data, **kwargs):
        info = real_put(key, data, **kwargs)
        if key.endswith("manifest.json"):
            raise StoreUnavailable("response lost")
        return info

    monkeypatch.setattr(store, "put", put_then_lose_response)
    with pytest.raises(StoreUnavailable):
        store.publish("ds/8", {"a.bin": b"x"}, {})
    assert keys(store) == []


def test_publish_with_custom_manifest_name(store):
    store.publish("ds/7", {"a.bin": b"x"}, {}, manifest_name="MANIFEST")
    assert store.exists("ds/7/MANIFEST")
    assert store.read_manifest("ds/7", manifest_name="MANIFEST")["files"]["a.bin"]["size"] == 1


# -- backend specifics --------------------------------------------------------


def test_local_symlink_out_of_root_is_refused(local_store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (local_store.root / "evil").symlink_to(outside, target_is_directory=True)
    (local_store.root / "link.txt").symlink_to(outside / "secret.txt")
    local_store.put("ok.txt", b"fine")

    for key in ["evil/secret.txt", "link.txt"]:
        with pytest.raises(InvalidKey, match="outside the store root"):
            local_store.get_bytes(key)
        with pytest.raises(InvalidKey):
            local_store.stat(key)
    with pytest.raises(InvalidKey):
        local_store.put("evil/planted.txt", b"x")
    with pytest.raises(InvalidKey):
        local_store.delete("link.txt")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert keys(local_store) == ["ok.txt"]
    assert keys(local_store, "evil/") == []


def test_local_sidecars_hold_hashes_outside_key_space(local_store):
    local_store.put("a/b", b"payload")
    assert (local_store.root / ".meta" / "a" / "b.sha256").read_text().strip() == sha(b"payload")
    with pytest.raises(OSError):
        local_store.put("a/c", OneWayStream(pattern(2 * MiB), fail_after=MiB))
    assert os.listdir(local_store.root / ".tmp") == []  # temp files never outlive a put
    local_store.delete("a/b")
    assert not (local_store.root / ".meta" / "a").exists()


def test_local_key_cannot_be_file_and_folder(local_store):
    local_store.put("a", b"file")
    with pytest.raises(StorageError, match="a/b"):
        local_store.put("a/b", b"x")
    assert keys(local_store) == ["a"] and local_store.get_bytes("a") == b"file"


def _boto(store):
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def _raw_bucket(store):
    client = _boto(store)
    objects = client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [o["Key"] for o in objects], uploads


def test_s3_interrupted_multipart_upload_is_aborted(s3_store):
    s3_store.put("kept", b"k")
    with pytest.raises(OSError):
        s3_store.put("big", OneWayStream(pattern(40 * MiB), fail_after=20 * MiB))
    names, uploads = _raw_bucket(s3_store)
    assert names == ["some/prefix/kept"]  # no temp object, no partial final object
    assert uploads == []


def test_s3_stores_hash_as_user_metadata(s3_store):
    s3_store.put("m", b"meta", content_type="text/plain")
    obj = s3_store.client.stat_object(s3_store.bucket, "some/prefix/m")
    assert obj.metadata["x-amz-meta-sha256"] == sha(b"meta")
    assert obj.content_type == "text/plain"
    assert _raw_bucket(s3_store)[0] == ["some/prefix/m"]


def test_s3_leftover_temp_objects_are_not_listed(s3_store):
    """A crash between upload and cleanup may leave .tmp objects; they are no keys."""
    _boto(s3_store).put_object(Bucket=s3_store.bucket, Key="some/prefix/.tmp/leftover", Body=b"x")
    s3_store.put("real", b"r")
    assert keys(s3_store) == ["real"]
    assert keys(s3_store, ".t") == []
