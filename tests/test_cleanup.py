"""Mask clean-up of paper 002 (k-means snapping, small-region removal) on real UHCS masks."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_microsynth.core.cleanup import kmeans_snap, remove_small_regions
from napari_microsynth.core.fractions import mask_fractions
from napari_microsynth.core.schema import PhaseSchema

UHCS = PhaseSchema.bundled("uhcs")
# matrix and network specks < 200 px go (paper 002), spheroidite particles are all small and stay,
# widmanstaetten plates are kept from 20 px on
UHCS_MIN = [200, 200, 0, 20]


@pytest.fixture(scope="module")
def masks(read_uhcs):
    """Real 484 x 645 masks by name (uint8; uhcs0477 holds all four phases in quantity)."""
    samples = read_uhcs(3)
    return {s.name: s.mask for s in samples}


def add_islands(mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Square specks of 1-16 px of a wrong phase, deep inside matrix and network regions."""
    rng = np.random.default_rng(seed)
    noisy = mask.copy()
    where = np.zeros(mask.shape, dtype=bool)
    wrong = {0: (1, 3), 1: (0, 3)}  # spheroidite is exempt from removal, so no spheroidite specks
    for inside, choices in wrong.items():
        depth = ndimage.distance_transform_edt(mask == inside)
        ys, xs = np.nonzero(depth[::12, ::12] > 8)
        for y, x in zip(ys * 12, xs * 12):
            side = int(rng.integers(1, 5))
            noisy[y:y + side, x:x + side] = rng.choice(choices)
            where[y:y + side, x:x + side] = True
    return noisy, where


def large_region_pixels(mask: np.ndarray, min_size) -> np.ndarray:
    keep = np.zeros(mask.shape, dtype=bool)
    for c, size in enumerate(min_size):
        labels, _ = ndimage.label(mask == c, structure=np.ones((3, 3)))
        big = np.bincount(labels.ravel()) >= size
        big[0] = False
        keep |= big[labels]
    return keep


@pytest.mark.parametrize("name", ["uhcs0007", "uhcs0477"])
def test_islands_on_a_real_mask_are_filled_with_the_surrounding_phase(masks, name):
    mask = masks[name]
    noisy, islands = add_islands(mask, seed=3)
    assert islands.sum() > 1500 and np.abs(mask_fractions(noisy, UHCS) - mask_fractions(mask, UHCS)).max() > 0.003

    cleaned = remove_small_regions(noisy, UHCS, min_size=UHCS_MIN)

    assert cleaned.dtype == mask.dtype and cleaned.shape == mask.shape
    assert np.array_equal(cleaned[islands], mask[islands])
    large = large_region_pixels(mask, UHCS_MIN)
    assert large.mean() > 0.98
    assert np.array_equal(cleaned[large], mask[large])
    # the islands leave no trace: same result as cleaning the original mask
    assert np.array_equal(cleaned, remove_small_regions(mask, UHCS, min_size=UHCS_MIN))
    assert np.abs(mask_fractions(cleaned, UHCS) - mask_fractions(mask, UHCS)).max() < 0.002
    assert np.array_equal(cleaned[mask == 2], mask[mask == 2])  # every spheroidite particle survives


def test_the_paper_threshold_for_every_class_erases_uhcs_spheroidite(masks):
    mask = masks["uhcs0007"]
    assert mask_fractions(mask, UHCS)[2] > 0.05
    cleaned = remove_small_regions(mask, UHCS)  # 200 px for every class, as in paper 002
    assert mask_fractions(cleaned, UHCS)[2] == 0.0
    assert np.array_equal(cleaned[mask == 1], mask[mask == 1])  # the cementite network is all large regions


def test_eight_connectivity_keeps_a_diagonal_strand():
    mask = np.zeros((12, 12), dtype=np.uint8)
    for k in range(6):
        mask[3 + k, 2 + k] = 1  # a 6-pixel strand of cementite touching at corners only
    assert np.array_equal(remove_small_regions(mask, UHCS, min_size=4, connectivity=8), mask)
    assert not remove_small_regions(mask, UHCS, min_size=4, connectivity=4).any()


def test_real_matrix_breaks_into_more_specks_with_four_connectivity(masks):
    mask = masks["uhcs0477"]
    min_size = [200, 200, 0, 0]
    changed8 = np.count_nonzero(remove_small_regions(mask, UHCS, min_size, connectivity=8) != mask)
    changed4 = np.count_nonzero(remove_small_regions(mask, UHCS, min_size, connectivity=4) != mask)
    assert 0 < changed8 < changed4


def test_ignore_pixels_are_untouched_and_never_fill(masks):
    schema = PhaseSchema.from_dict({**UHCS.to_dict(), "ignore_id": 255})
    mask = masks["uhcs0007"].astype(np.uint8)
    mask[:40] = 255  # an unlabelled band, e.g. the micrograph's info bar
    depth = ndimage.distance_transform_edt(mask == 0)
    y, x = [int(v[0]) for v in np.nonzero(depth[40:] > 6)]
    y += 40
    mask[y - 1:y + 2, x - 1:x + 2] = 3  # a 9-px widmanstaetten speck in the matrix
    mask[41, :] = np.where(mask[41, :] == 0, 1, mask[41, :])  # a thin network line along the band (big region)

    cleaned = remove_small_regions(mask, schema, min_size=UHCS_MIN)

    assert cleaned.dtype == np.uint8
    assert np.all(cleaned[:40] == 255) and not np.any(cleaned[40:] == 255)
    assert np.all(cleaned[y - 1:y + 2, x - 1:x + 2] == 0)


