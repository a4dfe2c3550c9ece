"""A draft phase schema from the mask files of a dataset folder (``microsynth describe FOLDER --propose-schema``).

The masks are inspected, not judged by the folder's layout: class ids in one channel, grey levels other than
class ids, a colour legend, colours painted over the grey micrograph (an overlay) or one colour per grain. The
draft names each phase after what was found (``red``, ``class 3``, ``grey 255``); the user renames them.

>>> draft = propose_schema("my_alloy")                # doctest: +SKIP
>>> draft.schema.masks.encoding, draft.schema.names   # doctest: +SKIP
('overlay', ('background (unpainted)', 'red', 'blue'))
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import NO_MASKS, paired_files
from .io import eight_bit_colours, mask_array
from .progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from .schema import MaskFiles, Phase, PhaseSchema

# An RGB mask is an overlay when at least this share of its pixels is grey, in more grey levels than this
# (the micrograph showing through); a colour legend has at most _MAX_LEGEND_COLOURS colours, a grain map more.
_OVERLAY_GREY_SHARE = 0.2
_OVERLAY_GREY_LEVELS = 16
_MAX_LEGEND_COLOURS = 64
# Colours covering less than this share of the coloured pixels are not phases (lossy compression, stray paint);
# they are matched to the nearest phase colour when within _MAX_TOLERANCE per channel.
_MIN_COLOUR_SHARE = 0.001
_MAX_TOLERANCE = 40
# Single-channel masks whose values all lie in 0.._MAX_INDEX are class ids; others are grey levels.
_MAX_INDEX = 31
_COLOUR_NAMES = {(255, 0, 0): "red", (0, 255, 0): "green", (0, 0, 255): "blue", (255, 255, 0): "yellow",
                 (255, 0, 255): "magenta", (0, 255, 255): "cyan", (255, 128, 0): "orange", (128, 0, 128): "purple",
                 (255, 255, 255): "white", (0, 0, 0): "black"}
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_BACKGROUND_COLOUR = (128, 128, 128)

#: what each field of schema.json means, written into the draft under "help" (ignored when it is read)
FIELD_HELP = {
    "name": "the schema's name; stores and model folders record it",
    "description": "free text about the material and the annotation",
    "ignore_id": "a mask value meaning 'not annotated', skipped by fractions and metrics; null when there is none",
    "phases": "one entry per class, ids 0..n-1 in order: rename each phase (e.g. 'ferrite'); 'color' is the colour "
              "it is painted with in colour masks and overlays, and the colour it is shown in",
    "masks.encoding": "how the mask files hold the classes: index (pixel value = phase id), color (each phase's "
                      "color), overlay (phase colours painted on the grey micrograph), instances (one colour per "
                      "grain) or auto",
    "masks.background": "overlay only: the phase of unpainted (grey) pixels, by id or name",
    "masks.tolerance": "colours within this many levels (0-255) per channel of a phase colour count as it "
                       "(JPEG and other lossy files)",
    "masks.pattern": "a mask's file name without extension, {stem} standing for its micrograph's; the default "
                     "{stem} also matches {stem}_mask, {stem}-label, {stem}_gt ...",
}


@dataclass
class SchemaDraft:
    """A proposed schema and what was found in the masks, in words."""

    schema: PhaseSchema
    findings: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        """Write the draft as ``schema.json`` with a ``"help"`` entry explaining every field."""
        path = Path(path)
        self.schema.save(path)
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "help": FIELD_HELP}, indent=2) + "\n")
        return path

    def as_text(self) -> str:
        """The findings, the proposed phases and encoding, and what to edit."""
        masks = self.schema.masks
        lines = ["what the masks hold:", *(f"  - {f}" for f in self.findings), "proposed phases (rename them):"]
        lines += [f"  {p.id}  {p.name:<24s} colour {p.color}" for p in self.schema.phases]
        background = "" if masks.background is None else f", background phase {masks.background}"
        lines.append(f"masks: encoding {masks.encoding}{background}, tolerance {masks.tolerance}, "
                     f"pattern {masks.pattern!r}")
        lines.append("fields:")
        lines += [f"  {key:<17s}{text}" for key, text in FIELD_HELP.items()]
        return "\n".join(lines)


@dataclass
class _Mask:
    kind: str  # "values", "overlay", "color" or "instances"
    counts: Counter  # value (int) or colour (r, g, b) -> pixels; painted colours only for an overlay
    bits16: bool


def _inspect(path: Path) -> _Mask:
    data = mask_array(path)
    bits16 = data.dtype == np.uint16
    if data.ndim == 3 and data.shape[2] == 3 and np.all(data.max(axis=2) == data.min(axis=2)):
        data = data[..., 0]  # RGB with equal channels
    if data.ndim == 2:
        if not np.issubdtype(data.dtype, np.integer) and not np.all(data == np.round(data)):
            raise ValueError(f"{path}: mask holds non-integer values")
        values, counts = np.unique(data.astype(np.int64), return_counts=True)
        return _Mask("values", Counter(dict(zip(values.tolist(), counts.tolist()))), bits16)
    if data.ndim != 3 or data.shape[2] != 3:
        raise ValueError(f"{path}: mask has shape {data.shape}; expected one channel or RGB(A)")
    rgb = eight_bit_colours(data).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    unique, counts = np.unique(codes, return_counts=True)
    colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unique.tolist()]
    grey = [c[0] == c[1] == c[2] for c in colours]
    grey_pixels = sum(n for n, g in zip(counts.tolist(), grey) if g)
    if grey_pixels >= _OVERLAY_GREY_SHARE * codes.size and sum(grey) > _OVERLAY_GREY_LEVELS:
        painted = {c: n for c, n, g in zip(colours, counts.tolist(), grey) if not g}
        return _Mask("overlay", Counter(painted), bits16)
    if len(colours) <= _MAX_LEGEND_COLOURS:
        return _Mask("color", Counter(dict(zip(colours, counts.tolist()))), bits16)
    return _Mask("instances", Counter(), bits16)


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return max(abs(x - y) for x, y in zip(a, b))


def _legend(counts: Counter) -> tuple[list[tuple[int, int, int]], int, str | None]:
    """The colours that are phases (most pixels first), the tolerance that takes in the rare rest, and a
    note on the rare colours (None when there are none)."""
    total = sum(counts.values())
    major = [c for c, n in counts.most_common() if n >= _MIN_COLOUR_SHARE * total]
    minor = {c: n for c, n in counts.items() if c not in major}
    if not minor:
        return major, 0, None
    off = {c: min(_distance(c, m) for m in major) for c in minor}
    gaps = [_distance(p, q) for i, p in enumerate(major) for q in major[i + 1:]]
    tolerance = min([max(off.values()), _MAX_TOLERANCE, *((g - 1) // 2 for g in gaps)])
    left_out = sum(n for c, n in minor.items() if off[c] > tolerance)
    note = (f"{len(minor)} rare colours ({sum(minor.values())} px) are not phases"
            + (f"; tolerance {tolerance} takes them to the nearest phase colour" if tolerance else "")
            + (f"; {left_out} px are further off and will be reported as unknown colours" if left_out else ""))
    return major, tolerance, note


def _colour_name(colour: tuple[int, int, int]) -> str:
    return _COLOUR_NAMES.get(colour, f"colour {colour[0]},{colour[1]},{colour[2]}")


def _share_text(counts: Counter, keys: list, total: int) -> str:
    return ", ".join(f"{k} {counts[k] / total:.1%}" for k in keys[:12]) + (" ..." if len(keys) > 12 else "")


def propose_schema(folder: str | Path, progress: ProgressFn = no_progress,
                   should_stop: StopFn = never_stop) -> SchemaDraft:
    """Inspect every mask of ``folder`` (``images/`` + ``masks/``) and propose a schema for them.

    Raises ``ValueError`` when no mask is named after a micrograph (:data:`~.datasets.NO_MASKS`).
    """
    folder = Path(folder)
    entries, orphans = paired_files(folder)
    pairs = [e for e in entries if e.mask is not None]
    if not pairs:
        found = f"; masks/ holds {', '.join(orphans[:5])}" + (" ..." if len(orphans) > 5 else "") if orphans else ""
        raise ValueError(f"{folder}: {NO_MASKS}{found}")
    inspected = []
    for i, entry in enumerate(pairs):
        check_stop(should_stop)
        progress(i, len(pairs), f"inspecting {entry.mask.name}")
        inspected.append(_inspect(entry.mask))
    progress(len(pairs), len(pairs), "done")

    suffixes = {e.mask.stem[len(e.name):] for e in pairs}
    pattern = "{stem}" + suffixes.pop() if len(suffixes) == 1 else "{stem}"
    types = Counter(e.mask.suffix.lower() for e in pairs)
    findings = [f"{len(pairs)} masks ({', '.join(f'{n} {t}' for t, n in types.items())}) for {len(entries)} "
                f"micrographs" + (f", named {pattern}" if pattern != "{stem}" else "")]
    if len(pairs) < len(entries):
        findings.append(f"{len(entries) - len(pairs)} micrographs have no mask (they stay unlabelled)")
    if orphans:
        findings.append(f"{len(orphans)} mask files are named after no micrograph: {', '.join(orphans[:5])}")
    n_16 = sum(m.bits16 for m in inspected)
    if n_16:
        findings.append(f"16-bit masks: {n_16}; their colours are read as 8-bit (value / 257)")
    kinds = Counter(m.kind for m in inspected)
    kind = kinds.most_common(1)[0][0]
    if len(kinds) > 1:
        findings.append("the masks differ: " + ", ".join(f"{n} look like {k}" for k, n in kinds.items())
                        + f"; the draft follows the {kind} ones")
    counts: Counter = sum((m.counts for m in inspected if m.kind == kind), Counter())
    total = sum(counts.values())

    if kind == "instances":
        findings.append("many colours, few grey pixels: one colour per grain (grain / boundary classes)")
        grains = PhaseSchema.bundled("grains")
        return SchemaDraft(PhaseSchema(folder.name, grains.phases, description=grains.description,
                                       masks=MaskFiles("instances", pattern=pattern)), findings)
    if kind == "values":
        values = sorted(counts)
        findings.append(f"one channel, values {_share_text(counts, values, total)}")
        if values[0] >= 0 and values[-1] <= _MAX_INDEX:
            unused = sorted(set(range(values[-1] + 1)) - set(values))
            if unused:
                findings.append(f"class ids {unused} never occur")
            phases = [Phase(v, f"class {v}", _PALETTE[v % len(_PALETTE)]) for v in range(values[-1] + 1)]
            masks = MaskFiles("index", pattern=pattern)
        else:
            findings.append("not class ids 0..n-1: each grey level is a phase")
            phases = [Phase(i, f"grey {v}", (v, v, v)) for i, v in enumerate(values)]
            masks = MaskFiles("color", pattern=pattern)
    else:
        colours, tolerance, note = _legend(counts)
        what = "painted colours over the grey micrograph" if kind == "overlay" else "colours"
        findings.append(f"{what}: {_share_text(counts, colours, total)} of the "
                        f"{'painted' if kind == 'overlay' else 'mask'} pixels")
        findings += [note] if note else []
        phases = [Phase(i, _colour_name(c), c) for i, c in enumerate(colours)]
        if kind == "overlay":
            findings.append("grey pixels are the micrograph showing through: phase 0 'background (unpainted)'")
            phases = [Phase(0, "background (unpainted)", _BACKGROUND_COLOUR),
                      *(Phase(p.id + 1, p.name, p.color) for p in phases)]
            masks = MaskFiles("overlay", background=0, tolerance=tolerance, pattern=pattern)
        else:
            masks = MaskFiles("color", tolerance=tolerance, pattern=pattern)
    description = (f"Draft proposed from the {len(pairs)} masks of {folder} by 'microsynth describe --propose-schema': "
                   "rename the phases")
    return SchemaDraft(PhaseSchema(folder.name, tuple(phases), description=description, masks=masks), findings)
