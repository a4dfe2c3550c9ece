"""Property accuracy of a property-conditioned generator (paper 004, sec. 3.4, eq. 9-11), with FD/KID.

A regressor ``F`` trained on real micrographs (:mod:`~napari_microsynth.models.property_regressor`; the
paper's pretrained ResNet-18 cannot be downloaded, so a small CNN is trained here) reads the conditions back
from generated images. A generated image counts as accurate at tolerance ``gamma`` when for every property
``j``: ``|F(x) - y|_j <= gamma * |y_j|`` (eq. 9); ``Acc_gamma`` is the share of accurate images (eq. 10) and
``mAcc`` the mean over gamma in {0.1, 0.2, 0.3} (eq. 11). The tolerance is relative to the property's value
in its own unit, as in the paper, so it depends on the unit (an anneal temperature of 970 C gets +-97 C at
gamma = 0.1, i.e. most of UHCS's 800-1000 C range; an anneal time of 90 min gets +-9 min). A categorical
property (the cooling method) has no magnitude: it counts as accurate when ``F`` names the asked category.

:func:`evaluate_property_generators` draws the conditions with paper 004's Algorithm 1 (convex hull of the
training data's conditions, categories drawn from their empirical distribution,
:func:`~napari_microsynth.core.conditions.mixed_property_targets`), generates one pair per condition with
every generator (same conditions and seeds), and reports Acc / mAcc, FD / KID against real held-out tiles
(the project's domain feature encoder) and the same for the real held-out tiles themselves (their own
recorded conditions; how well the regressor reads unseen micrographs, and the real-vs-real FD/KID baseline)
and for the tiles of the training micrographs (how well it reads the images it learnt from: a generator
that reproduced the training images for their conditions would score about this).

>>> property_accuracy([{"T": 900.0, "cool": 1.0}], [{"T": 950.0, "cool": 1.0}], categorical=("cool",))["acc_0.1"]
1.0
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from ..core.sample import Sample
from ..core.tiles import RandomPairTiles, reduced_tiles
from ..generators.base import ConditionSpec, Generator, plausible_conditions
from ..models.device import resolve_device
from ..models.property_encoder import PropertyCoder, conditions_of
from ..models.property_regressor import PropertyRegressor, PropertyRegressorConfig, normalise_tiles
from ..models.trainer import LoopSettings, Recipe, Run, train
from .generator_evaluation import (
    REAL_BASELINE,
    DistributionQuality,
    _Parts,
    _subset,
    evaluate_distribution,
    split_by_micrograph,
)

GAMMAS = (0.1, 0.2, 0.3)  # paper 004, eq. 10-11
#: the row of the real tiles of the training micrographs (the regressor's own training data)
REAL_TRAINING = "real (training micrographs)"


def property_accuracy(predicted: Sequence[Mapping[str, float]], targets: Sequence[Mapping[str, float]],
                      categorical: Collection[str] = (), gammas: Sequence[float] = GAMMAS) -> dict[str, Any]:
    """``Acc_gamma`` for each gamma (key ``"acc_<gamma>"``), ``mAcc`` (``"macc"``, their mean), ``n`` and, per
    property, the share within tolerance at each gamma (``"per_property"``), as fractions in [0, 1].

    Continuous properties: ``|predicted - target| <= gamma * |target|`` (paper 004, eq. 9); categorical ones
    (``categorical`` names, values are category indices): the same index.
    """
    if len(predicted) != len(targets) or not targets:
        raise ValueError(f"need one prediction per target and at least one, got {len(predicted)} and {len(targets)}")
    names = list(targets[0])
    out: dict[str, Any] = {"n": len(targets), "per_property": {}}
    hits = {}
    for name in names:
        p = np.array([float(row[name]) for row in predicted])
        t = np.array([float(row[name]) for row in targets])
        for gamma in gammas:
            ok = np.round(p) == np.round(t) if name in categorical else np.abs(p - t) <= gamma * np.abs(t)
            hits[(name, gamma)] = ok
            out["per_property"].setdefault(name, {})[f"{gamma:g}"] = float(ok.mean())
    for gamma in gammas:
        out[f"acc_{gamma:g}"] = float(np.all([hits[(n, gamma)] for n in names], axis=0).mean())
    out["macc"] = float(np.mean([out[f"acc_{g:g}"] for g in gammas]))
    return out


def coder_from_spec(spec: ConditionSpec) -> PropertyCoder:
    """The regressor's output axes for a generator's conditions: each continuous range (log axis where it spans a
    factor 10 or more), each categorical property's categories."""
    if spec.kind != "properties":
        raise ValueError(f"property accuracy needs a generator conditioned on properties, not {spec.kind}")
    return PropertyCoder.from_ranges([(p.name, p.low, p.high) for p in spec.properties if not p.categories],
                                     [(p.name, p.categories) for p in spec.properties if p.categories])


