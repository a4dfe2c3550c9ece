"""The generator contract: what every synthetic micrograph + mask generator offers.

A generator says what it is conditioned on (:class:`ConditionSpec`, so a UI can build the controls),
trains on a list of :class:`~napari_microsynth.core.sample.Sample`, saves to / loads from a model folder,
and streams synthetic pairs as Samples with their provenance filled in:

>>> gen = get_generator("pf-diffseg")(PhaseSchema.bundled("uhcs"), "tiny")      # doctest: +SKIP
>>> gen.train(samples, gen.TrainConfig(steps=100))                               # doctest: +SKIP
>>> for pair in gen.sample([0.7, 0.1, 0.15, 0.05], n=4, seed=1):                 # doctest: +SKIP
...     print(pair.provenance.seed, pair.fractions)

Conditions are phase-fraction vectors over the schema's classes, dictionaries of named continuous
properties, or ``None``, depending on ``condition_spec.kind``. Each family declares its training and
sampling options (:meth:`Generator.training_options`, :meth:`Generator.sampling_options`); the CLI and the
widgets build their flags and forms from them:

>>> [o.name for o in get_generator("two-stage-gan").sampling_options()][:3]      # doctest: +SKIP
['sampler', 'steps', 'batch_size']
"""
from __future__ import annotations

import abc
import csv
import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from ..core.options import Option, apply_options, declared_options
from ..core.progress import ProgressFn, StopFn, never_stop, no_progress
from ..core.sample import Sample, data_fingerprint
from ..core.schema import PhaseSchema
from ..core.tiles import RandomPairTiles
from ..models.folder import ModelFolderMixin

CONDITION_KINDS = ("fractions", "properties", "none")


@dataclass(frozen=True)
class PropertyRange:
    """A named continuous condition (e.g. anneal temperature) and the range the model was trained on.

    A categorical condition (e.g. the cooling method) lists its ``categories``; its value is the index of a
    category, ``low`` 0 and ``high`` the last index (so a numeric control over the range still works), and
    :meth:`ConditionSpec.validate` also takes the category's name (:meth:`categorical` makes one).

    >>> PropertyRange.categorical("cool_method", ["AR", "Q"]).code("q")
    1
    """

    name: str
    low: float
    high: float
    unit: str = ""
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"property {self.name!r}: low {self.low} is above high {self.high}")
        if self.categories:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
            if (self.low, self.high) != (0, len(self.categories) - 1):
                raise ValueError(f"categorical property {self.name!r}: low and high must be 0 and "
                                 f"{len(self.categories) - 1} (the category indices)")

    @classmethod
    def categorical(cls, name: str, categories: Sequence[str]) -> "PropertyRange":
        """A categorical condition over ``categories`` (its value: a category's index)."""
        if not categories:
            raise ValueError(f"categorical property {name!r} needs at least one category")
        return cls(name, 0, len(categories) - 1, categories=tuple(categories))

    def code(self, value: Any) -> int:
        """The category index of a name (case-insensitive) or a number (rounded to the nearest index)."""
        if isinstance(value, str):
            names = [c.lower() for c in self.categories]
            if value.strip().lower() in names:
                return names.index(value.strip().lower())
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"property {self.name!r}: unknown category {value!r}; the trained ones are "
                                 f"{', '.join(self.categories)}") from None
        value = float(value)
        if not (math.isfinite(value) and self.low - 0.5 < value < self.high + 0.5):
            raise ValueError(f"property {self.name!r} = {value} is not a category index 0..{int(self.high)} "
                             f"({', '.join(f'{i} {c}' for i, c in enumerate(self.categories))})")
        return int(math.floor(value + 0.5))


