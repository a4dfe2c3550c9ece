"""Segmentation, boundary, fraction and image metrics (numpy in, numbers out).

>>> import numpy as np
>>> cm = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), n_classes=2)
>>> cm
array([[1, 1],
       [0, 2]])
>>> per_class_iou(cm)
array([0.5       , 0.66666667])
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from .schema import PhaseSchema


def confusion_matrix(y_true, y_pred, n_classes: int, ignore_id: int | None = None) -> np.ndarray:
    """``(n, n)`` pixel counts, rows = true class, columns = predicted class.

    Pixels whose true label is ``ignore_id`` are skipped. Any other label outside ``0..n-1`` raises.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"true and predicted label maps differ in shape: {y_true.shape} vs {y_pred.shape}")
    for name, arr in (("true", y_true), ("predicted", y_pred)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} labels must be integers, got dtype {arr.dtype}")
    t = y_true.ravel().astype(np.int64)
    p = y_pred.ravel().astype(np.int64)
    if ignore_id is not None:
        keep = t != ignore_id
        t, p = t[keep], p[keep]
    for name, arr in (("true", t), ("predicted", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            bad = np.unique(arr[(arr < 0) | (arr >= n_classes)])
            raise ValueError(f"{name} labels hold class ids {bad.tolist()} outside 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """Intersection over union ``TP / (TP + FP + FN)`` per class; nan for a class absent from both maps."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    return _safe_ratio(tp, cm.sum(axis=0) + cm.sum(axis=1) - tp)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of :func:`per_class_iou` over classes present in the truth or the prediction."""
    return _nanmean(per_class_iou(cm))


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """Dice ``2 TP / (2 TP + FP + FN)`` per class; nan for a class absent from both maps."""
    cm = np.asarray(cm, dtype=np.float64)
    return _safe_ratio(2.0 * np.diag(cm), cm.sum(axis=0) + cm.sum(axis=1))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Share of counted pixels whose predicted class is right (nan when nothing was counted)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def missing_class_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes that occur in the ground truth only (paper 002, sec. 4.3.1), from a
    :func:`confusion_matrix` (rows = truth).

    A class that is predicted but absent from the truth is left out of the average; its wrongly
    predicted pixels still lower the IoU of the true classes they belong to (as false negatives).
    For the per-image variant pass one image's confusion matrix.
    """
    present = np.asarray(cm).sum(axis=1) > 0
    return _nanmean(per_class_iou(cm)[present]) if present.any() else float("nan")


def mask_boundaries(label_map: np.ndarray) -> np.ndarray:
    """Boolean map of pixels that have a 4-neighbour with a different label (both sides of an interface
    are marked; the image border is not a boundary)."""
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {labels.shape}")
    edges = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edges[1:, :] |= vertical
    edges[:-1, :] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    return edges


def _as_boundary(name: str, arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} boundary map must be 2-D, got shape {arr.shape}")
    if arr.dtype != bool:
        values = np.unique(arr)
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(
                f"{name} boundary map must be boolean (0/1), got values {values[:6].tolist()}...; "
                "use mask_boundaries(label_map) to turn a label map into boundaries"
            )
        arr = arr.astype(bool)
    return arr


def boundary_scores(true_boundary, pred_boundary, tolerance: float = 2) -> tuple[float, float, float]:
    """Boundary ``(precision, recall, f1)`` with a pixel distance tolerance.

    Precision is the share of predicted boundary pixels within ``tolerance`` (Euclidean pixels) of a
    true boundary pixel, recall the share of true boundary pixels within ``tolerance`` of a predicted
    one. Two empty maps agree perfectly (1, 1, 1); one empty map scores 0.
    """
    true_b = _as_boundary("true", true_boundary)
    pred_b = _as_boundary("predicted", pred_boundary)
    if true_b.shape != pred_b.shape:
        raise ValueError(f"boundary maps differ in shape: {true_b.shape} vs {pred_b.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if not true_b.any() and not pred_b.any():
        return 1.0, 1.0, 1.0
    if not true_b.any() or not pred_b.any():
        return 0.0, 0.0, 0.0
    dist_to_true = ndimage.distance_transform_edt(~true_b)
    dist_to_pred = ndimage.distance_transform_edt(~pred_b)
    precision = float(np.mean(dist_to_true[pred_b] <= tolerance))
    recall = float(np.mean(dist_to_pred[true_b] <= tolerance))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def boundary_f1(true_boundary, pred_boundary, tolerance: float = 2) -> float:
    """Boundary F1 score: harmonic mean of :func:`boundary_scores` precision and recall."""
    return boundary_scores(true_boundary, pred_boundary, tolerance)[2]


def phase_boundary_f1(y_true, y_pred, ignore_id: int | None = None, tolerance: float = 2) -> float:
    """:func:`boundary_f1` of the phase interfaces of two 2-D class maps; pixels the truth marks
    ``ignore_id`` take the truth's value in the prediction too, so unlabelled areas add no boundaries.

    >>> truth = np.zeros((6, 6), int); truth[:, 3:] = 1
    >>> phase_boundary_f1(truth, np.roll(truth, 1, axis=1), tolerance=1)
    1.0
    """
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    if ignore_id is not None:
        pred = np.where(truth == ignore_id, truth, pred)
    return boundary_f1(mask_boundaries(truth), mask_boundaries(pred), tolerance)


def _fraction_pair(target, achieved) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64)
    a = np.asarray(achieved, dtype=np.float64)
    if t.ndim != 2 or t.shape != a.shape:
        raise ValueError(
            f"target and achieved fractions must both be (N, C) of the same shape, got {t.shape} and {a.shape}"
        )
    return t, a


def fraction_mae(target, achieved) -> np.ndarray:
    """Mean absolute difference between requested and achieved fractions, per class ``(C,)``."""
    t, a = _fraction_pair(target, achieved)
    return np.abs(t - a).mean(axis=0)


def _no_spread_to_nan(values: np.ndarray, target: np.ndarray, min_spread: float) -> np.ndarray:
    values[target.std(axis=0) <= max(min_spread, 1e-12)] = np.nan  # 1e-12: rounding of a constant column
    return values


def fraction_r2(target, achieved, min_spread: float = 0.0) -> np.ndarray:
    """Coefficient of determination ``1 - SS_res / SS_tot`` of achieved vs target around the line
    ``achieved = target``, per class ``(C,)`` (stricter than the squared Pearson correlation, which
    allows any slope and offset).

    nan for a class whose targets have a standard deviation of ``min_spread`` or less (always for a
    constant target, SS_tot = 0): with almost no spread to explain, R^2 says nothing.
    """
    t, a = _fraction_pair(target, achieved)
    ss_res = ((a - t) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    return _no_spread_to_nan(1.0 - _safe_ratio(ss_res, ss_tot), t, min_spread)


def fraction_slope(target, achieved, min_spread: float = 0.0) -> np.ndarray:
    """Least-squares slope of achieved on target fractions, per class ``(C,)``: 1 when the achieved
    fractions follow the targets one to one, below 1 when they move less than asked. nan as in
    :func:`fraction_r2`.

    >>> fraction_slope([[0.2, 0.8], [0.4, 0.6]], [[0.3, 0.7], [0.4, 0.6]])
    array([0.5, 0.5])
    """
    t, a = _fraction_pair(target, achieved)
    t_c = t - t.mean(axis=0)
    slope = _safe_ratio((t_c * (a - a.mean(axis=0))).sum(axis=0), (t_c**2).sum(axis=0))
    return _no_spread_to_nan(slope, t, min_spread)


def fraction_pearson_r2(target, achieved, min_spread: float = 0.0) -> np.ndarray:
    """Squared Pearson correlation of achieved and target fractions, per class ``(C,)``: how well any
    straight line explains them (never below :func:`fraction_r2`). nan as in :func:`fraction_r2`, and
    where the achieved fractions are constant."""
    t, a = _fraction_pair(target, achieved)
    t_c, a_c = t - t.mean(axis=0), a - a.mean(axis=0)
    r = _safe_ratio((t_c * a_c).sum(axis=0), np.sqrt((t_c**2).sum(axis=0) * (a_c**2).sum(axis=0)))
    return _no_spread_to_nan(r**2, t, min_spread)


def _as_grey_levels(image, levels: int) -> np.ndarray:
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return image
    if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 1):
        raise ValueError("float images must lie in [0, 1]")
    return np.round(image * (levels - 1)).astype(np.int64)


def shannon_entropy(image, levels: int = 256) -> float:
    """Shannon entropy (bits) of the grey-level histogram.

    Integer images are used as they are; float images in [0, 1] are first quantised to ``levels``
    grey levels (256 = 8-bit), so the value matches ``skimage.measure.shannon_entropy`` of the 8-bit
    image (paper 003 compares entropy distributions of real and synthetic patches).
    """
    grey = _as_grey_levels(image, levels)
    _, counts = np.unique(grey, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def ssim(a, b, data_range: float = 1.0) -> float:
    """Mean structural similarity of two grey images (Wang et al. 2004): Gaussian window sigma 1.5,
    K1 = 0.01, K2 = 0.03, population (not sample) covariances."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D images of the same shape, got {a.shape} and {b.shape}")
    return float(
        structural_similarity(
            a, b, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03
        )
    )


def segmentation_report(y_true, y_pred, schema: PhaseSchema) -> dict:
    """Standard scores of a predicted mask against the truth, with per-class values keyed by phase name.

    Returns ``per_class_iou`` and ``dice`` (dicts name -> value, nan when a class is in neither map),
    ``miou``, ``accuracy`` and ``mciou`` (missing-class IoU, paper 002).
    """
    cm = confusion_matrix(y_true, y_pred, schema.n_classes, schema.ignore_id)
    iou = per_class_iou(cm)
    dice = dice_per_class(cm)
    return {
        "per_class_iou": {name: float(v) for name, v in zip(schema.names, iou)},
        "miou": mean_iou(cm),
        "dice": {name: float(v) for name, v in zip(schema.names, dice)},
        "accuracy": pixel_accuracy(cm),
        "mciou": missing_class_iou(cm),
    }
