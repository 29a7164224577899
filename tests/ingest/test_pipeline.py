"""run_ingest end to end: LIDC phantoms, plain DICOM with every kind of bad input, slice images."""

import json

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEGLSLossless

from ctsynth.data.dataset_h5 import StackDataset, read_table
from ctsynth.errors import FailedPrecondition, InvalidArgument
from ctsynth.ingest import IngestOptions, run_ingest
from ctsynth.ingest.pipeline import TEMP_PREFIX, remove_leftovers
from ctsynth.roots import AllowedRoots
from ctsynth.storage import LocalStore, ObjectNotFound

from .conftest import Cancelled, RecordingReporter
from .synthetic_dicom import claim_shape, declare_transfer_syntax, write_series

SMALL = {"slice_size": 64, "volume_size": 32}
EVERYWHERE = AllowedRoots(("/",))  # most tests here are about processing; confinement has its own


def ingest(source, store, reporter=None, prefix="datasets/t/1", workers=1, roots=EVERYWHERE, work_dir=None,
           **options):
    reporter = reporter or RecordingReporter()
    manifest = run_ingest(IngestOptions(source=str(source), dataset="t", **{**SMALL, **options}), store, prefix,
                          reporter, roots=roots, work_dir=work_dir, workers=workers)
    return manifest, reporter


def published(store, name, prefix="datasets/t/1"):
    return store.root / prefix / name


def arrays(path):
    with h5py.File(path) as f:
        return {name: f[name][()] for name in f if name != "meta"}, read_table(path)


@pytest.fixture(scope="module")
def lidc_run(lidc_phantom_root, tmp_path_factory):
    root, _ = lidc_phantom_root
    store = LocalStore(tmp_path_factory.mktemp("store"))
    manifest, reporter = ingest(root, store, split=(0.5, 0.0, 0.5))
    return manifest, store, reporter


def test_lidc_manifest_counts_match_the_files(lidc_run):
    manifest, store, reporter = lidc_run
    assert manifest["source_kind"] == "lidc" and manifest["name"] == "t" and manifest["version"] == "1"
    assert reporter.warnings == [] and manifest["warnings"] == []
    meta = read_table(published(store, "slices.h5"))
    volumes = read_table(published(store, "volumes.h5"))
    counts = manifest["counts"]
    assert counts["slices"] == len(meta) > 0 and counts["tumor_slices"] == meta["has_nodule"].sum() > 0
    assert counts["volumes"] == len(volumes) == 2 and counts["series"] == 2 and counts["patients"] == 2
    for split, numbers in manifest["splits"].items():
        rows = meta["split"] == split
        assert numbers["slices"] == rows.sum() and numbers["tumor_slices"] == meta["has_nodule"][rows].sum()
        assert numbers["volumes"] == (volumes["split"] == split).sum()
        assert sorted(set(meta["patient"][rows])) == manifest["patients"][split]
    assert manifest["slice_shape"] == [64, 64] and manifest["volume_shape"] == [32, 32, 32]
    assert set(manifest["files"]) == {"slices.h5", "volumes.h5"}
    store.read_manifest("datasets/t/1", verify=True)


def test_lidc_split_is_patient_level_and_balanced(lidc_run):
    manifest, store, _ = lidc_run
    train, test = set(manifest["patients"]["train"]), set(manifest["patients"]["test"])
    assert len(train) == len(test) == 1 and not train & test and manifest["patients"]["validation"] == []
    meta = read_table(published(store, "slices.h5"))
    for split in ("train", "test"):
        rows = meta["split"] == split
        assert meta["has_nodule"][rows].sum() * 2 == rows.sum()  # as many tumour as non-tumour slices
    volumes = read_table(published(store, "volumes.h5"))
    assert {p: s for p, s in zip(volumes["patient"], volumes["split"])} == {
        **{p: "train" for p in train}, **{p: "test" for p in test}}


