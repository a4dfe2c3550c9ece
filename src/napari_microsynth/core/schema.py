"""Phase schema: which class ids a mask may hold, their names and display colours.

>>> schema = PhaseSchema.bundled("uhcs")
>>> schema.names[:2]
('ferrite matrix', 'cementite network')
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


@dataclass(frozen=True)
class PhaseSchema:
    """Ordered phases of a dataset. Class ids are ``0..n_classes-1``; ``ignore_id`` (if set) marks
    unlabelled pixels that metrics and fractions skip."""

    name: str
    phases: tuple[Phase, ...]
    ignore_id: int | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        ids = [p.id for p in self.phases]
        if ids != list(range(len(ids))):
            raise ValueError(f"schema {self.name!r}: phase ids must be 0..n-1 in order, got {ids}")
        if self.ignore_id is not None and self.ignore_id in ids:
            raise ValueError(f"schema {self.name!r}: ignore id {self.ignore_id} is also a phase id")

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
            return cls(
                name=str(data["name"]),
                phases=phases,
                ignore_id=None if data.get("ignore_id") is None else int(data["ignore_id"]),
                description=str(data.get("description", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid phase schema: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PhaseSchema":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON phase schema ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    def bundled(cls, name: str) -> "PhaseSchema":
        """A schema shipped in ``resources/schemas`` (``metaldam``, ``uhcs``, ``grains``)."""
        from ..resources import resources_dir

        path = resources_dir() / "schemas" / f"{name}.json"
        if not path.exists():
            known = sorted(p.stem for p in (resources_dir() / "schemas").glob("*.json"))
            raise KeyError(f"no bundled schema {name!r}; bundled: {', '.join(known)}")
        return cls.load(path)
