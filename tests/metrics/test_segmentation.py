"""The nodule segmenter and the conditioning-fidelity, HU and segmentation
utility metrics on 32x32 images whose answers are known: bright discs
exactly where (or exactly not where) their masks are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ctsynth.errors import InvalidArgument
from ctsynth.metrics import segmentation
from ctsynth.metrics.checks import MetricError
from ctsynth.metrics.segmentation import (SegmenterConfig, cached_segmenter, compare_nodule_hu,
                                          conditioning_fidelity, detection, dice_scores, find_segmenter,
                                          load_segmenter, mask_fidelity, nodule_hu, reference_fidelity,
                                          segmentation_utility, segmenter_name, train_segmenter)
from ctsynth.metrics.utility import paired_wilcoxon, wilcoxon_when_meaningful
from ctsynth.registry import Registry
from ctsynth.servicers.training import model_message
from ctsynth.storage import open_store

CPU = torch.device("cpu")
SIZE = 32
TINY = SegmenterConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, steps=150, batch_size=8, lr=1e-2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny U-Nets run faster on one intra-op thread on a shared 2-core machine
    (as in tests/models)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def disc_masks(centres, radii, size: int = SIZE) -> np.ndarray:
    """(N, 1, size, size) uint8: item i holds discs of centres[i] (a list of
    (y, x)) and radii[i]."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((len(centres), 1, size, size), np.uint8)
    for i, (item_centres, item_radii) in enumerate(zip(centres, radii)):
        for (y, x), r in zip(item_centres, item_radii):
            masks[i, 0] |= ((yy - y) ** 2 + (xx - x) ** 2 < r * r).astype(np.uint8)
    return masks


def painted(masks: np.ndarray, seed: int) -> np.ndarray:
    """Images that are bright (0.8) exactly on the masks, dark (0.2) elsewhere, a little noise."""
    noise = np.random.default_rng(seed).normal(0, 0.05, masks.shape)
    return np.clip(np.where(masks > 0, 0.8, 0.2) + noise, 0, 1).astype(np.float32)


def random_discs(count: int, seed: int, x_range=(8, 24)) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    centres = [[(rng.uniform(8, 24), rng.uniform(*x_range))] for _ in range(count)]
    radii = [[rng.uniform(3, 6)] for _ in range(count)]
    return centres, radii


def pairs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    masks = disc_masks(*random_discs(count, seed))
    return painted(masks, seed + 100), masks


@pytest.fixture(scope="module")
def segmenter():
    trained, history = train_segmenter(*pairs(32, 0), TINY, CPU)
    assert len(history) == TINY.steps
    return trained


@pytest.fixture(scope="module")
def test_pairs():
    return pairs(16, 1)


def test_the_segmenter_learns_discs_and_scores_the_reference(segmenter, test_pairs):
    reference = reference_fidelity(segmenter, *test_pairs)
    assert reference.dice > 0.9
    assert reference.detection.sensitivity == 1.0 and reference.detection.false_positives_per_image == 0
    assert reference.detection.requested == 16
    predicted = segmenter.predict(test_pairs[0])
    assert predicted.dtype == np.uint8 and set(np.unique(predicted)) <= {0, 1}
    assert segmenter.probabilities(test_pairs[0]).shape == test_pairs[0].shape


def test_generated_images_equal_to_the_real_ones_score_exactly_the_reference(segmenter, test_pairs):
    generated = conditioning_fidelity(segmenter, test_pairs[0].copy(), test_pairs[1])
    reference = reference_fidelity(segmenter, *test_pairs)
    assert np.array_equal(generated.dice_per_image, reference.dice_per_image)
    assert generated.detection == reference.detection
    assert generated.details() == reference.details()


