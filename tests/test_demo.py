"""The demo pipeline at its smallest size, through the real services running
as separate processes (the local stack): every artifact exists and parses."""

from __future__ import annotations

import html.parser
import io
import json
import math
import os
import zipfile

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctsynth import stack
from ctsynth.demo import DATASET, Demo, tiny_plan
from ctsynth.storage import open_store


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    store_uri = (root / "store").as_uri()
    state = root / "stack.json"
    running = stack.up(store_uri, state_file=state, env={"CTSYNTH_RAY_DASHBOARD": "0"})
    try:
        demo = Demo(tiny_plan(), running.target, open_store(store_uri), root / "out", say=lambda text: None)
        try:
            report = demo.run()
        finally:
            demo.close()
    finally:
        stack.down(state)
    return open_store(store_uri), root / "out", report


def test_dataset_and_every_model_are_published(demo_run):
    store, _, _ = demo_run
    manifest = store.read_manifest(f"datasets/{DATASET}/1", verify=True)
    assert manifest["counts"]["slices"] > 0 and manifest["counts"]["volumes"] == 2
    for model in tiny_plan().models:
        files = store.read_manifest(f"models/{model.name}/1", verify=True)["files"]
        assert {"weights.safetensors", "config.json", "metrics.json", "samples.png"} <= set(files)
        Image.open(io.BytesIO(store.get_bytes(f"models/{model.name}/1/samples.png"))).verify()


def test_samples_in_every_format_parse(demo_run):
    _, out, _ = demo_run
    samples = out / "samples"
    png8 = [np.asarray(Image.open(p)) for p in sorted((samples / "demo-dcgan").glob("*.png"))]
    assert len(png8) == 2 and png8[0].dtype == np.uint8 and png8[0].shape == (32, 32)
    dicoms = [pydicom.dcmread(p) for p in sorted((samples / "demo-unet-gan").glob("*.dcm"))]
    assert len(dicoms) == 2 and all(d.Modality == "CT" and "DERIVED" in d.ImageType for d in dicoms)
    png16 = [np.asarray(Image.open(p)) for p in sorted((samples / "demo-vae").glob("*.png"))]
    assert len(png16) == 2 and png16[0].dtype in (np.uint16, np.int32)
    arrays = [np.load(p) for p in sorted((samples / "demo-ldm").glob("[0-9]*.npy")) if "mask" not in p.name]
    assert len(arrays) == 2 and arrays[0].dtype == np.float16 and 0 <= arrays[0].min() <= arrays[0].max() <= 1
    volumes = [nibabel.load(p) for p in sorted((samples / "demo-ddpm3d").glob("*.nii*"))]
    assert len(volumes) == 2 and volumes[0].shape == (16, 16, 16)
    assert json.loads((samples / "demo-ddpm3d" / "samples.json").read_text())


def test_reports_parse_and_their_metrics_are_finite(demo_run):
    store, out, report = demo_run
    summary = json.loads((out / "report" / "comparison.json").read_text())
    assert set(summary["models"]) == {f"{m.name}:1" for m in tiny_plan().models}
    completed = 0
    for entry in summary["models"].values():
        for result in entry["metrics"].values():
            if not result.get("failed"):
                completed += 1
                assert math.isfinite(result.get("value", 0.0)), result
        report_id = entry["report"].rstrip("/").split("/")[-2]
        files = store.read_manifest(f"reports/{report_id}", verify=True)["files"]
        assert "report.json" in files and "report.html" in files
        for name in files:
            if name.endswith(".png"):
                Image.open(io.BytesIO(store.get_bytes(f"reports/{report_id}/{name}"))).verify()
    assert completed > 0, "at least some metrics complete on the tiny demo"
    parser = html.parser.HTMLParser()
    parser.feed(report.read_text())
    assert "demo-ddpm3d:1" in report.read_text()
