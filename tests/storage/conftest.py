"""Fixtures running the storage contract against every backend.

S3 runs against an in-process moto server: one per session (starting it is
the slow part), one fresh bucket per test so tests cannot see each other.
"""

import logging
import uuid

import pytest
from moto.server import ThreadedMotoServer

from ctsynth.storage import open_store
from ctsynth.storage.local import LocalStore


@pytest.fixture(scope="session")
def moto_endpoint():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint):
    return {
        "CTSYNTH_S3_ENDPOINT": moto_endpoint,
        "CTSYNTH_S3_ACCESS_KEY": "testing",
        "CTSYNTH_S3_SECRET_KEY": "testing",
        "CTSYNTH_S3_REGION": "us-east-1",
        "CTSYNTH_S3_CREATE_BUCKET": "true",
        "CTSYNTH_S3_RETRIES": "0",
    }


@pytest.fixture
def bucket_name():
    return f"ctsynth-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def s3_store(s3_env, bucket_name):
    # Built through open_store so URI parsing and env configuration are exercised too.
    return open_store(f"s3://{bucket_name}/some/prefix", env=s3_env)


@pytest.fixture
def local_store(tmp_path):
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request):
    """The same contract test, once per backend (moto starts only if needed)."""
    return request.getfixturevalue(f"{request.param}_store")