def test_nodules_drawn_away_from_the_requested_masks_score_zero(segmenter):
    centres, radii = random_discs(12, 2, x_range=(7, 10))
    requested = disc_masks(centres, radii)
    moved = disc_masks([[(y, x + 16) for y, x in item] for item in centres], radii)
    assert not (requested & moved).any()
    result = conditioning_fidelity(segmenter, painted(moved, 3), requested)
    assert result.dice < 0.05
    assert result.detection.sensitivity == 0.0
    assert result.detection.false_positives_per_image >= 0.9  # the drawn disc, where nobody asked for it


def test_dice_decreases_monotonically_as_the_drawn_discs_move_away(segmenter):
    centres, radii = random_discs(12, 4, x_range=(8, 12))
    requested = disc_masks(centres, radii)
    ladder = []
    for shift in (0, 2, 4, 7, 12):
        drawn = disc_masks([[(y, x + shift) for y, x in item] for item in centres], radii)
        ladder.append(conditioning_fidelity(segmenter, painted(drawn, 5), requested).dice)
    assert all(a > b for a, b in zip(ladder, ladder[1:])), ladder
    assert ladder[0] > 0.9 and ladder[-1] < 0.05


def test_two_requested_nodules_with_one_drawn_give_half_sensitivity(segmenter):
    requested = disc_masks([[(10, 9), (22, 23)]], [[4, 4]])
    drawn = disc_masks([[(10, 9)]], [[4]])
    result = conditioning_fidelity(segmenter, painted(drawn, 6), requested)
    assert result.detection.requested == 2 and result.detection.detected == 1
    assert result.detection.sensitivity == 0.5 and result.detection.false_positives == 0


def test_planted_detection_and_false_positives_on_masks():
    requested = disc_masks([[(8, 8), (24, 24)], [(16, 16)], []], [[3, 3], [4], []])
    predicted = disc_masks([[(8, 9)], [(16, 16), (4, 28)], [(26, 6), (6, 26)]], [[3], [4, 2], [2, 2]])
    found = detection(predicted, requested)
    assert (found.requested, found.detected, found.false_positives) == (3, 2, 3)
    assert found.sensitivity == pytest.approx(2 / 3) and found.false_positives_per_image == 1.0
    empty = np.zeros((1, 1, 8, 8), np.uint8)
    assert detection(empty, empty).sensitivity is None  # nothing requested: no sensitivity
    assert "sensitivity" not in mask_fidelity(empty, empty).details()
    # a diagonal touch is one nodule (8-connectivity)
    diagonal = np.zeros((1, 1, 8, 8), np.uint8)
    diagonal[0, 0, 2, 2] = diagonal[0, 0, 3, 3] = 1
    assert detection(diagonal, diagonal).requested == 1


def test_dice_edge_cases_are_defined():
    empty, dot = np.zeros((1, 1, 4, 4), np.uint8), np.zeros((1, 1, 4, 4), np.uint8)
    dot[0, 0, 1, 1] = 1
    half = dot.copy()
    half[0, 0, 1, 2] = 1
    scores = dice_scores(np.concatenate([empty, dot, empty, half]), np.concatenate([empty, empty, dot, dot]))
    assert scores.tolist() == pytest.approx([1.0, 0.0, 0.0, 2 / 3])


