"""Slice-image folders: formats, bit depths, colour, odd sizes, unreadable files, patients."""

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from ctsynth.data.slice_images import group_slice_images, load_group, read_slice_image

GREY8 = (np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint8)
GREY16 = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)


@pytest.mark.parametrize("name, pixels, write", [
    ("a.png", GREY8, lambda p, a: Image.fromarray(a).save(p)),
    ("b.png", GREY16, lambda p, a: Image.fromarray(a).save(p)),
    ("c.tif", GREY16, imagecodecs.imwrite),
    ("d.jp2", GREY16, imagecodecs.imwrite),
])
def test_grey_images_scale_by_bit_depth(tmp_path, name, pixels, write):
    write(tmp_path / name, pixels)
    image, colour = read_slice_image(tmp_path / name)
    scale = 255 if pixels.dtype == np.uint8 else 65535
    np.testing.assert_allclose(image, pixels / scale, atol=1e-6)
    assert image.dtype == np.float32 and not colour


def test_rgb_becomes_luminance(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 100, 0
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image, colour = read_slice_image(tmp_path / "rgb.png")
    assert colour
    np.testing.assert_allclose(image, (0.299 * 255 + 0.587 * 100) / 255, atol=1e-5)


def test_float_images_are_refused(tmp_path):
    imagecodecs.imwrite(tmp_path / "f.tif", np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="8- or 16-bit"):
        read_slice_image(tmp_path / "f.tif")


def test_patients_are_top_level_subfolders_or_single_files(tmp_path):
    for patient in ("alice", "bob"):
        (tmp_path / patient / "deeper").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(GREY8).save(tmp_path / patient / "deeper" / f"{i}.png")
    Image.fromarray(GREY8).save(tmp_path / "loose.png")
    groups, problems = group_slice_images(tmp_path, sorted(tmp_path.rglob("*.png")))
    assert problems == []
    assert [(g.folder, g.patients) for g in groups] == [
        (".", ("loose",)), ("alice/deeper", ("alice", "alice")), ("bob/deeper", ("bob", "bob"))]


def test_odd_sizes_and_unreadable_files_are_skipped_with_problems(tmp_path):
    for i in range(3):
        Image.fromarray(GREY8).save(tmp_path / f"{i}.png")
    Image.fromarray(GREY8[:20]).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    rgb = np.stack([GREY8] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    groups, problems = group_slice_images(tmp_path, sorted(tmp_path.iterdir()))
    assert [p.subject for p in problems] == ["small.png"]
    assert "64x20" in problems[0].reason and "64x48" in problems[0].reason
    stack, kept, load_problems = load_group(groups[0])
    assert stack.shape == (4, 48, 64)
    assert [groups[0].files[i].rsplit("/", 1)[1] for i in kept] == ["0.png", "1.png", "2.png", "colour.png"]
    subjects = {p.subject: p.reason for p in load_problems}
    assert "unreadable image" in subjects["broken.png"]
    assert "converted to luminance" in subjects["."] and "colour.png" in subjects["."]
    np.testing.assert_allclose(stack[3], GREY8 / 255, atol=2e-3)
