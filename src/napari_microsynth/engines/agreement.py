"""The agreement curation rule: keep only generated pairs whose mask a segmenter trained on real data agrees
with (issue 11; paper 002 uses a real-data segmenter to judge synthetic masks the same way).

For every pending synthetic pair of a store, the segmenter segments the pair's image and the mIoU between
that phase map and the pair's mask is its agreement (:func:`~.generator_evaluation.agreement_miou`, classes
in neither map left out). Pairs at or above the threshold are accepted, the others rejected; the rule and
threshold are recorded with each status (:meth:`DatasetStore.status_rule`) and so reach the dataset card of
an export. A pair stored at a coarser pixel size than the segmenter's training micrographs is enlarged to
that scale before segmenting (the generator's downscale), so the segmenter sees features at the size it
learned them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.curation import set_by_score
from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.store import DatasetStore
from .generator_evaluation import agreement_miou


@dataclass
class AgreementCuration:
    """Agreement mIoU per judged pair (store index -> score) and the indices the rule accepted / rejected."""

    scores: dict[int, float]
    accepted: list[int]
    rejected: list[int]


def _downscale(pair_pixel_size: float | None, segmenter) -> int:
    """How many times coarser the pair's pixels are than the segmenter's training pixels (1 if unknown)."""
    sizes = ((segmenter.training_record or {}).get("image_statistics") or {}).get("pixel_size_um")
    if not pair_pixel_size or not sizes:
        return 1
    return max(1, int(round(float(pair_pixel_size) / float(np.mean(sizes)))))


def accept_agreeing(
    store: DatasetStore,
    segmenter,
    threshold: float,
    segmenter_name: str = "",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> AgreementCuration:
    """Judge the pending synthetic pairs of ``store`` by their agreement with ``segmenter`` (mIoU in
    [0, 1]); accept those with at least ``threshold``, reject the rest."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"the agreement threshold is an mIoU in [0, 1], got {threshold}")
    if list(segmenter.schema.names) != list(store.schema.names):
        raise ValueError(f"the segmenter segments {', '.join(segmenter.schema.names)}, but the store's pairs have "
                         f"the phases {', '.join(store.schema.names)}")
    statuses = store.statuses()
    pending = [i for i in range(len(store)) if statuses[i] == "pending" and store.provenance(i).is_synthetic]
    scores: dict[int, float] = {}
    for k, index in enumerate(pending):
        check_stop(should_stop)
        pair = store[index]
        score = agreement_miou(segmenter, [pair], _downscale(pair.pixel_size_um, segmenter))[0]
        scores[index] = float(score)
        progress(k + 1, len(pending), f"agreement of pair {index}: {score:.2f}")
    name = segmenter_name or getattr(segmenter, "arch", "segmenter")
    accepted, rejected = set_by_score(store, scores, float(threshold), f"agreement mIoU with {name}")
    return AgreementCuration(scores, accepted, rejected)
