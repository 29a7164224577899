"""The HDF5 format: streaming writer, torch readers, and opening a published dataset."""

import json
import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ctsynth
from ctsynth.data.dataset_h5 import (
    SLICE_META,
    VOLUME_META,
    LAYOUTS,
    StackDataset,
    encode_chunk,
    latest_version,
    open_dataset,
    read_chunk,
    read_table,
    slice_writer,
    volume_writer,
)
from ctsynth.storage import IntegrityError, LocalStore, ObjectNotFound

SIZE = 8


def slice_rows(n, start, split, view="axial"):
    meta = np.zeros(n, SLICE_META)
    meta["patient"] = [f"p{(start + i) % 3}" for i in range(n)]
    meta["series_uid"], meta["view"], meta["split"] = "1.2.3", view, split
    meta["index"] = np.arange(start, start + n)
    meta["has_nodule"] = np.arange(start, start + n) % 2 == 1
    meta["nodule_pixels"] = meta["has_nodule"] * 5
    images = (np.arange(start, start + n)[:, None, None] / 100 * np.ones((n, SIZE, SIZE))).astype(np.float16)
    masks = np.broadcast_to(meta["has_nodule"][:, None, None], (n, SIZE, SIZE)).astype(np.uint8)
    return meta, images, masks


@pytest.fixture
def slices_file(tmp_path):
    path = tmp_path / "slices.h5"
    with slice_writer(path, SIZE, {"slice_size": SIZE, "window": [-1000, 400]}) as writer:
        for start, split, view in [(0, "train", "axial"), (5, "test", "axial"), (8, "train", "coronal")]:
            meta, images, masks = slice_rows(3 if start == 5 else 5, start, split, view)
            writer.append(meta, images=images, masks=masks)
        assert writer.rows == 13
    return path


def test_writer_streams_into_chunked_compressed_datasets(slices_file):
    with h5py.File(slices_file) as f:
        assert f["images"].shape == (13, SIZE, SIZE) and f["images"].dtype == np.float16
        assert f["images"].chunks == (1, SIZE, SIZE) and f["masks"].chunks == (1, SIZE, SIZE)
        assert f["images"].compression == "gzip" and f["masks"].dtype == np.uint8
        assert f["images"].maxshape[0] is None
        assert json.loads(f.attrs["parameters"])["window"] == [-1000, 400]
        assert f.attrs["ctsynth_version"] == ctsynth.__version__
        np.testing.assert_allclose(f["images"][7, 0, 0], 0.07, atol=1e-3)
    meta = read_table(slices_file)
    assert meta["split"].tolist()[4:6] == ["train", "test"] and meta["index"].tolist()[:3] == [0, 1, 2]


def test_chunks_copy_between_files_as_stored_bytes(slices_file, tmp_path):
    rows = [1, 4, 9]
    with h5py.File(slices_file) as source, slice_writer(tmp_path / "copy.h5", SIZE, {}) as copy:
        copy.append_encoded(source["meta"][rows], **{name: [read_chunk(source[name], r) for r in rows]
                                                     for name in ("images", "masks")})
        expected = {name: source[name][rows] for name in ("images", "masks")}
    with h5py.File(tmp_path / "copy.h5") as f:
        for name, values in expected.items():
            np.testing.assert_array_equal(f[name][()], values)
    assert read_table(tmp_path / "copy.h5")["index"].tolist() == rows


def test_encoded_chunks_are_what_hdf5_would_store(tmp_path):
    item = np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float16)
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        f.create_dataset("x", data=item[None], chunks=(1, SIZE, SIZE), compression="gzip", compression_opts=1,
                         shuffle=True)
    with h5py.File(tmp_path / "ref.h5") as f:
        assert read_chunk(f["x"], 0) == encode_chunk(item)


def test_writer_refuses_mismatched_batches(tmp_path):
    meta, images, masks = slice_rows(3, 0, "train")
    with slice_writer(tmp_path / "x.h5", SIZE, {}) as writer:
        with pytest.raises(ValueError):
            writer.append(meta, images=images)
        with pytest.raises(ValueError):
            writer.append(meta[:2], images=images, masks=masks)
        with pytest.raises(ValueError):
            writer.append(meta, images=images[:, :4], masks=masks)


