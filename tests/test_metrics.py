"""Segmentation, boundary, fraction and image metrics against hand computations and real masks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_microsynth.core.metrics import (
    boundary_f1,
    boundary_scores,
    confusion_matrix,
    dice_per_class,
    fraction_mae,
    fraction_pearson_r2,
    fraction_r2,
    fraction_slope,
    mask_boundaries,
    mean_iou,
    missing_class_iou,
    phase_boundary_f1,
    per_class_iou,
    pixel_accuracy,
    segmentation_report,
    shannon_entropy,
    ssim,
)
from napari_microsynth.core.schema import PhaseSchema


@pytest.fixture(scope="module")
def uhcs_mask(shared_data) -> np.ndarray:
    return np.load(shared_data / "uhcs" / "masks" / "uhcs0006.npy").astype(np.int64)


@pytest.fixture(scope="module")
def uhcs_image(shared_data) -> np.ndarray:
    return np.asarray(Image.open(shared_data / "uhcs" / "images" / "uhcs0006.tif"))


def test_confusion_matrix_and_scores_hand_case():
    y_true = np.array([[0, 0, 1], [1, 2, 255]])
    y_pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(y_true, y_pred, 3, ignore_id=255)  # the 255 pixel is skipped
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    # IoU: class 0: 1 / (1 + 0 + 1) = 1/2; class 1: 2 / (2 + 2 + 0) = 1/2; class 2: 0 / (0 + 0 + 1) = 0
    np.testing.assert_allclose(per_class_iou(cm), [0.5, 0.5, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)
    # Dice: 2*1 / (2+1) = 2/3; 2*2 / (4+2) = 2/3; 0
    np.testing.assert_allclose(dice_per_class(cm), [2 / 3, 2 / 3, 0.0])
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 1]), 3)
    iou = per_class_iou(cm)
    assert np.isnan(iou[2]) and np.isnan(dice_per_class(cm)[2])
    assert mean_iou(cm) == 1.0


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"predicted labels hold class ids \[7\]"):
        confusion_matrix(np.array([0, 1]), np.array([0, 7]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)


def test_missing_class_iou_paper_002_example():
    """Paper 002, sec. 4.3.1, Fig. 14: 6x6 mask, classes background 0, yellow 1, green 2, blue 3.

    Truth: one yellow pixel (top-right corner), one blue pixel, 34 background pixels.
    Prediction: yellow right, the blue pixel plus one wrong blue pixel, one wrong green pixel.
    Yellow IoU 1/1, blue 1/2 (TP 1, FP 1), background 32/34 (TP 32, FN 2); green is not in the truth
    and is left out: (1 + 1/2 + 32/34) / 3.
    """
    truth = np.zeros((6, 6), dtype=int)
    truth[0, 5] = 1
    truth[2, 2] = 3
    pred = truth.copy()
    pred[2, 3] = 3
    pred[4, 1] = 2
    expected = (1 + 1 / 2 + 32 / 34) / 3
    assert missing_class_iou(confusion_matrix(truth, pred, 4)) == pytest.approx(expected)
    # plain mIoU counts green's IoU of 0 as a fourth class
    assert mean_iou(confusion_matrix(truth, pred, 4)) == pytest.approx((1 + 1 / 2 + 32 / 34 + 0) / 4)


def test_missing_class_iou_ignores_spurious_class_on_real_mask(shared_data):
    """uhcs0596 has no cementite network (1) nor Widmanstaetten laths (3); a spurious lath blob in the
    prediction drags mIoU down by a whole class but mcIoU only by the few pixels it wrongly covers."""
    truth = np.load(shared_data / "uhcs" / "masks" / "uhcs0596.npy").astype(np.int64)
    pred = truth.copy()
    pred[100:110, 100:110] = 3
    report = segmentation_report(truth, pred, PhaseSchema.bundled("uhcs"))
    assert report["mciou"] > 0.99
    assert report["miou"] < 0.67  # (~1 + ~1 + 0) / 3
    assert np.isnan(report["per_class_iou"]["cementite network"])
    assert report["per_class_iou"]["widmanstaetten"] == 0.0


def test_segmentation_report_of_real_mask_with_itself(uhcs_mask):
    report = segmentation_report(uhcs_mask, uhcs_mask, PhaseSchema.bundled("uhcs"))
    assert report["miou"] == 1.0 and report["accuracy"] == 1.0 and report["mciou"] == 1.0
    assert report["dice"] == {name: 1.0 for name in PhaseSchema.bundled("uhcs").names}


def test_mask_boundaries_marks_both_sides_of_an_interface():
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    expected = np.array(
        [
            [0, 1, 1, 0],  # vertical interface between columns 1 and 2
            [1, 1, 1, 1],  # row 1 touches row 2 (class 2) everywhere
            [1, 1, 1, 1],
        ],
        dtype=bool,
    )
    assert np.array_equal(mask_boundaries(labels), expected)


def test_boundary_f1_hand_cases():
    left_right = np.zeros((6, 6), dtype=int)
    left_right[:, 3:] = 1  # boundary columns 2 and 3 (12 pixels)
    shifted = np.zeros((6, 6), dtype=int)
    shifted[:, 4:] = 1  # boundary columns 3 and 4
    true_b, pred_b = mask_boundaries(left_right), mask_boundaries(shifted)
    # tolerance 0: only column 3 is shared: precision 6/12, recall 6/12, F1 1/2
    assert boundary_scores(true_b, pred_b, tolerance=0) == pytest.approx((0.5, 0.5, 0.5))
    assert boundary_f1(true_b, pred_b, tolerance=1) == 1.0
    # one true pixel, one predicted pixel diagonally next to it: distance sqrt(2) ~ 1.41
    a = np.zeros((3, 3), dtype=bool)
    b = np.zeros((3, 3), dtype=bool)
    a[0, 0], b[1, 1] = True, True
    assert boundary_f1(a, b, tolerance=1) == 0.0
    assert boundary_f1(a, b, tolerance=1.5) == 1.0
    # precision 1 (the one predicted pixel is right), recall 1/2: F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    two = a.copy()
    two[2, 2] = True
    assert boundary_scores(two, a, tolerance=0) == pytest.approx((1.0, 0.5, 2 / 3))
    assert boundary_f1(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert boundary_f1(a, np.zeros((3, 3), bool)) == 0.0


def test_boundary_f1_rejects_label_maps():
    with pytest.raises(ValueError, match="mask_boundaries"):
        boundary_f1(np.array([[0, 2], [1, 1]]), np.zeros((2, 2), bool))


def test_boundary_f1_on_real_mask(uhcs_mask):
    boundaries = mask_boundaries(uhcs_mask)
    assert boundary_f1(boundaries, boundaries, tolerance=0) == 1.0
    # the mask on a blank canvas, and the same mask moved right by one pixel (nothing leaves the frame)
    h, w = uhcs_mask.shape
    placed, moved = np.zeros((h + 4, w + 4), np.int64), np.zeros((h + 4, w + 4), np.int64)
    placed[2 : h + 2, 2 : w + 2] = uhcs_mask
    moved[2 : h + 2, 3 : w + 3] = uhcs_mask
    assert boundary_f1(mask_boundaries(placed), mask_boundaries(moved), tolerance=2) == 1.0
    assert boundary_f1(mask_boundaries(placed), mask_boundaries(moved), tolerance=0) < 0.9
    assert mean_iou(confusion_matrix(uhcs_mask, uhcs_mask, 4)) == 1.0


def test_fraction_mae_and_r2_hand_case():
    target = np.array([[0.2, 0.5], [0.4, 0.5], [0.6, 0.5]])
    achieved = np.array([[0.25, 0.4], [0.35, 0.5], [0.6, 0.7]])
    # class 0: |errors| 0.05, 0.05, 0 -> MAE 1/30; SS_res 0.005, SS_tot 0.08 -> R2 = 1 - 0.0625
    # class 1: |errors| 0.1, 0, 0.2 -> MAE 0.1; target constant -> R2 nan
    np.testing.assert_allclose(fraction_mae(target, achieved), [0.1 / 3, 0.1])
    r2 = fraction_r2(target, achieved)
    assert r2[0] == pytest.approx(0.9375) and np.isnan(r2[1])
    assert fraction_r2(target[:, :1], target[:, :1])[0] == 1.0
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        fraction_mae(target, achieved[:2])


def test_fraction_slope_and_pearson_r2_tell_a_damped_response_from_a_perfect_one():
    target = np.random.default_rng(0).dirichlet([2, 2, 2], size=50)
    perfect = [fraction_slope(target, target), fraction_pearson_r2(target, target), fraction_r2(target, target)]
    np.testing.assert_allclose(perfect, 1.0)
    # achieved fractions move half as much as asked: perfectly correlated, slope 0.5, far from y = x
    damped = 0.5 * target + 0.5 / 3
    np.testing.assert_allclose(fraction_slope(target, damped), 0.5)
    np.testing.assert_allclose(fraction_pearson_r2(target, damped), 1.0)
    assert np.all(fraction_r2(target, damped) < 0.8)
    noisy = target + np.random.default_rng(1).normal(0, 0.05, target.shape)
    assert np.all(fraction_pearson_r2(target, noisy) >= fraction_r2(target, noisy))
    constant = np.tile([0.5, 0.3, 0.2], (50, 1))
    assert np.isnan(fraction_slope(constant, target)).all() and np.isnan(fraction_pearson_r2(constant, target)).all()


def test_shannon_entropy_hand_cases_and_real_image(uhcs_image):
    from skimage.measure import shannon_entropy as skimage_entropy

    assert shannon_entropy(np.full((4, 4), 0.3)) == 0.0
    assert shannon_entropy(np.array([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(1.0)  # two equal halves: 1 bit
    assert shannon_entropy(np.array([[0, 1], [2, 3]], dtype=np.uint8)) == pytest.approx(2.0)
    value = shannon_entropy(uhcs_image)
    assert value == pytest.approx(skimage_entropy(uhcs_image))
    assert shannon_entropy(uhcs_image.astype(np.float32) / 255.0) == pytest.approx(value)
    assert 4.0 < value < 8.0  # a textured 8-bit SEM micrograph


def test_ssim_hand_case_and_real_image(uhcs_image):
    # constant images: local means 0.5 and 0.25, no variance, so
    # SSIM = (2 * 0.5 * 0.25 + C1) / (0.5^2 + 0.25^2 + C1) with C1 = (0.01 * 1)^2
    c1 = 0.01**2
    assert ssim(np.full((32, 32), 0.5), np.full((32, 32), 0.25)) == pytest.approx((0.25 + c1) / (0.3125 + c1))
    image = uhcs_image.astype(np.float64) / 255.0
    assert ssim(image, image) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    slightly = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
    strongly = np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1)
    assert 1.0 > ssim(image, slightly) > ssim(image, strongly)
    assert ssim(uhcs_image, uhcs_image, data_range=255) == pytest.approx(1.0)


def test_phase_boundary_f1_scores_interfaces_and_skips_unlabelled_areas(uhcs_mask):
    """A phase map one pixel off keeps boundary F1 at 1 within 2 px; an unlabelled band in the truth adds
    no boundaries, whatever the prediction holds there."""
    assert phase_boundary_f1(uhcs_mask, np.roll(uhcs_mask, 1, axis=1)) > 0.99  # the wrapped edge column is off
    truth = uhcs_mask.astype(np.int64)
    truth[:, :40] = 255
    noisy = uhcs_mask.astype(np.int64).copy()
    noisy[:, :40] = np.random.default_rng(0).integers(0, 4, (noisy.shape[0], 40))
    assert phase_boundary_f1(truth, noisy, ignore_id=255) == 1.0
    assert phase_boundary_f1(truth, noisy) < 0.9