# ---------------------------------------------------------------- the regressor


@dataclass
class RegressorTrainConfig:
    """Training of the evaluation regressor on random real tiles at the generator's size and scale.

    gamma_sigma / contrast: paper 004's eq. 12 augmentation, ``eta ~ N(1, gamma_sigma^2)`` and
    ``alpha ~ U[1 - contrast, 1 + contrast]`` per tile.
    """

    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    tile: int = 64
    downscale: int = 2
    widths: tuple[int, ...] = (32, 64, 128, 128)
    gamma_sigma: float = 0.2
    contrast: float = 0.2
    augment: bool = True
    seed: int = 0


class TrainedRegressor:
    """A trained :class:`PropertyRegressor` with its coder: tiles in, conditions (property values) out."""

    def __init__(self, model: PropertyRegressor, coder: PropertyCoder, config: RegressorTrainConfig,
                 trained_on: list[str], device: torch.device):
        self.model, self.coder, self.config, self.trained_on, self.device = model.eval(), coder, config, trained_on, device

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 64) -> list[dict[str, float]]:
        """Predicted conditions of grey tiles ``(B, H, W)`` in [0, 1]: continuous values in their units,
        categorical ones as category indices."""
        continuous, categorical = [], []
        for start in range(0, len(images), batch_size):
            x = normalise_tiles(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])))
            c, logits = self.model(x.to(self.device))
            continuous.append(c.cpu().numpy())
            categorical.append(logits.cpu().numpy())
        values = self.coder.decode_continuous(np.concatenate(continuous))
        logits = np.concatenate(categorical)
        out = [{name: float(v) for (name, *_), v in zip(self.coder.continuous, row)} for row in values]
        offset = 0
        for name, categories in self.coder.categorical:
            codes = logits[:, offset:offset + len(categories)].argmax(axis=1)
            offset += len(categories)
            for row, code in zip(out, codes):
                row[name] = float(code)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": "property regressor (small CNN trained here; paper 004: pretrained ResNet-18)",
                "trained_on": self.trained_on, "steps": self.config.steps, "tile": self.config.tile,
                "downscale": self.config.downscale}


def train_property_regressor(
    samples: Sequence[Sample],
    coder: PropertyCoder,
    config: RegressorTrainConfig | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
) -> TrainedRegressor:
    """Train the evaluation regressor on random tiles of the annotated ``samples`` that record conditions the
    coder knows (others are left out): MSE on the continuous axes + cross-entropy per categorical property,
    through the one trainer, with eq. 12's random gamma and contrast."""
    config = RegressorTrainConfig() if config is None else config
    known = [(s, c) for s, c in zip(samples, conditions_of(samples, coder)) if c is not None and s.mask is not None]
    if not known:
        raise ValueError("no annotated micrograph records the generator's conditions; the regressor has nothing "
                         "to learn from")
    tiles = RandomPairTiles([s for s, _ in known], config.tile, config.downscale, config.augment)
    continuous = torch.from_numpy(coder.continuous_part([c for _, c in known]))
    codes = torch.tensor([[int(c[name]) for name, _ in coder.categorical] for _, c in known], dtype=torch.long)
    torch_device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = PropertyRegressor(PropertyRegressorConfig(len(coder.continuous),
                                                          tuple(len(c) for _, c in coder.categorical), config.widths))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)

    def draw(rng: np.random.Generator):
        images, _, sources = tiles.draw(rng, config.batch_size, with_sources=True)
        eta = torch.from_numpy(np.clip(rng.normal(1.0, config.gamma_sigma, len(images)), 0.2, None)).float()
        alpha = torch.from_numpy(rng.uniform(1 - config.contrast, 1 + config.contrast, len(images))).float()
        src = torch.from_numpy(sources)
        return normalise_tiles(torch.from_numpy(images), eta, alpha), continuous[src], codes[src]

    def step(run: Run, batch) -> dict[str, float]:
        x, target, target_codes = (t.to(run.device) for t in batch)
        predicted, logits = run.modules["regressor"](x)
        loss = F.mse_loss(predicted, target) if target.shape[1] else torch.zeros((), device=run.device)
        offset = 0
        for j, (_, categories) in enumerate(coder.categorical):
            loss = loss + F.cross_entropy(logits[:, offset:offset + len(categories)], target_codes[:, j])
            offset += len(categories)
        run.update("regressor", loss, clip=1.0)
        return {"loss": float(loss.detach())}

    recipe = Recipe({"regressor": model}, {"regressor": optimizer}, draw, step,
                    identity={"regressor": model.config.to_dict()})
    train(recipe, LoopSettings(config.steps, config.seed, torch_device), progress, should_stop)
    return TrainedRegressor(model, coder, config, [s.name for s, _ in known], torch_device)