def test_hu_inside_nodules_recovers_the_planted_values():
    window = (-1000.0, 400.0)
    masks = disc_masks([[(10, 10)], [(20, 20)], [(16.5, 16.5)]], [[5], [4], [6]])  # the last one 4-fold symmetric
    hu = np.full(masks.shape, -800.0)
    hu[0][masks[0] > 0] = 50.0  # a solid nodule (rating 5)
    hu[1][masks[1] > 0] = -600.0  # a ground-glass nodule (rating 1)
    inside = np.flatnonzero(masks[2].reshape(-1))
    values = hu[2].reshape(-1)
    assert len(inside) % 2 == 0
    values[inside[::2]], values[inside[1::2]] = -100.0, 100.0  # mean 0, std 100
    hu[2] = values.reshape(hu[2].shape)
    images = ((hu - window[0]) / (window[1] - window[0])).astype(np.float32)
    result = nodule_hu(images, masks, window, ratings=[5, 1, 3])
    assert result.by_rating[5].mean == pytest.approx(50.0, abs=1e-3)
    assert result.by_rating[5].std == pytest.approx(0, abs=1e-3)
    assert result.by_rating[1].mean == pytest.approx(-600.0, abs=1e-3)
    assert result.by_rating[3].mean == pytest.approx(0.0, abs=1e-3)
    assert result.by_rating[3].std == pytest.approx(100.0, abs=1e-3)
    sizes = masks.reshape(3, -1).sum(1, dtype=np.int64)
    assert result.overall.voxels == sizes.sum() and result.overall.items == 3
    assert result.overall.mean == pytest.approx((50 * sizes[0] - 600 * sizes[1]) / sizes.sum(), abs=1e-3)
    assert set(nodule_hu(images, masks, window).by_rating) == set()  # no ratings: no groups

    real = nodule_hu(images[:2], masks[:2], window, ratings=[5, 1])
    generated_hu = np.where(masks[:2] > 0, hu[:2] + 30.0, hu[:2])
    generated = nodule_hu(((generated_hu - window[0]) / (window[1] - window[0])).astype(np.float32), masks[:2],
                          window, ratings=[5, 1])
    compared = compare_nodule_hu(generated, real)
    assert compared["rating5_mean_hu_difference"] == pytest.approx(30.0, abs=1e-3)
    assert compared["rating1_mean_hu_difference"] == pytest.approx(30.0, abs=1e-3)
    assert compared["mean_hu_difference"] == pytest.approx(30.0, abs=1e-3)
    assert compared["std_hu_difference"] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(MetricError, match="ratings must lie in 1-5"):
        nodule_hu(images, masks, window, ratings=[0, 1, 2])
    with pytest.raises(InvalidArgument, match="window"):
        nodule_hu(images, masks, (400.0, -1000.0))


def test_training_is_seeded():
    data = pairs(8, 7)
    config = SegmenterConfig(channels=(4, 8), strides=(2,), num_res_units=0, steps=3, batch_size=4, seed=3)
    first, _ = train_segmenter(*data, config, CPU)
    second, _ = train_segmenter(*data, config, CPU)
    other, _ = train_segmenter(*data, SegmenterConfig(**{**config.to_json(), "channels": (4, 8), "strides": (2,),
                                                          "seed": 4}), CPU)
    first_state, second_state = first.network.state_dict(), second.network.state_dict()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert not all(torch.equal(first_state[k], other.network.state_dict()[k]) for k in first_state)


def test_the_cache_trains_once_per_dataset_version_and_settings(tmp_path, monkeypatch):
    store = open_store((tmp_path / "store").as_uri())
    config = SegmenterConfig(channels=(4, 8), strides=(2,), num_res_units=0, steps=3, batch_size=4)
    calls = {"train": 0, "pairs": 0}
    real_train = segmentation.train_segmenter

    def counting_train(*args, **kwargs):
        calls["train"] += 1
        return real_train(*args, **kwargs)

    def training_pairs():
        calls["pairs"] += 1
        return pairs(8, 8)

    monkeypatch.setattr(segmentation, "train_segmenter", counting_train)
    first = cached_segmenter(store, "lidc:1", config, training_pairs, CPU)
    second = cached_segmenter(store, "lidc:1", config, training_pairs, CPU)
    assert calls == {"train": 1, "pairs": 1}
    assert first.reference == second.reference == "ctseg2d-lidc-1:1" == find_segmenter(store, "ctseg2d-lidc-1",
                                                                                      config, "lidc:1")
    assert first.weights_sha256 == second.weights_sha256
    state = second.network.state_dict()
    assert all(torch.equal(tensor, state[key]) for key, tensor in first.network.state_dict().items())
    cached_segmenter(store, "lidc:2", config, training_pairs, CPU)  # another dataset version
    cached_segmenter(store, "lidc:1", SegmenterConfig(**{**config.to_json(), "channels": (4, 8), "strides": (2,),
                                                          "steps": 4}), training_pairs, CPU)  # other settings
    assert calls == {"train": 3, "pairs": 3}
    assert segmenter_name("lidc", "2", 3) == "ctseg3d-lidc-2"
    assert segmenter_name("a" * 64, "1", 2).startswith("ctseg2d-")
    listed = model_message(Registry(store, "models", "model"), "ctseg2d-lidc-1", "1")
    assert listed.family == "segmenter" and listed.spatial_dims == 2
    store.publish("models/gan/1", {"config.json": b'{"family": "dcgan"}', "weights.safetensors": b""}, {})
    with pytest.raises(InvalidArgument, match="gan:1 is a dcgan model, not a nodule segmenter"):
        load_segmenter(store, "gan", CPU)