@dataclass(frozen=True)
class ConditionSpec:
    """What a generator is conditioned on.

    kind "fractions": one non-negative number per class of the schema (``class_names``), renormalised to sum 1.
    kind "properties": a value for each of ``properties`` inside its range.
    kind "none": unconditional.
    """

    kind: str
    class_names: tuple[str, ...] = ()
    properties: tuple[PropertyRange, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CONDITION_KINDS:
            raise ValueError(f"condition kind must be one of {CONDITION_KINDS}, got {self.kind!r}")
        if self.kind == "fractions" and not self.class_names:
            raise ValueError("a fractions condition needs the class names")
        if self.kind == "properties" and not self.properties:
            raise ValueError("a properties condition needs at least one property range")

    @classmethod
    def fractions(cls, schema: PhaseSchema) -> "ConditionSpec":
        return cls("fractions", class_names=tuple(schema.names))

    @classmethod
    def of_properties(cls, ranges: Sequence[PropertyRange]) -> "ConditionSpec":
        return cls("properties", properties=tuple(ranges))

    @classmethod
    def none(cls) -> "ConditionSpec":
        return cls("none")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "class_names": list(self.class_names),
            "properties": [dataclasses.asdict(p) for p in self.properties],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConditionSpec":
        return cls(
            kind=data["kind"],
            class_names=tuple(data.get("class_names", ())),
            properties=tuple(PropertyRange(**p) for p in data.get("properties", ())),
        )

    def validate(self, condition: Any) -> dict[str, Any] | None:
        """One condition in the form recorded in ``provenance.condition`` (``None`` for kind "none").

        >>> spec = ConditionSpec("fractions", class_names=("a", "b"))
        >>> spec.validate([3, 1])
        {'fractions': [0.75, 0.25]}
        """
        if self.kind == "none":
            if condition is not None:
                raise ValueError("this generator is unconditional; pass conditions=None")
            return None
        if self.kind == "fractions":
            values = np.asarray(condition, dtype=np.float64)
            n = len(self.class_names)
            if values.shape != (n,):
                raise ValueError(
                    f"a fraction vector needs {n} values ({', '.join(self.class_names)}), got shape {values.shape}"
                )
            if not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ValueError(f"fractions must be finite and non-negative, got {values.tolist()}")
            total = values.sum()
            if total <= 0:
                raise ValueError("a fraction vector must have at least one positive value")
            return {"fractions": (values / total).tolist()}
        if not isinstance(condition, dict):
            raise ValueError(f"properties condition must be a dict name -> value, got {type(condition).__name__}")
        names = [p.name for p in self.properties]
        missing = [name for name in names if name not in condition]
        unknown = sorted(set(condition) - set(names))
        if missing or unknown:
            raise ValueError(f"properties needed: {names}; missing {missing}, unknown {unknown}")
        out = {}
        for p in self.properties:
            if p.categories:
                out[p.name] = float(p.code(condition[p.name]))
                continue
            value = float(condition[p.name])
            if not (math.isfinite(value) and p.low <= value <= p.high):
                raise ValueError(f"property {p.name!r} = {value} is outside the trained range [{p.low}, {p.high}]")
            out[p.name] = value
        return {"properties": out}

    def expand(self, conditions: Any, n: int | None) -> list[dict[str, Any] | None]:
        """Validated conditions for ``n`` samples.

        fractions: one vector (repeated ``n`` times, default once) or a sequence of ``N`` vectors (``n`` None or N).
        properties: one dict (repeated) or a list of ``N`` dicts. none: ``conditions=None`` and ``n``.
        """
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self.kind == "none":
            self.validate(conditions)
            return [None] * (1 if n is None else n)
        if conditions is None:
            raise ValueError(f"this generator needs {self.kind} conditions")
        if self.kind == "fractions":
            rows = np.asarray(conditions, dtype=np.float64)
            many = rows.ndim == 2
        else:
            many = not isinstance(conditions, dict)
            rows = list(conditions) if many else conditions
        if not many:
            return [self.validate(rows)] * (1 if n is None else n)
        if n is not None and n != len(rows):
            raise ValueError(f"got {len(rows)} conditions but n={n}; pass one condition or n=None")
        return [self.validate(row) for row in rows]


def conditions_from_csv(path: str | Path, spec: ConditionSpec | PhaseSchema) -> np.ndarray | list[dict[str, float]]:
    """Read conditions from a CSV file with a header row, in the form :meth:`Generator.sample` takes.

    Fractions: one column per class, named by phase name (case-insensitive) or class id; other columns
    (e.g. a file name) are ignored. Returns an ``(N, n_classes)`` array of renormalised vectors.
    Properties: one column per property, named exactly as the property; returns a list of dicts.
    """
    if isinstance(spec, PhaseSchema):
        spec = ConditionSpec.fractions(spec)
    if spec.kind == "none":
        raise ValueError("an unconditional generator takes no conditions file")
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if spec.kind == "fractions":
            wanted = {name.lower(): name for name in spec.class_names}
            wanted.update({str(i): name for i, name in enumerate(spec.class_names)})
            key = str.lower
        else:
            wanted = {p.name: p.name for p in spec.properties}
            key = str
        columns = {}
        for raw, clean in zip(reader.fieldnames or [], header):
            if key(clean) in wanted:
                columns[wanted[key(clean)]] = raw
        needed = spec.class_names if spec.kind == "fractions" else tuple(p.name for p in spec.properties)
        categorical = {p.name for p in spec.properties if p.categories}  # a category's name or index
        missing = [name for name in needed if name not in columns]
        if missing:
            raise ValueError(f"{path}: no column for {missing}; header is {header}")
        rows = []
        for line, record in enumerate(reader, start=2):
            if not any((v or "").strip() for v in record.values()):
                continue
            try:
                values = {name: record[columns[name]] if name in categorical else float(record[columns[name]])
                          for name in needed}
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}, line {line}: not a number ({exc})") from exc
            try:
                condition = spec.validate([values[c] for c in needed] if spec.kind == "fractions" else values)
            except ValueError as exc:
                raise ValueError(f"{path}, line {line}: {exc}") from exc
            rows.append(condition)
    if not rows:
        raise ValueError(f"{path}: no condition rows")
    if spec.kind == "fractions":
        return np.array([row["fractions"] for row in rows])
    return [row["properties"] for row in rows]