def test_lidc_arrays_agree_with_their_labels(lidc_run):
    _, store, _ = lidc_run
    data, meta = arrays(published(store, "slices.h5"))
    images, masks = data["images"], data["masks"]
    assert images.dtype == np.float16 and images.shape == (len(meta), 64, 64)
    assert 0 <= images.min() and images.max() <= 1
    assert set(np.unique(masks)) == {0, 1}
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), meta["nodule_pixels"])
    np.testing.assert_array_equal(meta["has_nodule"], meta["max_malignancy"] > 0)
    assert (meta["nodule_pixels"][meta["has_nodule"]] >= 10).all()  # the minimum-pixel rule
    assert (meta["mean_intensity"] >= 0.1).all()
    # The masks sit on the drawn nodules: brighter than the lung next to them.
    beside = (np.roll(masks, 6, axis=2) == 1) & (masks == 0)
    assert images[masks == 1].astype(np.float32).mean() > images[beside].astype(np.float32).mean() + 0.1
    assert len(data["nodules"]) > 0 and set(data["nodules"]["malignancy_max"]) <= {1, 2, 3, 4, 5}


def test_lidc_files_record_their_parameters(lidc_run):
    manifest, store, _ = lidc_run
    with h5py.File(published(store, "slices.h5")) as f:
        parameters = json.loads(f.attrs["parameters"])
    assert parameters == {**manifest["parameters"], "source_kind": "lidc"}
    assert manifest["parameters"]["window"] == [-1000.0, 400.0]


def test_lidc_torch_datasets(lidc_run):
    _, store, _ = lidc_run
    train = StackDataset(published(store, "slices.h5"), 2, split="train", with_mask=True, condition=True)
    item = train[0]
    assert item["image"].shape == (1, 64, 64) and item["mask"].shape == (1, 64, 64)
    labels = [train[i]["label"].item() for i in range(len(train))]
    assert labels == [int(bool(train[i]["mask"].sum())) for i in range(len(train))]
    volumes = StackDataset(published(store, "volumes.h5"), 3, with_mask=True)
    assert volumes[0]["image"].shape == (1, 32, 32, 32)
    assert sum(volumes[i]["mask"].sum().item() for i in range(len(volumes))) > 0


def test_lidc_progress_events(lidc_run):
    _, _, reporter = lidc_run
    series = [e for e in reporter.events if e[0] == "series"]
    assert series == [("series", 1, 2, "series"), ("series", 2, 2, "series")]
    writing = [e for e in reporter.events if e[0] == "writing"]
    assert writing[-1][1] == writing[-1][2] and writing[-1][3] == "slices"