def test_3d_segmenter_trains_and_predicts():
    masks = np.zeros((4, 1, 8, 8, 8), np.uint8)
    masks[:, :, 2:5, 2:5, 2:5] = 1
    config = SegmenterConfig(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=0, steps=2, batch_size=2)
    trained, _ = train_segmenter(painted(masks, 9), masks, config, CPU)
    assert trained.predict(painted(masks, 10)).shape == masks.shape


def test_bad_inputs_are_reported():
    with pytest.raises(InvalidArgument, match="strides"):
        SegmenterConfig(channels=(4, 8), strides=(2, 2))
    with pytest.raises(InvalidArgument, match="loss"):
        SegmenterConfig(loss="bce")
    images, masks = pairs(4, 11)
    with pytest.raises(MetricError, match="not a multiple of 4"):
        train_segmenter(images[..., :30, :30], masks[..., :30, :30], TINY, CPU)
    with pytest.raises(MetricError, match="only 0 and 1"):
        train_segmenter(images, masks * 2, TINY, CPU)
    with pytest.raises(MetricError, match="do not match"):
        train_segmenter(images, masks[:3], TINY, CPU)


def test_segmentation_utility_prefers_good_synthetic_pairs_over_none_and_says_why_there_is_no_p():
    """Two real training pairs are too few; 24 synthetic pairs drawn where they
    were asked for help, and pairs with the nodule drawn elsewhere hurt."""
    train, test = pairs(2, 12), pairs(12, 13)
    config = SegmenterConfig(channels=(8, 16), strides=(2,), num_res_units=0, steps=60, batch_size=8, lr=1e-2)
    good = pairs(24, 14)
    result = segmentation_utility(train, test, [good], repeats=2, config=config, device=CPU, seed=1)
    assert len(result.dice["real"]) == len(result.dice["augmented"]) == 2
    assert (result.gains() > 0).all(), result.dice
    assert result.p_value is None and "2 repeat(s) are too few" in result.p_note and "0.5" in result.p_note
    assert result.details()["gain"] == pytest.approx(result.gains().mean())
    assert "p_augmentation" not in result.details()

    centres, radii = random_discs(24, 15, x_range=(7, 10))
    wrong = (painted(disc_masks([[(y, x + 16) for y, x in item] for item in centres], radii), 16),
             disc_masks(centres, radii))
    hurt = segmentation_utility(train, test, [wrong], repeats=1, config=config, device=CPU, seed=1)
    assert hurt.dice["augmented"][0] < hurt.dice["real"][0]
    assert hurt.dice["real"][0] == result.dice["real"][0]  # the same seed trains the same real-only segmenter


def test_the_wilcoxon_test_is_reported_only_when_it_can_be_significant():
    treated, baseline = [0.9, 0.8, 0.85, 0.7, 0.95, 0.91], [0.8, 0.75, 0.8, 0.72, 0.9, 0.6]
    p, note = wilcoxon_when_meaningful(treated, baseline)
    assert p == paired_wilcoxon(treated, baseline) == stats.wilcoxon(treated, baseline).pvalue and note == ""
    p, note = wilcoxon_when_meaningful(treated[:5], baseline[:5])
    assert p is None and "0.0625" in note and "at least 6 repeats" in note