def test_a_tile_smaller_than_the_threshold_comes_back_unchanged(masks):
    tile = masks["uhcs0477"][100:112, 200:212]  # 144 px: every region is below 200 px
    assert len(np.unique(tile)) > 1
    cleaned = remove_small_regions(tile, UHCS, min_size=200)
    assert np.array_equal(cleaned, tile) and cleaned is not tile


def test_input_mask_is_not_modified(masks):
    noisy, _ = add_islands(masks["uhcs0007"], seed=5)
    before = noisy.copy()
    remove_small_regions(noisy, UHCS, min_size=UHCS_MIN)
    assert np.array_equal(noisy, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask": np.zeros((4, 4, 3), np.uint8)}, "2-D"),
        ({"mask": np.zeros((4, 4), np.float32)}, "integer class ids"),
        ({"mask": np.full((4, 4), 7, np.uint8)}, r"values \[7\]"),
        ({"min_size": -1}, ">= 0"),
        ({"min_size": [200, 200]}, "one per class"),
        ({"min_size": 2.5}, "whole pixel counts"),
        ({"connectivity": 6}, "connectivity must be 4 or 8"),
        ({"schema": "uhcs"}, "PhaseSchema"),
    ],
)
def test_remove_small_regions_rejects_bad_input(kwargs, message):
    args = {"mask": np.zeros((4, 4), np.uint8), "schema": UHCS, **kwargs}
    with pytest.raises(ValueError, match=message):
        remove_small_regions(**args)


# ---------------------------------------------------------------------- k-means snapping
def colour_mask(mask: np.ndarray, sigma: float, seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """RGB rendering of a class map with the schema colours (optionally washed out), plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    rgb = UHCS.colors[mask].astype(np.float64) * scale + shift
    return np.clip(rgb + rng.normal(0.0, sigma, rgb.shape), 0, 255)


def test_noisy_colour_mask_snaps_back_to_the_class_map(masks):
    mask = masks["uhcs0477"]
    snapped = kmeans_snap(np.round(colour_mask(mask, 10, seed=1)).astype(np.uint8), UHCS)
    assert snapped.dtype == np.uint8 and snapped.shape == mask.shape
    assert np.array_equal(snapped, mask)
    noisier = colour_mask(mask, 20, seed=2) / 255.0  # float in [0, 1]
    assert np.mean(kmeans_snap(noisier, UHCS) == mask) > 0.995


def test_kmeans_follows_washed_out_colours_that_a_colour_lookup_misreads(masks):
    mask = masks["uhcs0007"]
    rgb = colour_mask(mask, 15, seed=3, scale=0.6, shift=60.0)
    nearest = np.argmin(((rgb[..., None, :] - UHCS.colors.astype(np.float64)) ** 2).sum(-1), axis=-1)
    assert np.mean(nearest == mask) < 0.7
    assert np.mean(kmeans_snap(rgb, UHCS) == mask) > 0.985


def test_a_phase_absent_from_the_tile_stays_absent(masks):
    mask = masks["uhcs0007"]
    tile = next(mask[y:y + 200, x:x + 200] for y in range(0, 284, 20) for x in range(0, 445, 20)
                if not np.any(mask[y:y + 200, x:x + 200] == 3) and np.any(mask[y:y + 200, x:x + 200] == 2))
    snapped = kmeans_snap(colour_mask(tile, 20, seed=4), UHCS)
    assert np.mean(snapped == tile) > 0.995
    assert np.count_nonzero(snapped == 3) < 0.001 * tile.size


def test_grey_mask_snaps_at_evenly_spaced_levels(masks):
    mask = masks["uhcs0477"]
    rng = np.random.default_rng(6)
    grey = np.clip(mask / 3.0 + rng.normal(0.0, 0.04, mask.shape), 0.0, 1.0)  # class c at c / 3
    assert np.mean(kmeans_snap(grey, UHCS) == mask) > 0.999
    grey8 = np.round(grey * 255).astype(np.uint8)[..., None]  # (H, W, 1), 0..255
    assert np.array_equal(kmeans_snap(grey8, UHCS), kmeans_snap(grey, UHCS))


def test_kmeans_snap_is_deterministic(masks):
    rgb = colour_mask(masks["uhcs0007"], 25, seed=7)
    first = kmeans_snap(rgb, UHCS, sample_size=5000, seed=1)
    assert np.array_equal(first, kmeans_snap(rgb, UHCS, sample_size=5000, seed=1))


def test_snap_then_clean_repairs_snapping_errors(masks):
    mask = masks["uhcs0477"]
    snapped = kmeans_snap(colour_mask(mask, 35, seed=8), UHCS)
    cleaned = remove_small_regions(snapped, UHCS, min_size=UHCS_MIN)
    target = remove_small_regions(mask, UHCS, min_size=UHCS_MIN)
    assert np.mean(snapped == target) < 0.97
    assert np.mean(cleaned == target) > 0.985


@pytest.mark.parametrize(
    "values, kwargs, message",
    [
        (np.zeros((4, 4, 4)), {}, r"\(H, W, 3\)"),
        (np.zeros((4,)), {}, r"\(H, W, 3\)"),
        (np.full((4, 4), -0.5), {}, r"\[-1, 1\] output"),
        (np.full((4, 4), 300.0), {}, "0..255"),
        (np.full((4, 4), np.nan), {}, "NaN"),
        (np.zeros((4, 4), bool), {}, "numbers"),
        (np.zeros((4, 4)), {"n_iter": -1}, "n_iter"),
        (np.zeros((4, 4)), {"sample_size": 0}, "sample_size"),
    ],
)
def test_kmeans_snap_rejects_bad_input(values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kmeans_snap(values, UHCS, **kwargs)