def test_slice_dataset_selects_rows_through_meta(slices_file):
    train = StackDataset(slices_file, 2, split="train", view="axial", with_mask=True, condition=True)
    assert train.spatial_dims == 2
    assert len(train) == 5 and len(StackDataset(slices_file, 2, split="train")) == 10
    item = train[3]
    assert item["image"].shape == (1, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["image"][0, 0, 0].item() == pytest.approx(0.03, abs=1e-3)
    assert item["mask"].shape == (1, SIZE, SIZE) and item["mask"].max().item() == 1
    assert item["label"].item() == 1
    test = StackDataset(slices_file, 2, split="test")
    assert set(test[0]) == {"image"} and test.meta["index"].tolist() == [5, 6, 7]
    with pytest.raises(ValueError):
        StackDataset(slices_file, 2, split="training")
    with pytest.raises(ValueError, match="spatial_dims 4"):
        StackDataset(slices_file, 4)


def test_slice_dataset_pickles_without_its_file_handle_and_works_in_workers(slices_file):
    dataset = StackDataset(slices_file, 2, split="train", with_mask=True)
    dataset[0]  # opens the file in this process
    assert pickle.loads(pickle.dumps(dataset))._file is None
    handle = dataset._h5()
    dataset._pid = -1  # as seen from a forked worker
    assert dataset._h5() is not handle and dataset._h5() is dataset._h5()
    loader = DataLoader(dataset, batch_size=4, num_workers=2)  # forked workers inherit the open handle
    batches = list(loader)
    assert sum(len(b["image"]) for b in batches) == 10
    assert batches[0]["image"].shape == (4, 1, SIZE, SIZE)


def test_volume_writer_and_dataset(tmp_path):
    path = tmp_path / "volumes.h5"
    with volume_writer(path, 4, {}) as writer:
        for i, split in enumerate(["train", "test"]):
            meta = np.zeros(1, VOLUME_META)
            meta["patient"], meta["series_uid"], meta["split"] = f"p{i}", "1.2", split
            meta["spacing_mm"] = 2.0
            masks = np.zeros((1, 4, 4, 4), np.uint8)
            masks[0, 1, 2, 3] = i  # a one-voxel nodule in the test volume only
            writer.append(meta, volumes=np.full((1, 4, 4, 4), i, np.float16), masks=masks)
    with h5py.File(path) as f:
        assert f["volumes"].chunks == (1, 4, 4, 4)
    dataset = StackDataset(path, 3, split="test", with_mask=True)
    assert len(dataset) == 1 and dataset.spatial_dims == 3
    item = dataset[0]
    assert item["image"].shape == (1, 4, 4, 4) and item["image"].max().item() == 1
    assert item["mask"].shape == (1, 4, 4, 4)
    assert dataset.meta["spacing_mm"].tolist() == [[2.0, 2.0, 2.0]]
    # A volume's label is whether its mask has any voxel, with or without the mask in the item.
    labelled = StackDataset(path, 3, condition=True)
    assert [labelled[i]["label"].item() for i in range(2)] == [0, 1] and set(labelled[0]) == {"image", "label"}
    with pytest.raises(ValueError, match="volumes have none"):
        StackDataset(path, 3, view="axial")


def test_datasets_give_the_median_voxel_size_of_their_rows_on_the_grid_training_uses(tmp_path, slices_file):
    path = tmp_path / "volumes.h5"
    with volume_writer(path, 4, {}) as writer:
        meta = np.zeros(3, VOLUME_META)
        meta["patient"], meta["series_uid"], meta["split"] = ["p0", "p1", "p2"], "1.2", ["train", "train", "test"]
        meta["spacing_mm"] = [[10.0, 10.0, 10.0], [12.0, 11.0, 11.0], [50.0, 50.0, 50.0]]
        writer.append(meta, volumes=np.zeros((3, 4, 4, 4), np.float16), masks=np.zeros((3, 4, 4, 4), np.uint8))
    train = StackDataset(path, 3, split="train")
    assert train.spacing_mm((4, 4, 4)) == pytest.approx((11.0, 10.5, 10.5))
    assert train.spacing_mm((8, 8, 8)) == pytest.approx((5.5, 5.25, 5.25))  # upsampled: smaller voxels
    assert StackDataset(slices_file, 2).spacing_mm((SIZE, SIZE)) is None  # no pixel size recorded (image folders)


def publish(store, version, path):
    store.publish(f"datasets/demo/{version}", {"slices.h5": path}, {"name": "demo"})


def test_open_dataset_takes_the_latest_version_and_caches_by_hash(tmp_path, slices_file):
    store = LocalStore(tmp_path / "store")
    publish(store, 2, slices_file)
    publish(store, 10, slices_file)
    store.put("datasets/demo/11/slices.h5", b"unpublished: no manifest")
    assert latest_version(store, "demo") == "10"
    local, manifest = open_dataset(store, "demo", cache_dir=tmp_path / "cache")
    assert manifest["files"]["slices.h5"]["sha256"] in local.name
    assert local.read_bytes() == slices_file.read_bytes()
    again, _ = open_dataset(store, "demo", version="2", cache_dir=tmp_path / "cache")
    assert again == local  # same content, same cache entry
    assert len(StackDataset(local, 2)) == 13


def test_open_dataset_errors(tmp_path, slices_file):
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ObjectNotFound, match="no published version"):
        open_dataset(store, "demo", cache_dir=tmp_path / "cache")
    publish(store, 1, slices_file)
    with pytest.raises(ObjectNotFound):
        open_dataset(store, "demo", file="volumes.h5", cache_dir=tmp_path / "cache")
    (store.root / "datasets/demo/1/slices.h5").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        open_dataset(store, "demo", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())


def test_the_layout_names_the_file_counts_and_shape_of_each_dimensionality():
    manifest = {"slice_shape": [64, 64], "volume_shape": [32, 32, 32],
                "splits": {"train": {"slices": 7, "volumes": 2}, "test": {"slices": 3, "volumes": 1}}}
    slices, volumes = LAYOUTS[2], LAYOUTS[3]
    assert (slices.file, volumes.file) == ("slices.h5", "volumes.h5")
    assert slices.item_shape(manifest) == [64, 64] and volumes.item_shape(manifest) == [32, 32, 32]
    assert (slices.items(manifest, "train"), slices.items(manifest)) == (7, 10)
    assert (volumes.items(manifest, "test"), volumes.items(manifest), volumes.items(manifest, "validation")) == (1, 3, 0)