def plausible_conditions(spec: ConditionSpec, samples: Sequence[Sample], n: int, seed: int = 0) -> list[dict[str, float]]:
    """``n`` conditions for a property-conditioned generator drawn inside the convex hull of the conditions the
    ``samples`` record (paper 004, Algorithm 1: :func:`~napari_microsynth.core.conditions.property_targets`);
    with categorical properties in ``spec``, a category is drawn from the samples' empirical distribution and
    the continuous properties inside that category's hull
    (:func:`~napari_microsynth.core.conditions.mixed_property_targets`)."""
    from ..core.conditions import mixed_property_targets, property_targets

    if spec.kind != "properties":
        raise ValueError(f"plausible conditions are drawn for a property-conditioned generator, not {spec.kind}")
    categorical = {p.name: p.categories for p in spec.properties if p.categories}
    if not categorical:
        return property_targets(samples, [p.name for p in spec.properties], n, seed=seed)
    continuous = [p.name for p in spec.properties if not p.categories]
    return mixed_property_targets(samples, continuous, categorical, n, seed=seed)


@dataclass
class NoSampling:
    """The sampling options of a family that has none."""


class Generator(ModelFolderMixin):
    """Base class of all generators: what every family has, so CLI, widgets and engines treat them alike.

    A family sets ``name`` (registry key), ``version`` (bumped when its model-folder format changes),
    ``presets`` (network sizes, for :meth:`__init__`), ``TrainConfig`` and ``SamplingConfig`` (dataclasses
    whose :func:`~napari_microsynth.core.options.option` fields declare its training and sampling options),
    and implements :attr:`condition_spec`, :attr:`resolution`, :meth:`train`, :meth:`_generate` and the
    parts of its model folder (:class:`~napari_microsynth.models.folder.ModelFolderMixin` gives ``save``
    and ``load``; the folder's identity is the family's name and ``version``). Every family is built the
    same way, ``cls(schema, preset, device, seed)``, and has a :attr:`device`, a tile size
    (:attr:`resolution`) and a scale (:attr:`downscale`, :attr:`pixel_size_um`).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    presets: ClassVar[tuple[str, ...]] = ("small",)
    TrainConfig: ClassVar[type]
    SamplingConfig: ClassVar[type] = NoSampling
    #: micrometres per pixel of the generated tiles, when the training micrographs said
    pixel_size_um: float | None = None

    def __init__(self, schema: PhaseSchema, preset: str = "small", device: str = "auto", seed: int = 0):
        """An untrained generator for ``schema``: network size ``preset`` (one of :attr:`presets`), on
        ``device`` ("auto", "cpu", "cuda", "mps"; a family resolves "auto" to where it runs), initial
        weights from ``seed``."""
        if preset not in self.presets:
            raise ValueError(f"unknown {self.name} preset {preset!r}; choose one of {', '.join(self.presets)}")
        self.schema = schema
        self.preset = preset
        self.device = device
        #: what the model folder records about the training data and run
        self.training = TrainingRecord()

    @property
    @abc.abstractmethod
    def condition_spec(self) -> ConditionSpec:
        """What :meth:`sample` is conditioned on."""

    @property
    @abc.abstractmethod
    def resolution(self) -> int:
        """Side in pixels of the square tiles it generates (and was trained on)."""

    @property
    def downscale(self) -> int:
        """How much the training micrographs were reduced to make its tiles (1: not at all, or before training)."""
        return int(self.training.settings.get("downscale", 1))

    @classmethod
    def training_options(cls) -> tuple[Option, ...]:
        """The training options the family declares (fields of ``TrainConfig``)."""
        return declared_options(cls.TrainConfig)

    @classmethod
    def sampling_options(cls) -> tuple[Option, ...]:
        """The sampling options :meth:`sample` takes as keywords (fields of ``SamplingConfig``)."""
        return declared_options(cls.SamplingConfig)

    @classmethod
    def training_config(cls, **values: Any) -> Any:
        """A ``TrainConfig`` with ``values`` over the defaults, checked; unknown names raise a ValueError."""
        return apply_options(cls.TrainConfig, values)

    @classmethod
    def sampling_config(cls, **values: Any) -> Any:
        """A ``SamplingConfig`` with ``values`` over the defaults, checked and resolved (e.g. the sampler's
        own step count for ``steps=None``); unknown names raise a ValueError listing the known ones."""
        return apply_options(cls.SamplingConfig, values)

    @classmethod
    def sampling_settings(cls, **values: Any) -> dict[str, Any]:
        """Every sampling setting for these option values, as recorded in ``provenance.extra["sampling"]``."""
        return dataclasses.asdict(cls.sampling_config(**values))

    @classmethod
    def declared_sampling(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that are sampling options of this family (the others left out)."""
        names = {o.name for o in cls.sampling_options()}
        return {k: v for k, v in values.items() if k in names}

    @abc.abstractmethod
    def train(
        self,
        samples: list[Sample],
        config: Any = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
    ) -> dict[str, Any]:
        """Train on real samples (``config`` None = ``TrainConfig()``); returns a summary with at least
        ``steps`` and ``final_loss``, for the model card.

        Raises :class:`~napari_microsynth.core.progress.Cancelled` when ``should_stop()`` turns true.
        """

    @classmethod
    def folder_identity(cls) -> dict[str, Any]:
        return {"kind": "generator", "generator": cls.name, "generator_version": cls.version}

    @abc.abstractmethod
    def _generate(
        self,
        conditions: list[dict[str, Any] | None],
        seeds: list[int],
        progress: ProgressFn,
        should_stop: StopFn,
        sampling: Any,
    ) -> Iterator[Sample]:
        """Yield one Sample (image, mask, optional instances, provenance.extra) per condition, in order.

        ``sampling`` is a checked ``SamplingConfig``. Sample ``i`` must depend only on ``conditions[i]``,
        ``seeds[i]`` and ``sampling``, so that a single pair can be regenerated from its recorded seed.
        """

    def plausible_conditions(self, n: int, seed: int = 0) -> list[dict[str, float]]:
        """``n`` conditions of a property-conditioned model that lie where it was trained, for :meth:`sample`
        (the widget's "plausible conditions"): here uniform inside the trained ranges, a category uniformly
        (how ``phasefield-cyclegan`` draws its training structures); a family that keeps its training
        conditions draws between them (``tim3``: paper 004's Algorithm 1)."""
        spec = self.condition_spec
        if spec.kind != "properties":
            raise ValueError(f"plausible conditions are drawn for a property-conditioned generator, not {spec.kind}")
        rng = np.random.default_rng(seed)
        return [{p.name: float(rng.integers(len(p.categories)) if p.categories else rng.uniform(p.low, p.high))
                 for p in spec.properties} for _ in range(n)]

    def sample(
        self,
        conditions: Any = None,
        n: int | None = None,
        seed: int = 0,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
        **options: Any,
    ) -> Iterator[Sample]:
        """An iterator of synthetic pairs, provenance filled in (sample ``i`` gets seed ``seed + i``).

        ``conditions`` as :meth:`ConditionSpec.expand` takes them; for a property-conditioned model None draws
        ``n`` (default 1) :meth:`plausible_conditions` from ``seed``. ``options`` are the family's sampling
        options (:meth:`sampling_options`). Bad conditions or options raise a ValueError here, before any
        work; iterating raises ``Cancelled`` between denoising steps once ``should_stop()`` turns true.
        """
        sampling = self.sampling_config(**options)
        if conditions is None and self.condition_spec.kind == "properties":
            if n is not None and n < 0:
                raise ValueError(f"n must be >= 0, got {n}")
            conditions, n = self.plausible_conditions(1 if n is None else n, seed), None
        expanded = self.condition_spec.expand(conditions, n)
        seeds = [int(seed) + i for i in range(len(expanded))]
        return self._stream(expanded, seeds, progress, should_stop, sampling)

    def _stream(
        self,
        expanded: list[dict[str, Any] | None],
        seeds: list[int],
        progress: ProgressFn,
        should_stop: StopFn,
        sampling: Any,
    ) -> Iterator[Sample]:
        if not expanded:
            return
        settings = dataclasses.asdict(sampling)
        for i, pair in enumerate(self._generate(expanded, seeds, progress, should_stop, sampling)):
            condition = expanded[i]
            properties = dict(pair.properties)
            if condition is not None and "properties" in condition:
                properties.update(condition["properties"])
            yield replace(
                pair,
                schema=self.schema,
                name=pair.name or f"{self.name}-{seeds[i]}",
                properties=properties,
                provenance=replace(
                    pair.provenance,
                    origin="synthetic",
                    generator=self.name,
                    generator_version=self.version,
                    model_checksum=self.model_checksum,
                    condition=condition,
                    seed=seeds[i],
                    extra={**pair.provenance.extra, "sampling": settings},
                ),
            )


