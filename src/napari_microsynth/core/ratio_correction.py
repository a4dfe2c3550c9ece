"""Ratio correction: a per-class logit bias that makes a phase map's fractions follow a target ratio.

This goes beyond paper 001, whose network only takes the ratio as an input and may ignore it. Given the
logits ``z`` ``(C, P)`` of ``P`` pixels and a target ratio ``r``:

1. :func:`solve_posterior_bias` finds the bias ``b`` with ``mean_p softmax((z_p + b) / T) = r``. Among all
   posteriors whose mean is ``r``, ``q_p ∝ p_p exp(b / T)`` is the one closest (summed KL divergence)
   to the model's calibrated posteriors ``p_p``: the label-shift correction of Saerens, Latinne and
   Decaestecker (Neural Computation 14, 2002) with the priors set to hit ``r``. ``T`` is the
   temperature fitted by :func:`fit_temperature` on validation pixels.
2. :func:`refine_hard_bias` then adjusts ``b``, one class at a time, until the *argmax* map (what a
   user sees in the labels) has the fractions ``r``. From the posterior solution this is a small
   move; it leaves the labels nearly independent of ``T``, which still shapes the posteriors.

Trust ``λ`` (:func:`trusted_target`) interpolates the target between the model's own argmax
fractions (λ = 0: no bias, the uncorrected map) and the requested ratio (λ = 1). Interpolating the
fractions, not scaling the bias, makes trust mean the same thing for every model: at λ = 0.5 the map's
fractions lie halfway between the model's estimate and the expert's, whatever the logit scale.

>>> z = np.array([[2.0, 1.0, 0.5, -1.0], [0.0, 0.5, 0.4, 1.0]])   # 2 classes, 4 pixels
>>> hard_fractions(z, np.zeros(2)).tolist()
[0.75, 0.25]
>>> b = correction_bias(z, [0.25, 0.75], trust=1.0)
>>> hard_fractions(z, b).tolist()
[0.25, 0.75]
"""
from __future__ import annotations

from functools import reduce

import numpy as np

#: Target fractions are clipped to this for the posterior solve (a zero share needs an infinite bias).
MIN_FRACTION = 1e-4
#: The hard-count refinement stops when every argmax fraction is this close to its target.
HARD_TOLERANCE = 0.002
#: Largest Newton step of the posterior solve, in logits (keeps nearly empty classes from overshooting).
MAX_STEP = 2.0


def _over_classes(ufunc, z: np.ndarray) -> np.ndarray:
    """``ufunc`` folded over the class rows of ``z`` ``(C, P)`` (much faster than numpy's axis-0 reductions)."""
    return reduce(ufunc, z)


