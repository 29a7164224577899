"""open_store: URI schemes and S3 configuration from environment variables."""

import socket

import pytest

from ctsynth.storage import LocalStore, StorageError, StoreUnavailable, open_store
from ctsynth.storage.s3 import S3Store, client_from_env


def test_plain_path_opens_a_local_store_and_creates_it(tmp_path):
    store = open_store(str(tmp_path / "new" / "store"))
    assert isinstance(store, LocalStore)
    assert (tmp_path / "new" / "store").is_dir()
    assert store.uri == (tmp_path / "new" / "store").as_uri()


def test_create_false_opens_only_what_exists_and_creates_nothing(tmp_path, s3_env, bucket_name):
    for where in (str(tmp_path / "a" / "b"), (tmp_path / "a" / "b").as_uri()):
        with pytest.raises(StorageError, match="no store folder"):
            open_store(where, create=False)
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    opened = open_store((tmp_path / "a").as_uri(), create=False)
    assert opened.root == tmp_path / "a" and list(opened.list()) == []
    with pytest.raises(StorageError, match=f"bucket '{bucket_name}' does not exist"):
        open_store(f"s3://{bucket_name}/x", env=s3_env, create=False)  # although CTSYNTH_S3_CREATE_BUCKET=true
    client = client_from_env(s3_env)
    assert not client.bucket_exists(bucket_name)


def test_file_uri_round_trips_through_store_uri(tmp_path):
    first = open_store((tmp_path / "a b").as_uri())  # percent-encoded space
    first.put("k", b"v")
    again = open_store(first.uri)
    assert isinstance(again, LocalStore)
    assert again.root == tmp_path / "a b"
    assert again.get_bytes("k") == b"v"


def test_file_uri_with_remote_host_is_refused():
    with pytest.raises(ValueError, match="file:///absolute/path"):
        open_store("file://otherhost/data")


@pytest.mark.parametrize("uri", ["gs://bucket/x", "http://host/x", ""])
def test_unknown_scheme_names_the_supported_ones(uri):
    with pytest.raises(ValueError) as err:
        open_store(uri, env={})
    assert "s3://" in str(err.value) and "file://" in str(err.value)


def test_s3_uri_parsing(s3_env, bucket_name):
    store = open_store(f"s3://{bucket_name}/runs/7/", env=s3_env)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.uri) == (
        bucket_name,
        "runs/7",
        f"s3://{bucket_name}/runs/7",
    )
    assert store.uri_for("ckpt/last.pt") == f"s3://{bucket_name}/runs/7/ckpt/last.pt"
    store.put("ckpt/last.pt", b"w")
    bare = open_store(f"s3://{bucket_name}", env=s3_env)
    assert bare.prefix == "" and bare.uri_for("k") == f"s3://{bucket_name}/k"
    assert [i.key for i in bare.list()] == ["runs/7/ckpt/last.pt"]


def test_s3_uri_without_bucket_is_refused(s3_env):
    with pytest.raises(ValueError, match="bucket"):
        open_store("s3:///prefix", env=s3_env)


def test_missing_endpoint_variable_is_named():
    with pytest.raises(ValueError, match="CTSYNTH_S3_ENDPOINT"):
        open_store("s3://bucket/prefix", env={"CTSYNTH_S3_ACCESS_KEY": "a"})


def test_missing_bucket_is_an_error_unless_creation_is_enabled(s3_env, bucket_name):
    env = {**s3_env, "CTSYNTH_S3_CREATE_BUCKET": "false"}
    with pytest.raises(StorageError, match=bucket_name):
        open_store(f"s3://{bucket_name}/p", env=env)
    open_store(f"s3://{bucket_name}/p", env=s3_env)  # creates it
    assert open_store(f"s3://{bucket_name}/p", env=env).bucket == bucket_name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_store_unavailable():
    port = _closed_port()
    env = {
        "CTSYNTH_S3_ENDPOINT": f"127.0.0.1:{port}",
        "CTSYNTH_S3_SECURE": "false",
        "CTSYNTH_S3_ACCESS_KEY": "a",
        "CTSYNTH_S3_SECRET_KEY": "b",
        "CTSYNTH_S3_RETRIES": "0",
        "CTSYNTH_S3_CONNECT_TIMEOUT": "2",
    }
    with pytest.raises(StoreUnavailable, match=f"http://127.0.0.1:{port}"):
        open_store("s3://bucket/prefix", env=env)


@pytest.mark.parametrize(
    "endpoint,secure,expected",
    [
        ("minio.local:9000", None, "https://minio.local:9000"),
        ("http://minio.local:9000", None, "http://minio.local:9000"),
        ("https://minio.local", None, "https://minio.local"),
        ("minio.local:9000", "false", "http://minio.local:9000"),
        ("http://minio.local:9000", "true", "https://minio.local:9000"),
    ],
)
def test_endpoint_scheme_and_secure_flag(endpoint, secure, expected):
    env = {"CTSYNTH_S3_ENDPOINT": endpoint}
    if secure is not None:
        env["CTSYNTH_S3_SECURE"] = secure
    assert S3Store(client_from_env(env), "b").endpoint == expected


@pytest.mark.parametrize(
    "env,variable",
    [
        ({"CTSYNTH_S3_ENDPOINT": "ftp://host:21"}, "CTSYNTH_S3_ENDPOINT"),
        ({"CTSYNTH_S3_ENDPOINT": "http://host:9000/path"}, "CTSYNTH_S3_ENDPOINT"),
        ({"CTSYNTH_S3_SECURE": "maybe"}, "CTSYNTH_S3_SECURE"),
        ({"CTSYNTH_S3_CA_BUNDLE": "/no/such/ca.pem"}, "CTSYNTH_S3_CA_BUNDLE"),
        ({"CTSYNTH_S3_RETRIES": "-1"}, "CTSYNTH_S3_RETRIES"),
        ({"CTSYNTH_S3_CONNECT_TIMEOUT": "soon"}, "CTSYNTH_S3_CONNECT_TIMEOUT"),
        ({"CTSYNTH_S3_ACCESS_KEY": "only-one"}, "CTSYNTH_S3_SECRET_KEY"),
    ],
)
def test_bad_settings_name_the_variable(env, variable):
    with pytest.raises(ValueError, match=variable):
        client_from_env({"CTSYNTH_S3_ENDPOINT": "h:1", **env})


def test_credentials_fall_back_to_aws_variables():
    env = {
        "CTSYNTH_S3_ENDPOINT": "h:1",
        "AWS_ACCESS_KEY_ID": "aws-id",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    creds = client_from_env(env)._provider.retrieve()
    assert (creds.access_key, creds.secret_key) == ("aws-id", "aws-secret")
    env["CTSYNTH_S3_ACCESS_KEY"], env["CTSYNTH_S3_SECRET_KEY"] = "own-id", "own-secret"
    assert client_from_env(env)._provider.retrieve().access_key == "own-id"


def test_ca_bundle_is_used_for_tls(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"CTSYNTH_S3_ENDPOINT": "https://h:1", "CTSYNTH_S3_CA_BUNDLE": str(ca)}
    client = client_from_env(env)
    assert client._http.connection_pool_kw["ca_certs"] == str(ca)
    assert client._http.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
