"""Plausible layouts: drawn where and as large as the real nodules are,
inside the body, not touching, seeded; a prior is cached per dataset grid."""

from __future__ import annotations

import numpy as np
import pytest

from ctsynth.conditioning.layout import MAX_NODULES
from ctsynth.conditioning.plausible import JITTER_MM, LayoutPrior, dataset_prior, prior_from_items
from ctsynth.data.dataset_h5 import NODULE_META
from ctsynth.errors import FailedPrecondition, InvalidArgument
from ctsynth.storage import LocalStore

SIDE, SPACING = 32, (2.0, 2.0, 2.0)
SITES = [(10, 12, 8), (20, 18, 24)]  # voxel centres of the planted real nodules


def planted(count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """`count` real volumes: a dense body box around a box of lung air, a
    3-voxel cube nodule at one of SITES in the lung."""
    images = np.zeros((count, SIDE, SIDE, SIDE), np.float32)
    images[:, 4:28, 4:28, 4:28] = 0.6
    images[:, 4:28, 7:25, 7:25] = 0.1  # the lung, open at the top and bottom slices like the airways
    masks = np.zeros_like(images, dtype=np.uint8)
    for i in range(count):
        z, y, x = SITES[i % 2]
        masks[i, z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 1
        images[i][masks[i] == 1] = 0.7
    return images, masks


def annotations() -> np.ndarray:
    rows = np.zeros(3, NODULE_META)
    rows["diameter_mm"], rows["texture_median"], rows["malignancy_max"] = (4.0, 6.0, 9.0), (5, 3, 1), (2, 4, 5)
    return rows


def test_the_prior_finds_the_real_nodules_and_the_body():
    images, masks = planted()
    prior = prior_from_items(images, masks, SPACING, body_level=0.3, annotations=annotations())
    np.testing.assert_allclose(sorted(map(tuple, prior.positions * (SIDE - 1))), sorted(SITES * 3), atol=1e-9)
    body = prior.body_mask((SIDE,) * 3)
    assert body[16, 16, 16] and not body[1, 1, 1] and body.sum() == 24 ** 3  # the lungs are inside the body
    np.testing.assert_array_equal(prior.nodules[:, 0], (4.0, 6.0, 9.0))
    again = LayoutPrior.from_json(prior.to_json())
    assert np.array_equal(again.positions, prior.positions) and np.array_equal(again.nodules, prior.nodules)


def test_without_annotations_the_components_give_equivalent_diameters():
    images, masks = planted(2)
    prior = prior_from_items(images, masks, SPACING, body_level=0.3)
    np.testing.assert_allclose(prior.nodules[:, 0], (6 * 27 * 8 / np.pi) ** (1 / 3))  # a 27-voxel cube of 2 mm


def test_drawn_layouts_sit_at_real_sites_inside_the_body_without_touching_and_are_seeded():
    images, masks = planted()
    prior = prior_from_items(images, masks, SPACING, body_level=0.3, annotations=annotations())
    drawn, layouts = prior.masks(2, 20, (SIDE,) * 3, SPACING, seed=7)
    assert drawn.shape == (20, SIDE, SIDE, SIDE) and drawn.dtype == np.uint8
    body = prior.body_mask((SIDE,) * 3)
    for layout in layouts:
        assert len(layout) == 2
        for nodule in layout:
            offsets = [np.linalg.norm((np.asarray(nodule.centre) - site) * SPACING) for site in SITES]
            assert min(offsets) < 5 * JITTER_MM
            assert body[tuple(np.round(nodule.centre).astype(int))]
            assert nodule.diameter_mm in (4.0, 6.0, 9.0)
            assert (nodule.rating("texture"), nodule.rating("malignancy")) in ((5, 2), (3, 4), (1, 5))
        first, second = layout
        gap = np.linalg.norm((np.asarray(first.centre) - second.centre) * SPACING)
        assert gap > (first.diameter_mm + second.diameter_mm) / 2
    again, _ = prior.masks(2, 20, (SIDE,) * 3, SPACING, seed=7)
    other, _ = prior.masks(2, 20, (SIDE,) * 3, SPACING, seed=8)
    assert np.array_equal(drawn, again) and not np.array_equal(drawn, other)


def test_impossible_requests_are_refused():
    images, masks = planted()
    prior = prior_from_items(images, masks, SPACING, body_level=0.3, annotations=annotations())
    for count in (0, MAX_NODULES + 1):
        with pytest.raises(InvalidArgument, match="outside") as error:
            prior.masks(count, 1, (SIDE,) * 3, SPACING, seed=0)
        assert error.value.field == "nodule_count"
    with pytest.raises(InvalidArgument, match="do not fit") as error:
        prior.masks(MAX_NODULES, 1, (SIDE,) * 3, SPACING, seed=0)  # two sites cannot hold 32 nodules apart
    empty = prior_from_items(images, np.zeros_like(masks), SPACING, body_level=0.3)
    with pytest.raises(FailedPrecondition, match="no nodule"):
        empty.masks(1, 1, (SIDE,) * 3, SPACING, seed=0)


def test_a_dataset_prior_is_computed_once_and_cached(tmp_path, monkeypatch):
    from ctsynth.conditioning import plausible
    from tests.training.conftest import publish_dataset

    store = LocalStore(tmp_path / "store")
    dataset = publish_dataset(store, "blobs", tmp_path / "data", volume_size=8)
    calls = []
    real = plausible.prior_from_items
    monkeypatch.setattr(plausible, "prior_from_items", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = dataset_prior(store, dataset, 3, 8)
    second = dataset_prior(store, dataset, 3, 8)
    assert calls == [1] and np.array_equal(first.positions, second.positions) and len(first.positions) > 0
    assert store.exists("cache/layout-priors/blobs/1/3d-8.json")
    assert np.all((first.positions >= 0) & (first.positions <= 1))
