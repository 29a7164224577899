"""IngestService through a real gRPC server, and the ingest CLI."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from ctsynth.cli.main import main
from ctsynth.client import open_channel
from ctsynth.config import ServerSettings
from ctsynth.servicers import host_services
from ctsynth.storage import open_store
from ctsynth.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

State = common_pb2.JobState
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def import_roots(tmp_path_factory, monkeypatch) -> str:
    """Test data lives under pytest's base temp dir: the import root of every server here (in-process
    CLI and subprocesses read it from the environment)."""
    root = str(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("CTSYNTH_IMPORT_ROOTS", root)
    return root


@pytest.fixture
def service(tmp_path, import_roots):
    settings = ServerSettings(store_uri=(tmp_path / "store").as_uri(), port=0, grace_seconds=1.0,
                              import_roots=(import_roots,))
    host = host_services(["ingest"], settings)
    channel = open_channel(host.address)
    yield ingest_pb2_grpc.IngestServiceStub(channel), host.servicers["ingest"]._store
    channel.close()
    host.stop(0)


def small_request(source, dataset="tree", **fields) -> ingest_pb2.StartIngestRequest:
    fields.setdefault("slices", ingest_pb2.SliceOptions(size=32, no_balance=True))
    fields.setdefault("volumes", ingest_pb2.VolumeOptions(size=16))
    return ingest_pb2.StartIngestRequest(source=str(source), dataset=dataset, **fields)


def finish(stub, job) -> tuple[common_pb2.Job, list[common_pb2.JobEvent]]:
    events = list(stub.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=300))
    return stub.GetJob(common_pb2.GetJobRequest(job_id=job.id)), events


def test_ingest_publishes_a_dataset_and_lists_it(service, ct_tree):
    stub, store = service
    final, events = finish(stub, stub.StartIngest(small_request(ct_tree)))
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    assert final.result == "tree:1"
    assert any(e.progress.unit == "series" and e.progress.done == e.progress.total == 3 for e in events)
    dataset = stub.GetDataset(ingest_pb2.GetDatasetRequest(dataset="tree"))
    assert (dataset.name, dataset.version, dataset.patients, dataset.series) == ("tree", "1", 3, 3)
    assert dataset.slices_count == sum(s.slices for s in dataset.splits.values()) > 0
    assert dataset.slices.uri.endswith("datasets/tree/1/slices.h5") and len(dataset.slices.sha256) == 64
    assert dataset.volumes_count == 3
    assert dataset.parameters["slice_size"] == 32
    store.verify("datasets/tree/1/slices.h5", dataset.slices.sha256)
    listed = stub.ListDatasets(ingest_pb2.ListDatasetsRequest()).datasets
    assert [(d.name, d.version) for d in listed] == [("tree", "1")]


def test_same_request_is_idempotent_and_a_new_one_gets_a_new_version(service, ct_tree):
    stub, _ = service
    first, _ = finish(stub, stub.StartIngest(small_request(ct_tree)))
    again = stub.StartIngest(small_request(ct_tree))
    assert again.id == first.id and again.state == State.JOB_STATE_SUCCEEDED and again.result == "tree:1"
    second, _ = finish(stub, stub.StartIngest(small_request(ct_tree, seed=3)))
    assert second.result == "tree:2"
    assert stub.GetDataset(ingest_pb2.GetDatasetRequest(dataset="tree:latest")).version == "2"
    assert stub.GetDataset(ingest_pb2.GetDatasetRequest(dataset="tree:1")).version == "1"


@pytest.mark.parametrize(("change", "field"), [
    ({"slices": ingest_pb2.SliceOptions(views=[7])}, "slices.views"),
    ({"slices": ingest_pb2.SliceOptions(size=-1)}, "slices.size"),
    ({"slices": ingest_pb2.SliceOptions(size=4096)}, "slices.size"),
    ({"volumes": ingest_pb2.VolumeOptions(size=3000)}, "volumes.size"),
    ({"window": ingest_pb2.Window(min_hu=400, max_hu=-1000)}, "window"),
    ({"split": ingest_pb2.SplitFractions(train=0.9, validation=0.9, test=0.1)}, "split"),
    ({"dataset": "Not A Name"}, "dataset"),
    ({"source": ""}, "source"),
    ({"masks": ingest_pb2.MaskOptions(mode=ingest_pb2.MASK_MODE_CONSENSUS, consensus_level=1.5)},
     "masks.consensus_level"),
], ids=["view", "size0", "size-big", "volume-size", "window", "split", "name", "source", "consensus"])
def test_bad_requests_are_invalid_arguments_naming_the_field(service, tmp_path, change, field):
    stub, _ = service
    values = {"source": str(tmp_path), "dataset": "bad", **change}
    request = ingest_pb2.StartIngestRequest(**values)
    with pytest.raises(grpc.RpcError) as err:
        stub.StartIngest(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field), err.value.details()


def test_nothing_usable_fails_the_job_with_failed_precondition(service, tmp_path):
    stub, store = service
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not a DICOM file")
    final, _ = finish(stub, stub.StartIngest(small_request(empty, dataset="empty")))
    assert final.state == State.JOB_STATE_FAILED
    assert final.error.code == "FAILED_PRECONDITION"
    assert not any(store.list("datasets/empty/"))


def test_unknown_dataset_and_job_are_not_found(service):
    stub, _ = service
    for call, request in ((stub.GetDataset, ingest_pb2.GetDatasetRequest(dataset="nope")),
                          (stub.GetJob, common_pb2.GetJobRequest(job_id="ingest-0000")),
                          (stub.GetDataset, ingest_pb2.GetDatasetRequest(dataset="nope:3"))):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_lidc_phantoms_ingest_with_masks(service, lidc_phantom_root):
    root, scans = lidc_phantom_root
    stub, _ = service
    final, _ = finish(stub, stub.StartIngest(ingest_pb2.StartIngestRequest(
        source=str(root), dataset="lidc", slices=ingest_pb2.SliceOptions(size=32),
        volumes=ingest_pb2.VolumeOptions(size=16))))
    assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
    dataset = stub.GetDataset(ingest_pb2.GetDatasetRequest(dataset="lidc"))
    assert dataset.series == len(scans) and dataset.tumor_slices > 0
    assert dataset.parameters["source_kind"] in ("auto", "lidc")


def test_a_source_outside_the_roots_creates_nothing_and_lists_nothing(service, tmp_path):
    stub, _ = service
    probe = Path("/") / f"ctsynth-probe-{uuid.uuid4().hex}"
    etc_folders = {p.name for p in Path("/etc").iterdir() if p.is_dir()}
    link = tmp_path / "etc-link"
    link.symlink_to("/etc")
    for source in (f"file://{probe}/a/b", "/etc", str(link), "relative/folder"):
        with pytest.raises(grpc.RpcError) as refused:
            stub.StartIngest(small_request(source, dataset="probe"))
        details = refused.value.details()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("source:"), details
        assert not etc_folders & set(re.split(r"[^\w.-]+", details)), details
    missing = tmp_path / "missing"
    final, _ = finish(stub, stub.StartIngest(small_request(f"{missing.as_uri()}/a/b", dataset="probe")))
    assert final.state == State.JOB_STATE_FAILED and final.error.code == "INVALID_ARGUMENT", final.error
    assert not probe.exists() and not missing.exists(), "a named source is never created"


def _serve(store_uri: str, work_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ctsynth.cli.main", "--store", store_uri, "serve", "ingest", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "CTSYNTH_WORK_DIR": str(work_dir)})
    return process, process.stdout.readline().split(" on ")[1].split()[0]


def _children(pid: int) -> set[int]:
    """The children of every thread of `pid`, from /proc."""
    children = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children |= {int(c) for c in (task / "children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            continue
    return children


def _descendants(pid: int) -> set[int]:
    """The processes below `pid` (its children, theirs, ...)."""
    found, todo = set(), [pid]
    while todo:
        children = _children(todo.pop())
        todo += children - found
        found |= children
    return found


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="tracks processes by pidfd (Linux)")
def test_kill_9_mid_job_publishes_nothing_leaves_nothing_and_a_restart_finishes_it(tmp_path, lidc_phantom_root):
    root, _ = lidc_phantom_root
    store_uri = (tmp_path / "store").as_uri()
    store = open_store(store_uri)
    work = ServerSettings(store_uri=store_uri, work_dir=str(tmp_path / "work")).service_work_dir("ingest")
    request = ingest_pb2.StartIngestRequest(source=str(root), dataset="crash",
                                            slices=ingest_pb2.SliceOptions(size=32),
                                            volumes=ingest_pb2.VolumeOptions(size=16))
    process, address = _serve(store_uri, tmp_path / "work")
    watched = {}  # pid -> pidfd: a pidfd names one process, never a later one with a reused pid
    try:
        with open_channel(address) as channel:
            job = ingest_pb2_grpc.IngestServiceStub(channel).StartIngest(request, timeout=30)
        deadline = time.monotonic() + 60  # a guard against hangs, not a timing assertion
        while time.monotonic() < deadline:
            children = _descendants(process.pid)
            for pid in children - watched.keys():
                try:
                    watched[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    pass
            workers = children - _children(process.pid)
            if workers and work.is_dir() and any(work.iterdir()):
                break  # the pool (fork server, resource tracker, workers) is up and temp data is written
            time.sleep(0.05)
        assert workers, "the job ran without a worker pool"
        leftovers = list(work.iterdir())
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        pending = dict(watched)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending.values()), [], [], 1.0)
            pending = {pid: fd for pid, fd in pending.items() if fd not in ready}
        assert not pending, f"orphaned after kill -9: {sorted(pending)}"
    finally:
        if process.poll() is None:
            process.kill()
        for fd in watched.values():
            os.close(fd)
    assert not store.exists("datasets/crash/1/manifest.json"), "a killed job must publish nothing"
    assert leftovers and all(path.exists() for path in leftovers), "the crash left temp data (until a restart)"

    process, address = _serve(store_uri, tmp_path / "work")
    try:
        assert not any(path.exists() for path in leftovers), "the restarted service removed the crash's temp data"
        with open_channel(address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            final, _ = finish(stub, job)
            assert final.state == State.JOB_STATE_SUCCEEDED, final.error.message
            assert final.result == "crash:1", "the resumed job kept its version"
            store.read_manifest("datasets/crash/1", verify=True)
        assert list(work.iterdir()) == [], "a finished job leaves no temp data"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_cli_ingest_and_datasets(tmp_path, ct_tree, capsys):
    store = (tmp_path / "cli-store").as_uri()
    assert main(["--store", store, "ingest", "--source", str(ct_tree), "--dataset", "cli", "--size", "32",
                 "--volume-size", "16", "--no-balance"]) == 0
    assert capsys.readouterr().out.strip().endswith("cli:1")
    assert main(["--store", store, "datasets"]) == 0
    assert "cli:1" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--views", "oblique"], "--views: unknown view 'oblique'"),
    (["--window", "-1000"], "--window '-1000': expected 2 comma-separated numbers"),
    (["--split", "a,b,c"], "--split 'a,b,c'"),
    (["--size", "0"], "--size 0: must be a positive number of pixels"),
    (["--size", "5000"], "slices.size"),
])
def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, ct_tree, capsys, args, message):
    store = (tmp_path / "cli-store").as_uri()
    code = main(["--store", store, "ingest", "--source", str(ct_tree), "--dataset", "cli", *args])
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err and len(err.splitlines()) == 1


def test_cli_ingest_of_nothing_usable_exits_1(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--store", (tmp_path / "s").as_uri(), "ingest", "--source", str(empty), "--dataset", "x"]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