@dataclass
class TrainingRecord:
    """What a model folder records about its training data and run (``config.json`` -> ``training``)."""

    data_fingerprint: str = ""
    sample_names: list[str] = field(default_factory=list)
    steps: int = 0
    final_loss: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_run(cls, samples: Sequence[Sample], config: Any, steps: int, final_loss: float | None,
               **settings: Any) -> "TrainingRecord":
        """The record of a run on ``samples`` with the settings dataclass ``config`` (``settings``: more
        entries, e.g. the device)."""
        return cls(data_fingerprint=data_fingerprint(samples), sample_names=[s.name for s in samples],
                   steps=steps, final_loss=final_loss, settings={**dataclasses.asdict(config), **settings})


def batch_ranges(n: int, batch_size: int) -> list[range]:
    """The indices ``0 .. n - 1`` in consecutive batches of at most ``batch_size``.

    >>> batch_ranges(5, 2)
    [range(0, 2), range(2, 4), range(4, 5)]
    """
    return [range(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def stage_records(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The steps and final loss of each stage of a multi-stage training (trainer results by stage name)."""
    return {"stage_steps": {stage: r.steps for stage, r in results.items()},
            "stage_final_loss": {stage: r.final_loss for stage, r in results.items()}}


def training_tiles(samples: Sequence[Sample], config: Any, config_class: type, schema: PhaseSchema,
                   resolution: int, label: str) -> tuple[Any, RandomPairTiles]:
    """The checked training settings (``config`` None = ``config_class()``) and the random training tiles
    of ``samples`` (crops of ``resolution * config.downscale`` px, ``config.augment``) for a model of
    ``schema``; ``label`` names the model in errors."""
    config = config_class() if config is None else config
    if not isinstance(config, config_class):
        raise TypeError(f"{label} takes a {config_class.__name__}, got {type(config).__name__}")
    foreign = [s.name for s in samples if s.schema.names != schema.names]
    if foreign:
        raise ValueError(f"samples {foreign} do not use this model's schema {schema.name!r}")
    return config, RandomPairTiles(samples, resolution, config.downscale, config.augment)


def tile_pixel_size(samples: Sequence[Sample], downscale: int) -> float | None:
    """Micrometres per pixel of tiles reduced ``downscale`` times from ``samples`` (median), when known."""
    known = [s.pixel_size_um for s in samples if s.pixel_size_um]
    return float(np.median(known)) * downscale if known else None