# ---------------------------------------------------------------- evaluating generators


@dataclass
class PropertyEvaluation:
    """Rows (the real held-out tiles first, then each generator) of property accuracy and FD/KID."""

    rows: list[dict[str, Any]]
    regressor: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        d = self.data
        lines = [
            "# Property accuracy (paper 004, eq. 9-11) and distribution quality", "",
            f"- conditions: {d.get('n')} drawn with Algorithm 1 (convex hull of the training conditions; categories "
            f"from their empirical distribution) from {len(d.get('train', []))} training micrographs",
            f"- property regressor: {self.regressor.get('name')}, {self.regressor.get('steps')} steps on "
            f"{len(self.regressor.get('trained_on', []))} micrographs",
            f"- real rows: {d.get('real_tiles')} held-out real tiles ({', '.join(d.get('scored', []))}) with their own "
            "conditions (FD/KID: half B against half A), and the tiles of the training micrographs (the regressor's "
            "own training data); FD/KID of every row against half A of the held-out tiles",
            f"- tiles: {d.get('tile')} px at downscale {d.get('downscale')}", "",
            "| compared | n | Acc_0.1 (%) | Acc_0.2 (%) | Acc_0.3 (%) | mAcc (%) | FD | KID (x1000) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(f"| {r['compared']} | {r['n']} | {100 * r['acc_0.1']:.1f} | {100 * r['acc_0.2']:.1f} | "
                         f"{100 * r['acc_0.3']:.1f} | {100 * r['macc']:.1f} | {r['fd']:.3f} | {1000 * r['kid']:.2f} |")
        names = list(self.rows[0]["per_property"])
        lines += ["", "Per property, share within tolerance at gamma 0.1 / 0.2 / 0.3 (%):", "",
                  "| compared | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for r in self.rows:
            cells = [" / ".join(f"{100 * v:.0f}" for v in r["per_property"][name].values()) for name in names]
            lines.append(f"| {r['compared']} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> Path:
        """``report.md``, ``property_accuracy.csv`` and ``evaluation.json`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.to_markdown())
        (folder / "evaluation.json").write_text(json.dumps(asdict(self), indent=2, default=float) + "\n")
        keys = ["compared", "n", "acc_0.1", "acc_0.2", "acc_0.3", "macc", "fd", "kid", "kid_std"]
        with (folder / "property_accuracy.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return folder


def evaluate_property_generators(
    generators: Mapping[str, Generator],
    train_samples: Sequence[Sample],
    scored_samples: Sequence[Sample],
    n: int = 64,
    seed: int = 0,
    regressor: TrainedRegressor | None = None,
    regressor_config: RegressorTrainConfig | None = None,
    extractor: Any = None,
    progress: ProgressFn = no_progress,
    should_stop: StopFn = never_stop,
    **sampling: Any,
) -> PropertyEvaluation:
    """Property accuracy and FD/KID of each generator (all conditioned on the same properties, at one tile size
    and scale) for ``n`` conditions drawn by Algorithm 1 from ``train_samples``, and of the real held-out tiles
    of ``scored_samples`` (at least two micrographs). The regressor and the domain feature extractor are
    trained on ``train_samples`` unless given; ``sampling`` options go to every generator that declares them.
    """
    from ..models.feature_training import FeatureTrainConfig, train_domain_extractor

    if not generators:
        raise ValueError("no generator to evaluate")
    first = next(iter(generators.values()))
    spec = first.condition_spec
    coder = coder_from_spec(spec)
    for name, g in generators.items():
        if g.condition_spec.to_dict()["properties"] != spec.to_dict()["properties"] or g.resolution != first.resolution:
            raise ValueError(f"generator {name!r} is conditioned on other properties or makes other tiles than "
                             f"{next(iter(generators))!r}; compare generators of one kind")
    tile, downscale = first.resolution, first.downscale
    regressor_config = regressor_config or RegressorTrainConfig(tile=tile, downscale=downscale, seed=seed)
    labelled_scored = [s for s in scored_samples if s.mask is not None]
    halves = split_by_micrograph(labelled_scored)
    reference, held_out = (reduced_tiles(h, tile, downscale) for h in halves)
    real_tiles = [*reference, *held_out]
    parts = _Parts(progress, {"regressor": 0 if regressor else regressor_config.steps,
                              "extractor": 0 if extractor else FeatureTrainConfig().steps,
                              "generate": n * len(generators), "score": len(generators) + 1})
    device = str(first.device)
    if regressor is None:
        regressor = train_property_regressor(train_samples, coder, regressor_config, device, parts.part("regressor"),
                                             should_stop)
    if extractor is None:
        extractor = train_domain_extractor([s for s in train_samples if s.mask is not None],
                                           FeatureTrainConfig(tile=tile, downscale=downscale, seed=seed), device=device,
                                           progress=parts.part("extractor"), should_stop=should_stop)
    categorical = {name: cats for name, cats in coder.categorical}
    targets = plausible_conditions(spec, train_samples, n, seed)
    rows = []
    # the real row: held-out real tiles with the conditions of their micrographs
    real_known = [(t, c) for t, c in zip(real_tiles, conditions_of(real_tiles, coder)) if c is not None]
    if real_known:
        accuracy = property_accuracy(regressor.predict(np.stack([t.image for t, _ in real_known])),
                                     [c for _, c in real_known], categorical)
        quality = _quality(reference, held_out, extractor, seed, REAL_BASELINE, should_stop)
        rows.append(_row(REAL_BASELINE, accuracy, quality))
    # the regressor on the micrographs it was trained on: what it reads from images like those it has seen
    seen = reduced_tiles([s for s in train_samples if s.mask is not None and s.name in regressor.trained_on],
                         tile, downscale)
    seen_known = [(t, c) for t, c in zip(seen, conditions_of(seen, coder)) if c is not None]
    if len(seen_known) > 3:
        accuracy = property_accuracy(regressor.predict(np.stack([t.image for t, _ in seen_known])),
                                     [c for _, c in seen_known], categorical)
        compared = _subset([t for t, _ in seen_known], min(len(held_out), len(seen_known)), seed)
        rows.append(_row(REAL_TRAINING, accuracy, _quality(reference, compared, extractor, seed, REAL_TRAINING,
                                                           should_stop)))
    score = parts.part("score")
    score(1, len(generators) + 1, "scored the real tiles")
    generate = parts.part("generate")
    for k, (name, generator) in enumerate(generators.items()):
        pairs = []
        for pair in generator.sample(targets, seed=seed, should_stop=should_stop,
                                     **generator.declared_sampling(sampling)):
            pairs.append(pair)
            generate(k * n + len(pairs), n * len(generators), f"{name}: {len(pairs)}/{n} pairs")
        check_stop(should_stop)
        wanted = [p.provenance.condition["properties"] for p in pairs]
        accuracy = property_accuracy(regressor.predict(np.stack([p.image for p in pairs])), wanted, categorical)
        compared = _subset(pairs, min(len(held_out), len(pairs)), seed)
        rows.append(_row(name, accuracy, _quality(reference, compared, extractor, seed, name, should_stop)))
        score(k + 2, len(generators) + 1, f"scored {name}")
    data = {"n": n, "train": [s.name for s in train_samples], "scored": [s.name for s in labelled_scored],
            "real_tiles": len(real_known), "tile": tile, "downscale": downscale,
            "generators": {name: {"checksum": g.model_checksum, "preset": g.preset,
                                  "settings": g.training.settings.get("property_encoder"),
                                  "stages": g.training.settings.get("stages")} for name, g in generators.items()}}
    return PropertyEvaluation(rows, regressor.describe(), data)


def _quality(reference, compared, extractor, seed, name, should_stop) -> DistributionQuality:
    return evaluate_distribution(reference, compared, extractor, seed=seed, compared=name, should_stop=should_stop)


def _row(name: str, accuracy: Mapping[str, Any], quality: DistributionQuality) -> dict[str, Any]:
    image = quality.image
    return {"compared": name, **accuracy, "fd": image.fd, "kid": image.kid, "kid_std": image.kid_std,
            "mask_fd": None if quality.mask is None else quality.mask.fd,
            "mask_kid": None if quality.mask is None else quality.mask.kid}