def test_same_options_same_arrays_for_any_worker_count(lidc_run, lidc_phantom_root, tmp_path):
    _, first_store, _ = lidc_run
    parallel_store = LocalStore(tmp_path / "store")
    ingest(lidc_phantom_root[0], parallel_store, split=(0.5, 0.0, 0.5), workers=2)
    for name in ("slices.h5", "volumes.h5"):
        (a, meta_a), (b, meta_b) = arrays(published(first_store, name)), arrays(published(parallel_store, name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(meta_a, meta_b)


def test_unbalanced_run_keeps_every_slice_and_another_seed_splits_differently(lidc_phantom_root, store):
    manifest, _ = ingest(lidc_phantom_root[0], store, balance=False, volumes=False, split=(0.5, 0.0, 0.5), seed=3)
    assert manifest["counts"]["slices"] > 2 * manifest["counts"]["tumor_slices"]
    assert "volumes.h5" not in manifest["files"] and manifest["volume_shape"] is None


@pytest.fixture
def messy_tree(ct_tree):
    """ct_tree (P1-P3 fine) plus one example of every problem the ingest must survive."""
    root = ct_tree
    (root / "P1" / "series" / "broken.dcm").write_bytes(b"\x07" * 300)
    write_series(root / "P4" / "gap", patient="P4", slices=5, positions=[0, 2.5, 5, 15, 17.5])
    write_series(root / "P5" / "dupes", patient="P5", slices=5, positions=[0, 2.5, 2.5, 5, 7.5])
    write_series(root / "P6" / "spacing", patient="P6", slices=4, pixel_spacings=[(0.8, 0.8)] * 2 + [(1, 1)] * 2)
    write_series(root / "P7" / "mr", patient="P7", slices=3, modality="MR")
    for path in write_series(root / "P8" / "jls", patient="P8", slices=3):
        declare_transfer_syntax(path, JPEGLSLossless)
    (root / "P9" / "nothing").mkdir(parents=True)
    (root / "README.txt").write_text("not DICOM")
    return root


def test_bad_inputs_are_warnings_and_the_job_goes_on(messy_tree, store):
    manifest, reporter = ingest(messy_tree, store, views=("axial", "coronal", "sagittal"), export_nifti=True)
    assert manifest["source_kind"] == "dicom"
    expected = [("P1/series/broken.dcm", "not a readable DICOM"), ("P4/gap", "missing slices"),
                ("P5/dupes", "duplicated"), ("P6/spacing", "inconsistent PixelSpacing"), ("P7/mr", "not CT"),
                ("P8/jls", "JPEG-LS"), ("P9/nothing", "empty folder")]
    for subject, reason in expected:
        assert reporter.warned(subject, reason), (subject, reason, reporter.warnings)
    assert manifest["warnings"] == [{"subject": s, "reason": r} for s, r in reporter.warnings]
    assert manifest["counts"]["patients"] == 4  # P1, P2, P3 and the de-duplicated P5
    meta = read_table(published(store, "slices.h5"))
    assert set(meta["view"]) == {"axial", "coronal", "sagittal"}
    assert np.isnan(meta["z_mm"][meta["view"] != "axial"]).all()
    assert not np.isnan(meta["z_mm"][meta["view"] == "axial"]).any()
    assert manifest["counts"]["filtered_low_intensity"] > 0  # coronal planes at the edge are air
    nifti = sorted(k for k in manifest["files"] if k.startswith("nifti/"))
    assert len(nifti) == 4 and nifti[0].startswith("nifti/P1_")
    image = nib.load(published(store, nifti[0]))
    assert image.shape == (48, 48, 6)
    # RAS in mm: the DICOM's LPS grid (first slice at (-20, -20, z0), 0.8 mm pixels, 2.5 mm steps), x and y negated.
    assert image.header.get_xyzt_units()[0] == "mm" and image.header["qform_code"] == image.header["sform_code"] == 1
    assert np.allclose(image.affine[:3, :3], np.diag([-0.8, -0.8, 2.5]))
    first = pydicom.dcmread(sorted((messy_tree / "P1").rglob("*.dcm"), key=lambda p: float(
        pydicom.dcmread(p, stop_before_pixels=True, force=True).get("ImagePositionPatient", [0, 0, 1e9])[2]))[0],
        stop_before_pixels=True)
    x0, y0, z0 = (float(v) for v in first.ImagePositionPatient)
    assert np.allclose(image.affine[:3, 3], [-x0, -y0, z0]) and (x0, y0) == (-20.0, -20.0)
    assert image.get_fdata().min() == -1000


def test_nothing_usable_is_a_failed_precondition(tmp_path, store):
    write_series(tmp_path / "src" / "mr-study-folder", slices=3, modality="MR")
    with pytest.raises(FailedPrecondition, match="not CT") as refused:
        ingest(tmp_path / "src", store)
    assert "mr-study-folder" not in str(refused.value), "the error is no listing of the source"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FailedPrecondition, match="empty folder"):
        ingest(tmp_path / "empty", store)
    with pytest.raises(ObjectNotFound):
        store.read_manifest("datasets/t/1")


def test_slice_image_folders(tmp_path, store):
    grey = (np.indices((40, 40)).sum(0) * 3 % 256).astype(np.uint8)
    for patient in ("a", "b", "c"):
        (tmp_path / "src" / patient).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(grey).save(tmp_path / "src" / patient / f"{i}.png")
    Image.fromarray(grey[:10]).save(tmp_path / "src" / "a" / "odd.png")
    (tmp_path / "src" / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    manifest, reporter = ingest(tmp_path / "src", store)
    assert manifest["source_kind"] == "slices"
    assert reporter.warned("a/odd.png", "majority") and reporter.warned("b/bad.png", "unreadable")
    assert manifest["counts"]["slices"] == 9 and manifest["counts"]["patients"] == 3
    assert manifest["counts"]["volumes"] == 0 and "volumes.h5" not in manifest["files"]
    assert sum(len(p) for p in manifest["patients"].values()) == 3
    data, meta = arrays(published(store, "slices.h5"))
    assert not data["masks"].any() and not meta["has_nodule"].any()
    assert np.isnan(meta["pixel_mm"]).all(), "image files carry no physical pixel size"
    np.testing.assert_allclose(data["images"][0].astype(np.float32).mean(), grey.mean() / 255, atol=0.01)


def test_object_store_source_is_downloaded(ct_tree, store, tmp_path):
    local, _ = ingest(ct_tree, store, prefix="datasets/t/1")
    remote, reporter = ingest(ct_tree.as_uri(), store, prefix="datasets/t/2")
    assert remote["counts"] == local["counts"] and remote["patients"] == local["patients"]
    assert any(e[0] == "download" for e in reporter.events)
    assert published(store, "slices.h5", "datasets/t/2").read_bytes() != b""


def test_cancelled_job_publishes_nothing(ct_tree, store):
    with pytest.raises(Cancelled):
        ingest(ct_tree, store, reporter=RecordingReporter(cancel_after=1))
    with pytest.raises(ObjectNotFound):
        store.read_manifest("datasets/t/1")


def test_max_series_limits_the_work(ct_tree, store):
    manifest, _ = ingest(ct_tree, store, max_series=2)
    assert manifest["counts"]["series"] == 2


def test_slices_record_the_pixel_size_they_were_fitted_to(ct_tree, store):
    # 48 x 48 pixels of 0.8 mm and 6 slices of 2.5 mm: the 38.4 mm width spans the 64-pixel slice.
    ingest(ct_tree, store, views=("axial", "coronal"))
    meta = read_table(published(store, "slices.h5"))
    assert set(meta["view"]) == {"axial", "coronal"}
    np.testing.assert_allclose(meta["pixel_mm"], 48 * 0.8 / SMALL["slice_size"], rtol=1e-6)
    assert StackDataset(published(store, "slices.h5"), 2).spacing_mm((32, 32)) == pytest.approx((1.2, 1.2))


def test_oversized_headers_and_damaged_duplicates_cost_only_their_files(ct_tree, store):
    for path in write_series(ct_tree / "P4" / "huge", patient="P4", slices=4):
        claim_shape(path, 65535, 65535)  # 8 GiB claimed over 4.5 KiB of pixels
    dupes = write_series(ct_tree / "P5" / "dupes", patient="P5", slices=7, positions=[0, 2.5, 2.5, 5, 7.5, 10, 12.5])
    dupes[1].write_bytes(dupes[1].read_bytes()[:-1000])  # the copy that sorts first is truncated
    manifest, reporter = ingest(ct_tree, store)
    assert reporter.warned("P4/huge/slice_000.dcm", "header claims 65535 x 65535 pixels")
    assert reporter.warned("P4/huge", "no usable file")
    assert reporter.warned("P5/dupes/slice_001.dcm", "file holds only")
    assert not reporter.warned("P5/dupes", "missing slices")
    assert manifest["counts"]["patients"] == 4 and manifest["counts"]["series"] == 4  # P1-P3 and P5
    volumes = read_table(published(store, "volumes.h5"))
    assert sorted(volumes["patient"]) == ["P1", "P2", "P3", "P5"]


def test_a_source_outside_the_roots_is_refused_before_anything_is_read_or_created(tmp_path, store, ct_tree):
    roots = AllowedRoots((str(tmp_path / "allowed"),))
    for source in (ct_tree, (tmp_path / "anywhere" / "a" / "b").as_uri()):
        reporter = RecordingReporter()
        with pytest.raises(InvalidArgument, match="source: .* is outside the allowed roots"):
            ingest(source, store, reporter=reporter, roots=roots)
        assert reporter.events == reporter.warnings == [], "nothing was read"
    missing = tmp_path / "allowed" / "a" / "b"
    with pytest.raises(InvalidArgument, match="is not a readable store prefix"):
        ingest(missing.as_uri(), store, roots=AllowedRoots((str(tmp_path),)))
    assert not (tmp_path / "anywhere").exists() and not (tmp_path / "allowed").exists(), "nothing was created"


def test_temporary_files_live_in_the_work_dir_and_leftovers_are_removed(ct_tree, store, tmp_path):
    work = tmp_path / "work"
    seen = []

    class Watching(RecordingReporter):
        def progress(self, stage, done, total, unit):
            seen.extend(p.name for p in work.iterdir())
            super().progress(stage, done, total, unit)

    ingest(ct_tree, store, reporter=Watching(), work_dir=work)
    assert seen and all(name.startswith(TEMP_PREFIX) for name in seen)
    assert list(work.iterdir()) == [], "a finished ingest leaves nothing behind"
    (work / f"{TEMP_PREFIX}crashed" / "source").mkdir(parents=True)
    (work / f"{TEMP_PREFIX}crashed" / "source" / "slice.h5").write_bytes(b"decoded")
    (work / "not-ours").mkdir()
    remove_leftovers(work)
    assert [p.name for p in work.iterdir()] == ["not-ours"]
