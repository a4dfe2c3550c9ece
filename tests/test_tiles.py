"""Training tiles, sliding inference windows and blending them back into a full map."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.core.sample import Provenance, Sample
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.tiles import (
    WindowAccumulator,
    downscale_pair,
    sliding_window_boxes,
    tile_boxes,
    tile_samples,
)
from napari_microsynth.core.datasets import load_split


def test_tile_boxes_are_full_non_overlapping_tiles():
    # 703 x 1024 (a MetalDAM mask): 2 rows x 4 columns of 256-tiles; the 191-row remainder is dropped
    boxes = tile_boxes((703, 1024), 256)
    assert len(boxes) == 8
    assert boxes[0] == (0, 0, 256, 256) and boxes[-1] == (256, 768, 512, 1024)
    assert all(y1 - y0 == 256 and x1 - x0 == 256 for y0, x0, y1, x1 in boxes)
    assert tile_boxes((100, 100), 256) == []
    assert tile_boxes((10, 9), (5, 3)) == [(y, x, y + 5, x + 3) for y in (0, 5) for x in (0, 3, 6)]


def test_sliding_windows_hand_case():
    # length 600, tile 256, 50 % overlap: stride 128, starts 0, 128, 256 and a last one flush at 344
    boxes = sliding_window_boxes((600, 256), 256, 0.5)
    assert boxes == [(0, 0, 256, 256), (128, 0, 384, 256), (256, 0, 512, 256), (344, 0, 600, 256)]
    assert sliding_window_boxes((512, 512), 256, 0.0) == tile_boxes((512, 512), 256)


@pytest.mark.parametrize("shape", [(703, 1024), (484, 645), (256, 256), (257, 300)])
def test_sliding_windows_cover_every_pixel(shape):
    cover = np.zeros(shape, dtype=int)
    boxes = sliding_window_boxes(shape, 256, 0.5)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (256, 256)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert max(b[2] for b in boxes) == shape[0] and max(b[3] for b in boxes) == shape[1]


def test_image_smaller_than_tile_gives_one_clipped_window():
    assert sliding_window_boxes((100, 300), 256, 0.5) == [(0, 0, 100, 256), (0, 44, 100, 300)]
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_boxes((300, 300), 256, 1.0)


def test_accumulator_averages_overlaps_hand_case():
    acc = WindowAccumulator((2, 4), n_channels=2)
    acc.add((0, 0, 2, 3), np.stack([np.full((2, 3), 1.0), np.full((2, 3), 0.0)]))
    acc.add((0, 1, 2, 4), np.stack([np.full((2, 3), 3.0), np.full((2, 3), 1.0)]))
    out = acc.result()
    # columns 1-2 are covered twice: (1 + 3) / 2 = 2 and (0 + 1) / 2 = 0.5
    np.testing.assert_allclose(out[0], [[1, 2, 2, 3]] * 2)
    np.testing.assert_allclose(out[1], [[0, 0.5, 0.5, 1]] * 2)


def test_accumulator_weighted_mean_and_errors():
    acc = WindowAccumulator((1, 2), n_channels=1)
    acc.add((0, 0, 1, 2), np.array([[[0.0, 0.0]]]), weight=np.array([[1.0, 3.0]]))
    acc.add((0, 0, 1, 2), np.array([[[1.0, 1.0]]]), weight=1.0)
    np.testing.assert_allclose(acc.result(), [[[0.5, 0.25]]])  # (0*1 + 1*1)/2 and (0*3 + 1*1)/4
    partial = WindowAccumulator((2, 2), n_channels=1)
    partial.add((0, 0, 1, 2), np.ones((1, 1, 2)))
    with pytest.raises(ValueError, match="2 pixels were not covered"):
        partial.result()
    with pytest.raises(ValueError, match="shape"):
        partial.add((0, 0, 2, 2), np.ones((1, 1, 2)))
    with pytest.raises(ValueError, match="inside the image"):
        partial.add((0, 0, 3, 2), np.ones((1, 3, 2)))


def test_sliding_window_roundtrip_reconstructs_real_probabilities(shared_data):
    """Cutting a one-hot UHCS mask into 50 %-overlap windows and blending them gives the mask back."""
    mask = np.load(shared_data / "uhcs" / "masks" / "uhcs0006.npy").astype(np.int64)
    onehot = np.eye(4, dtype=np.float32)[mask].transpose(2, 0, 1)
    acc = WindowAccumulator(mask.shape, n_channels=4)
    for y0, x0, y1, x1 in sliding_window_boxes(mask.shape, 256, 0.5):
        acc.add((y0, x0, y1, x1), onehot[:, y0:y1, x0:x1])
    out = acc.result()
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)
    assert np.array_equal(out.argmax(axis=0), mask)


def test_tile_samples_record_crop_boxes(shared_data):
    image = np.asarray(Image.open(shared_data / "uhcs" / "images" / "uhcs0006.tif"), dtype=np.float32) / 255.0
    mask = np.load(shared_data / "uhcs" / "masks" / "uhcs0006.npy").astype(np.int64)
    schema = PhaseSchema.bundled("uhcs")
    sample = Sample(image, schema, mask, name="uhcs0006", provenance=Provenance(source="uhcs0006.tif"))
    tiles = tile_samples(sample, 256)
    assert len(tiles) == 2  # 484 x 645: one row of two full tiles
    second = tiles[1]
    assert second.provenance.crop_box == (0, 256, 256, 512)
    assert second.provenance.source == "uhcs0006.tif"
    assert np.array_equal(second.mask, mask[0:256, 256:512])
    assert np.array_equal(second.image, image[0:256, 256:512])


def _majority_ties_to_lower_id(mask: np.ndarray, f: int, n: int) -> np.ndarray:
    """The former mask reduction: majority class of each f x f block, ties to the lower class id."""
    h, w = mask.shape
    blocks = mask.reshape(h // f, f, w // f, f).transpose(0, 2, 1, 3).reshape(h // f, w // f, f * f)
    return (blocks[..., None] == np.arange(n)).sum(axis=2).argmax(axis=-1)


@pytest.mark.parametrize("dataset, split", [
    pytest.param("metaldam", "train", marks=pytest.mark.real_data("metaldam")),
    ("uhcs", "train16A"),
])
def test_downscaled_masks_keep_the_phase_fractions_of_real_tiles(shared_data, dataset, split):
    """256 px training tiles halved like a generator's: a majority vote shifted whole points of phase area
    (MetalDAM matrix +2.3, UHCS spheroidite -3.3); the share draw stays within 0.3 points per class."""
    samples = load_split(shared_data / dataset, split)
    n = samples[0].schema.n_classes
    original, majority, drawn = [], [], []
    for sample in samples:
        for y0, x0, y1, x1 in tile_boxes(sample.shape, 256):
            tile = sample.crop((y0, x0, y1, x1))
            original.append(np.bincount(tile.mask.ravel(), minlength=n) / tile.mask.size)
            old = _majority_ties_to_lower_id(tile.mask, 2, n)
            majority.append(np.bincount(old.ravel(), minlength=n) / old.size)
            image, new = downscale_pair(tile.image, tile.mask, 2, tile.schema)
            drawn.append(np.bincount(new.ravel(), minlength=n) / new.size)
            assert image.shape == new.shape == (128, 128) and set(np.unique(new)) <= set(np.unique(tile.mask))
    shift_old = 100 * (np.mean(majority, axis=0) - np.mean(original, axis=0))
    shift_new = 100 * (np.mean(drawn, axis=0) - np.mean(original, axis=0))
    assert np.abs(shift_old).max() > 1.5, shift_old
    assert np.abs(shift_new).max() < 0.3, shift_new
    np.testing.assert_array_equal(downscale_pair(tile.image, tile.mask, 2, tile.schema)[1], new)  # repeatable
