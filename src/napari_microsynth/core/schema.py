"""Phase schema: which class ids a mask may hold, their names and display colours, and (for a dataset
folder's ``schema.json``) how its mask files encode them.

>>> schema = PhaseSchema.bundled("uhcs")
>>> schema.names[:2]
('ferrite matrix', 'cementite network')
>>> PhaseSchema.from_dict({"name": "duplex", "phases": [{"id": 0, "name": "ferrite", "color": [90, 90, 90]},
...     {"id": 1, "name": "austenite", "color": [255, 0, 0]}],
...     "masks": {"encoding": "overlay", "background": "ferrite", "pattern": "{stem}_mask"}}).masks.background
0
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Phase:
    """One class of a mask: integer id, human name, RGB display colour (0-255)."""

    id: int
    name: str
    color: tuple[int, int, int]


MASK_ENCODINGS = ("auto", "index", "color", "overlay", "instances")


@dataclass(frozen=True)
class MaskFiles:
    """How the mask files of a dataset folder encode the classes (``schema.json`` key ``"masks"``).

    ``encoding``: ``index`` (pixel values are class ids), ``color`` (each phase's ``color``; a grey mask's
    value v reads as the colour (v, v, v)), ``overlay`` (phase colours painted over the grey micrograph;
    unpainted grey pixels are class ``background``), ``instances`` (one colour per grain: grain / boundary
    classes) or ``auto`` (index or colour, whichever the file holds). ``tolerance`` (0-255 per channel)
    accepts colours shifted by lossy compression. ``pattern``: a mask's file name without extension,
    ``{stem}`` standing for its micrograph's (e.g. ``{stem}_mask``); with the default ``{stem}`` the common
    suffixes ``_mask``, ``-label``, ``_gt`` ... are matched too.
    """

    encoding: str = "auto"
    background: int | None = None
    tolerance: int = 0
    pattern: str = "{stem}"

    def to_dict(self) -> dict:
        return {"encoding": self.encoding, "background": self.background, "tolerance": self.tolerance,
                "pattern": self.pattern}


@dataclass(frozen=True)
class PhaseSchema:
    """Ordered phases of a dataset. Class ids are ``0..n_classes-1``; ``ignore_id`` (if set) marks
    unlabelled pixels that metrics and fractions skip. ``masks`` says how a folder's mask files are read;
    it belongs to the files, not to the classes, so it is left out of comparisons and of :meth:`to_dict`
    (what stores and model folders record) and written by :meth:`save` only."""

    name: str
    phases: tuple[Phase, ...]
    ignore_id: int | None = None
    description: str = field(default="", compare=False)
    masks: MaskFiles = field(default=MaskFiles(), compare=False)

    def __post_init__(self) -> None:
        ids = [p.id for p in self.phases]
        if ids != list(range(len(ids))):
            raise ValueError(f"schema {self.name!r}: phase ids must be 0..n-1 in order, got {ids}")
        if self.ignore_id is not None and self.ignore_id in ids:
            raise ValueError(f"schema {self.name!r}: ignore id {self.ignore_id} is also a phase id")
        self._check_masks()

    def _check_masks(self) -> None:
        masks, where = self.masks, f"schema {self.name!r}, \"masks\""
        if masks.encoding not in MASK_ENCODINGS:
            raise ValueError(f"{where}: encoding must be one of {', '.join(MASK_ENCODINGS)}, got {masks.encoding!r}")
        if (masks.encoding == "overlay") != (masks.background is not None):
            raise ValueError(f"{where}: an overlay needs \"background\" (the phase of unpainted grey pixels), "
                             "and only an overlay has one")
        if masks.background is not None and masks.background not in range(self.n_classes):
            raise ValueError(f"{where}: background {masks.background} is not a phase id (0..{self.n_classes - 1})")
        if masks.encoding == "instances" and self.n_classes != 2:
            raise ValueError(f"{where}: instance colour maps give two classes (grain, boundary), the schema has "
                             f"{self.n_classes}")
        if isinstance(masks.tolerance, bool) or not isinstance(masks.tolerance, int) or not 0 <= masks.tolerance <= 255:
            raise ValueError(f"{where}: tolerance must be an integer 0..255, got {masks.tolerance!r}")
        if masks.pattern.count("{stem}") != 1 or any(c in masks.pattern for c in "/\\"):
            raise ValueError(f"{where}: pattern must hold {{stem}} once and no folder, got {masks.pattern!r}")

    @property
    def n_classes(self) -> int:
        return len(self.phases)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.phases)

    @property
    def colors(self) -> np.ndarray:
        """``(n_classes, 3)`` uint8 RGB colours."""
        return np.array([p.color for p in self.phases], dtype=np.uint8)

    @property
    def mask_dtype(self) -> np.dtype:
        """Smallest integer type holding every class id and the ignore id (uint8 for up to 256 values).

        >>> PhaseSchema.bundled("uhcs").mask_dtype
        dtype('uint8')
        """
        values = [0, self.n_classes - 1] + ([self.ignore_id] if self.ignore_id is not None else [])
        lo, hi = min(values), max(values)
        for dtype in (np.uint8, np.uint16, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dtype)
        return np.dtype(np.int64)

    def index_of(self, name: str) -> int:
        """Class id of a phase by (case-insensitive) name."""
        for p in self.phases:
            if p.name.lower() == name.lower():
                return p.id
        raise KeyError(f"schema {self.name!r} has no phase {name!r}; phases: {', '.join(self.names)}")

    def validate_mask(self, mask: np.ndarray) -> None:
        """Raise ``ValueError`` naming every value in ``mask`` that is neither a phase nor the ignore id."""
        values = np.unique(mask)
        allowed = set(range(self.n_classes))
        if self.ignore_id is not None:
            allowed.add(self.ignore_id)
        unknown = [int(v) for v in values if int(v) not in allowed]
        if unknown:
            raise ValueError(
                f"mask holds values {unknown} that schema {self.name!r} does not define "
                f"(phases 0..{self.n_classes - 1}"
                + (f", ignore {self.ignore_id}" if self.ignore_id is not None else "")
                + ")"
            )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "ignore_id": self.ignore_id,
            "phases": [{"id": p.id, "name": p.name, "color": list(p.color)} for p in self.phases],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PhaseSchema":
        try:
            phases = tuple(
                Phase(int(p["id"]), str(p["name"]), tuple(int(c) for c in p["color"]))  # type: ignore[arg-type]
                for p in data["phases"]
            )
            masks = dict(data.get("masks") or {})
            background = masks.get("background")
            if isinstance(background, str):  # a phase name
                by_name = {p.name.lower(): p.id for p in phases}
                if background.lower() not in by_name:
                    raise ValueError(f"\"masks\" background {background!r} is not a phase name "
                                     f"({', '.join(p.name for p in phases)})")
                masks["background"] = by_name[background.lower()]
            unknown = sorted(set(masks) - set(MaskFiles().to_dict()))
            if unknown:
                raise ValueError(f"\"masks\" has unknown keys {unknown}; known: {list(MaskFiles().to_dict())}")
            return cls(
                name=str(data["name"]),
                phases=phases,
                ignore_id=None if data.get("ignore_id") is None else int(data["ignore_id"]),
                description=str(data.get("description", "")),
                masks=MaskFiles(**masks),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid phase schema: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write the schema as JSON, with how its mask files are read (``"masks"``) when not the default."""
        data = self.to_dict()
        if self.masks != MaskFiles():
            data["masks"] = self.masks.to_dict()
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PhaseSchema":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON phase schema ({exc})") from exc
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def bundled(cls, name: str) -> "PhaseSchema":
        """A schema shipped in ``resources/schemas`` (``metaldam``, ``uhcs``, ``grains``)."""
        from ..resources import resources_dir

        path = resources_dir() / "schemas" / f"{name}.json"
        if not path.exists():
            known = sorted(p.stem for p in (resources_dir() / "schemas").glob("*.json"))
            raise KeyError(f"no bundled schema {name!r}; bundled: {', '.join(known)}")
        return cls.load(path)
