"""The one representation of a micrograph (+ mask) that travels through the whole program.

A real micrograph read from disk, a training tile, a predicted phase map and a synthetic pair from a
generator are all :class:`Sample` objects; what they are is recorded in ``provenance``. A synthetic
pair's requested condition lives in ``provenance.condition`` and its achieved fractions are
``sample.fractions``.
"""
from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .schema import PhaseSchema

ORIGINS = ("real", "synthetic", "corrected", "predicted")
#: Curation states of a stored sample; new pairs start ``pending``, rejected ones are left out of exports.
STATUSES = ("pending", "accepted", "rejected", "flagged")
#: ``provenance.extra`` key of a sample's companion images: named grey pictures of how it was made (a
#: phase-field pair's untextured simulation), each an 8-bit PNG data URI, shown next to it in previews
COMPANIONS = "companions"


@dataclass
class Provenance:
    """Where a sample came from. Serialised to JSON in the dataset store."""

    origin: str = "real"
    source: str = ""
    crop_box: tuple[int, int, int, int] | None = None  # (y0, x0, y1, x1) in the source image
    generator: str = ""
    generator_version: str = ""
    model_checksum: str = ""
    condition: dict[str, Any] | None = None  # e.g. {"fractions": [...]} or {"properties": {...}}
    seed: int | None = None
    changed_pixels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"provenance origin must be one of {ORIGINS}, got {self.origin!r}")
        if self.crop_box is not None:
            self.crop_box = tuple(int(v) for v in self.crop_box)  # type: ignore[assignment]

    @property
    def is_synthetic(self) -> bool:
        """Generated, or generated and then hand-corrected (``extra["original_origin"] == "synthetic"``)."""
        return self.origin == "synthetic" or (
            self.origin == "corrected" and self.extra.get("original_origin") == "synthetic"
        )

    def corrected(self, changed_pixels: int, origin: str = "corrected") -> "Provenance":
        """This provenance after a hand correction of the mask that changed ``changed_pixels`` pixels.

        The first origin is kept in ``extra["original_origin"]`` (a second correction keeps it too).

        >>> Provenance(origin="synthetic").corrected(12).extra
        {'original_origin': 'synthetic'}
        """
        extra = dict(self.extra)
        extra.setdefault("original_origin", self.origin)
        return replace(self, origin=origin, changed_pixels=int(changed_pixels), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["crop_box"] = list(self.crop_box) if self.crop_box is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Provenance":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown provenance fields: {sorted(unknown)}")
        data = dict(data)
        if data.get("crop_box") is not None:
            data["crop_box"] = tuple(data["crop_box"])
        return cls(**data)


def encode_png(image: np.ndarray) -> str:
    """An image in [0, 1] as an 8-bit grey PNG data URI (JSON-safe, for ``provenance.extra``)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(uri: str) -> np.ndarray:
    """The float32 image in [0, 1] of a PNG data URI written by :func:`encode_png`."""
    from PIL import Image

    head, _, data = uri.partition(",")
    if head != "data:image/png;base64":
        raise ValueError("not a PNG data URI")
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image, dtype=np.float32) / 255.0


def companion_images(sample: "Sample") -> dict[str, np.ndarray]:
    """The companion images a sample carries (:data:`COMPANIONS`), by name, as float32 in [0, 1]."""
    return {name: decode_png(uri) for name, uri in sample.provenance.extra.get(COMPANIONS, {}).items()}


@dataclass
class Sample:
    """A grey micrograph with an optional class mask.

    image: float32 ``(H, W)`` in [0, 1].
    mask: integer ``(H, W)`` class ids of ``schema`` (may hold ``schema.ignore_id``), or None.
    instances: optional integer ``(H, W)`` instance labels (grain maps), 0 = none.
    pixel_size_um: physical pixel size in micrometres when known.
    properties: continuous conditions (anneal temperature, ...) by name.
    """

    image: np.ndarray
    schema: PhaseSchema
    mask: np.ndarray | None = None
    name: str = ""
    pixel_size_um: float | None = None
    properties: dict[str, float] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    instances: np.ndarray | None = None

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 2:
            raise ValueError(f"sample {self.name!r}: image must be 2-D grey, got shape {image.shape}")
        if image.dtype != np.float32:
            image = image.astype(np.float32)
        self.image = image
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.shape != image.shape:
                raise ValueError(
                    f"sample {self.name!r}: mask shape {mask.shape} differs from image shape {image.shape}"
                )
            if not np.issubdtype(mask.dtype, np.integer):
                raise ValueError(f"sample {self.name!r}: mask must hold integers, got {mask.dtype}")
            self.mask = mask
        if self.instances is not None and np.shape(self.instances) != image.shape:
            raise ValueError(f"sample {self.name!r}: instance map shape differs from image shape")

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]

    @property
    def fractions(self) -> np.ndarray:
        """Per-class area fractions of the mask (ignore id skipped); raises if there is no mask."""
        from .fractions import mask_fractions

        if self.mask is None:
            raise ValueError(f"sample {self.name!r} has no mask")
        return mask_fractions(self.mask, self.schema)

    def crop(self, box: tuple[int, int, int, int], name: str | None = None) -> "Sample":
        """Sub-sample ``image[y0:y1, x0:x1]``; the crop box is recorded relative to the source."""
        y0, x0, y1, x1 = box
        base = self.provenance.crop_box
        abs_box = (y0, x0, y1, x1) if base is None else (base[0] + y0, base[1] + x0, base[0] + y1, base[1] + x1)
        return replace(
            self,
            image=self.image[y0:y1, x0:x1].copy(),
            mask=None if self.mask is None else self.mask[y0:y1, x0:x1].copy(),
            instances=None if self.instances is None else self.instances[y0:y1, x0:x1].copy(),
            name=name if name is not None else f"{self.name}[{y0}:{y1},{x0}:{x1}]",
            provenance=replace(self.provenance, crop_box=abs_box, extra=dict(self.provenance.extra)),
            properties=dict(self.properties),
        )


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """SHA-256 prefix identifying a set of samples by name, shape, pixel size, image and mask (order-independent).

    Recorded in model folders and export plans; the same files read again give the same fingerprint.
    """
    digests = []
    for s in samples:
        digest = hashlib.sha256(f"{s.name}|{s.shape}|{s.pixel_size_um}|".encode())
        digest.update(np.ascontiguousarray(s.image).tobytes())
        if s.mask is not None:
            digest.update(np.ascontiguousarray(s.mask.astype(np.int64)).tobytes())
        digests.append(digest.hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and nested containers.

    >>> jsonable({"fractions": np.array([0.5, 0.5]), "seed": np.int64(3)})
    {'fractions': [0.5, 0.5], 'seed': 3}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