def _log_partition(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``logsumexp`` over the classes ``(P,)`` and ``softmax`` ``(C, P)`` of ``z`` ``(C, P)``."""
    top = _over_classes(np.maximum, z)
    e = np.exp(z - top)
    total = _over_classes(np.add, e)
    return top + np.log(total), e / total


def hard_fractions(logits: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Fractions of the argmax map of ``logits + bias`` (``(C, P)`` logits, ``(C,)`` bias)."""
    labels = (logits + np.asarray(bias)[:, None]).argmax(axis=0)
    return np.bincount(labels, minlength=logits.shape[0]) / labels.size


def solve_posterior_bias(logits: np.ndarray, target, temperature: float = 1.0, tol: float = 1e-5,
                         max_iter: int = 50) -> np.ndarray:
    """Bias ``b`` (logit units, mean 0) with ``mean_p softmax((z_p + b) / T) = target``.

    Newton's method with steps capped at :data:`MAX_STEP` and backtracking, on the convex dual
    ``mean_p logsumexp(z_p / T + β) - target · β`` (``b = T β``).
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    t = np.clip(np.asarray(target, dtype=np.float64), MIN_FRACTION, None)
    t /= t.sum()
    beta = np.zeros(z.shape[0])

    def dual(beta):  # the objective and the posteriors at beta
        log_partition, posteriors = _log_partition(z + beta[:, None])
        return log_partition.mean() - t @ beta, posteriors

    value, q = dual(beta)
    for _ in range(max_iter):
        mean = q.mean(axis=1)
        gradient = mean - t
        if np.abs(gradient).max() < tol:
            break
        hessian = np.diag(mean) - q @ q.T / q.shape[1] + 1e-9 * np.eye(len(t))
        step = np.linalg.solve(hessian, gradient)
        step *= min(1.0, MAX_STEP / np.abs(step).max())
        size = 1.0
        while True:
            trial_value, trial_q = dual(beta - size * step)
            if trial_value <= value - 1e-4 * size * gradient @ step or size < 1e-3:
                break
            size /= 2
        beta -= size * step
        value, q = trial_value, trial_q
    return temperature * (beta - beta.mean())


def _class_bias(shifted: np.ndarray, z_k: np.ndarray, k: int, count: int) -> float:
    """The bias of class ``k`` that makes exactly ``count`` pixels argmax to ``k``, the other classes'
    biased logits ``shifted`` fixed (``z_k``: class ``k``'s unbiased logits)."""
    others = reduce(np.maximum, (row for j, row in enumerate(shifted) if j != k))
    margin = others - z_k  # a pixel goes to k iff bias[k] > margin
    if count <= 0:
        return float(margin.min() - 1.0)
    if count >= margin.size:
        return float(margin.max() + 1.0)
    below, above = np.partition(margin, (count - 1, count))[[count - 1, count]]
    return float((below + above) / 2)


def refine_hard_bias(logits: np.ndarray, target, bias, tol: float = HARD_TOLERANCE,
                     max_sweeps: int = 20) -> np.ndarray:
    """``bias`` adjusted one class at a time (exact coordinate descent on the dual of the assignment
    problem) until every argmax fraction of ``logits + bias`` is within ``tol`` of ``target``."""
    z = np.asarray(logits)
    target = np.asarray(target, dtype=np.float64)
    counts = np.round(target * z.shape[1]).astype(np.int64)
    bias = np.array(bias, dtype=np.float64)
    shifted = z + bias[:, None].astype(z.dtype)
    for _ in range(max_sweeps):
        error = np.abs(np.bincount(shifted.argmax(axis=0), minlength=len(bias)) / z.shape[1] - target)
        if error.max() <= tol:
            break
        for k in np.argsort(-error):
            bias[k] = _class_bias(shifted, z[k], k, int(counts[k]))
            shifted[k] = z[k] + bias[k]
    return bias - bias.mean()


def trusted_target(own, target, trust: float) -> np.ndarray:
    """``(1 - trust) * own + trust * target``: the fractions the corrected map is given at ``trust``."""
    if not 0.0 <= trust <= 1.0:
        raise ValueError(f"trust must be in [0, 1], got {trust}")
    return (1.0 - trust) * np.asarray(own, dtype=np.float64) + trust * np.asarray(target, dtype=np.float64)


def correction_bias(logits: np.ndarray, target, trust: float = 1.0, temperature: float = 1.0) -> np.ndarray:
    """The per-class bias for ``logits`` ``(C, P)`` (a pixel subsample will do) at ``trust``: zero at
    trust 0, otherwise :func:`solve_posterior_bias` then :func:`refine_hard_bias` on the trusted target."""
    z = np.asarray(logits, dtype=np.float64)
    if trust == 0.0:
        return np.zeros(z.shape[0])
    own = hard_fractions(z, np.zeros(z.shape[0])) if trust < 1.0 else 0.0
    goal = trusted_target(own, target, trust)
    return refine_hard_bias(z, goal, solve_posterior_bias(z, goal, temperature))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0,
                    iterations: int = 40) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` for ``labels`` ``(P,)``.

    The NLL is convex in ``1 / T``, so a golden-section search over ``1 / T`` finds it.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    picked = z[labels, np.arange(labels.size)]

    def nll(inverse):
        return float(_log_partition(inverse * z)[0].mean() - inverse * picked.mean())

    golden = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = 1.0 / high, 1.0 / low
    for _ in range(iterations):
        c, d = b - golden * (b - a), a + golden * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float(2.0 / (a + b))
