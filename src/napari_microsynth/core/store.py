"""The dataset store: a zarr v3 folder holding micrograph + mask samples with provenance.

It is the exchange format of the whole tool: the curation widget appends accepted pairs to it, training
reads it, ``core.folder_export.export_folder`` turns it into plain image/mask files plus a CSV.

>>> store = DatasetStore.create("pairs.zarr", PhaseSchema.bundled("uhcs"))   # doctest: +SKIP
>>> index = store.append(sample, split="train")                                # doctest: +SKIP
>>> store[index].provenance.origin                                             # doctest: +SKIP
'real'

Layout (one zarr group per sample, because samples have different sizes: whole micrographs of
1024x703 or 1280x895 next to 256x256 tiles; a ragged per-sample layout stores each at its own shape
without padding and lets a new sample be added without touching the arrays of earlier ones)::

    store.zarr/                      root group, attributes:
        napari_microsynth            {"format": "napari-microsynth-dataset", "version": 1, "image_dtype": ...}
        schema                       PhaseSchema.to_dict()
        description                  free text
        count                        number of committed samples (the commit point, see below)
        splits                       {split name: [sample indices]}
      samples/000000/                one group per sample, attributes: name, pixel_size_um, properties,
                                     provenance (Provenance.to_dict()), class_counts, status,
                                     mask_array (which mask array is current), mask_history
          image                      (H, W) float32 in [0, 1], or uint8/uint16 (see image_dtype)
          mask                       (H, W) class ids as written first (never changed)
          mask_v1, mask_v2, ...      corrected masks written by ``replace_mask``
          instances                  optional (H, W) int32 instance labels

Images: stored as float32 by default, so ``store[i].image`` is bit-identical to what was appended.
``create(..., image_dtype="uint8"|"uint16")`` quantises to ``round(x * 255)`` / ``round(x * 65535)`` and
reads back ``q / 255`` / ``q / 65535`` (float32): 4x / 2x smaller, exact for images that came from 8-bit /
16-bit files, otherwise within half a quantisation step (0.5/255, 0.5/65535).

Masks: stored in the smallest integer type that holds every class id and the ignore id of the schema
(uint8 for up to 255 values), and read back in that type.

Crash safety: a sample's arrays and attributes are written first, and only then the root ``count`` (and
the split lists) are updated in one metadata write. zarr's local store replaces each file atomically
(temporary file + rename), so a process killed at any point leaves either the old or the new count, and
every sample below the count complete. A half-written sample group above the count is ignored, reported
by ``incomplete`` (with a warning on open) and overwritten by the next append. Appending never
rewrites the arrays of existing samples; mask corrections add a new mask array and keep the original.

One writer at a time: a store opened for writing (``create`` or ``open(mode="a")``) holds an OS lock on
its ``.write.lock`` file until :meth:`DatasetStore.close` (or the end of the process; the operating system
drops the lock of a killed process, so a stale lock never blocks). Another process that tries to write
gets :class:`StoreLockedError` naming the writer's process id; handles within one process share the lock.
Reading is always allowed.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .fractions import class_counts, fractions_from_counts
from .progress import ProgressFn, StopFn, check_stop, never_stop, no_progress
from .sample import ORIGINS, STATUSES, Provenance, Sample, jsonable
from .schema import PhaseSchema

FORMAT_NAME = "napari-microsynth-dataset"
FORMAT_VERSION = 1
FORMAT_KEY = "napari_microsynth"
IMAGE_DTYPES = ("float32", "uint8", "uint16")
_CHUNK = 512
_SAMPLE_KEYS = ("name", "pixel_size_um", "properties", "provenance", "class_counts", "status", "mask_array")
LOCK_FILE = ".write.lock"


class StoreError(ValueError):
    """A dataset store is missing, of another format, or damaged; the message says what and where."""


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class IncompleteWriteWarning(UserWarning):
    """An earlier write was interrupted; the partly written sample is ignored."""


# (device, inode) of a lock file -> [its open file holding the OS lock, number of handles in this process]
_HELD: dict[tuple[int, int], list] = {}
_HELD_GUARD = threading.Lock()


def _os_lock(handle) -> None:
    """Take an exclusive, non-blocking OS lock on an open file; OSError when another process holds it."""
    if os.name == "nt":
        import msvcrt

        handle.seek(1 << 20)  # a byte past the process id, which others must still be able to read
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock(path: Path) -> tuple[int, int]:
    """Take the single-writer lock of the store at ``path`` for this process; returns the key to release it."""
    handle = open(path / LOCK_FILE, "a+")
    info = os.fstat(handle.fileno())
    key = (info.st_dev, info.st_ino)
    with _HELD_GUARD:
        if key in _HELD:
            handle.close()
            _HELD[key][1] += 1
            return key
        try:
            _os_lock(handle)
        except OSError:
            try:
                handle.seek(0)
                owner = f"process {int(handle.read().strip())}"
            except (OSError, ValueError):
                owner = "another process"
            handle.close()
            raise StoreLockedError(
                f"store {path} is being written by {owner}; only one program may write to a store at a time "
                "(wait for it to finish or stop it, or write to another store)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[key] = [handle, 1]
    return key


def _unlock(key: tuple[int, int]) -> None:
    with _HELD_GUARD:
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            entry[0].close()  # closing the file drops the OS lock


@contextmanager
def removed_if_left_empty(path: str | Path) -> Iterator[None]:
    """Around a command that may create the store at ``path``: when the block fails (or is interrupted)
    and leaves a store it created without a sample, remove that store, so the same command can run again.

    >>> with removed_if_left_empty("pairs.zarr"):                       # doctest: +SKIP
    ...     store = DatasetStore.create("pairs.zarr", schema); store.append(bad_sample)
    """
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed and is_store(path):
            count = json.loads((path / "zarr.json").read_text())["attributes"].get("count")
            if count == 0:
                shutil.rmtree(path, ignore_errors=True)
        raise


def has_store_metadata(path: str | Path) -> bool:
    """True when ``path`` is a folder with a root ``zarr.json``: a store, or a damaged one whose opening
    says what is wrong (rather than treating it as a folder of image files)."""
    return (Path(path) / "zarr.json").is_file()


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a napari-microsynth dataset store (cheap: reads one file)."""
    meta = Path(path) / "zarr.json"
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    attrs = data.get("attributes") if isinstance(data, dict) else None
    fmt = attrs.get(FORMAT_KEY) if isinstance(attrs, dict) else None
    return isinstance(fmt, dict) and fmt.get("format") == FORMAT_NAME


def _class_counts(mask: np.ndarray, schema: PhaseSchema) -> np.ndarray:
    """Pixels per class; raises naming any value the schema does not define."""
    schema.validate_mask(mask)
    return class_counts(mask, schema.n_classes, schema.ignore_id)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(_CHUNK, max(1, int(s))) for s in shape)


def _node_metadata(folder: Path, node_type: str) -> dict[str, Any]:
    """The parsed ``zarr.json`` of a zarr node of ``node_type`` ("group" or "array"); StoreError naming
    the file when it is missing, not JSON or not such a node."""
    meta_file = folder / "zarr.json"
    try:
        data = json.loads(meta_file.read_bytes())
    except FileNotFoundError:
        raise StoreError(f"{meta_file} is missing") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{meta_file} is damaged (not readable JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("node_type") != node_type or data.get("zarr_format") != 3:
        raise StoreError(f"{meta_file} is damaged (not the metadata of a zarr v3 {node_type})")
    if node_type == "array":
        try:
            [int(n) for n in data["shape"]], np.dtype(str(data["data_type"]))
            [int(c) for c in data["chunk_grid"]["configuration"]["chunk_shape"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{meta_file} is damaged (no valid shape, data type or chunk shape: {exc})") from None
    return data


def _root_attributes(path: Path) -> dict[str, Any]:
    """The root attributes of the store at ``path``, checked; StoreError saying what is wrong."""
    try:
        attrs = _node_metadata(path, "group").get("attributes", {})
    except StoreError as exc:
        if not (path / "zarr.json").exists():
            raise StoreError(f"{path} is not a dataset store (no zarr.json)") from None
        raise StoreError(f"{path} is not a readable dataset store: {exc}") from None
    fmt = attrs.get(FORMAT_KEY)
    if not isinstance(fmt, dict) or fmt.get("format") != FORMAT_NAME:
        raise StoreError(
            f"{path} is a zarr group but not a napari-microsynth dataset store (no {FORMAT_KEY!r} attribute)"
        )
    version = fmt.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {version!r} is not supported (this program reads up to "
            f"version {FORMAT_VERSION}; update napari-microsynth)"
        )
    if fmt.get("image_dtype") not in IMAGE_DTYPES:
        raise StoreError(f"{path}: unknown image_dtype {fmt.get('image_dtype')!r}, expected one of {IMAGE_DTYPES}")
    if "schema" not in attrs:
        raise StoreError(f"{path}: the store has no phase schema (root attribute 'schema' is missing)")
    try:
        PhaseSchema.from_dict(attrs["schema"])
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{path}: the stored phase schema is invalid: {exc}") from exc
    if not isinstance(attrs.get("count"), int) or attrs["count"] < 0:
        raise StoreError(f"{path}: root attribute 'count' must be a non-negative integer, got {attrs.get('count')!r}")
    if not (path / "samples").is_dir():
        raise StoreError(f"{path}: the 'samples' group is missing")
    return attrs


class DatasetStore:
    """A zarr v3 dataset of :class:`~napari_microsynth.core.sample.Sample` objects (see the module doc).

    Create with :meth:`create`, open with :meth:`open`; ``len(store)``, ``store[i]`` and iteration give
    the committed samples in append order.
    """

    def __init__(self, root, path: Path, writable: bool) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self._root = root
        self.path = path
        self.writable = writable
        self._release = weakref.finalize(self, _unlock, _lock(path)) if writable else None
        attrs = dict(root.attrs)
        self._format = dict(attrs[FORMAT_KEY])
        self.schema = PhaseSchema.from_dict(attrs["schema"])
        self.description = str(attrs.get("description", ""))
        self._count = int(attrs["count"])
        self._splits: dict[str, list[int]] = {k: [int(i) for i in v] for k, v in attrs.get("splits", {}).items()}
        self._samples_group = root["samples"]
        self._unfinished = attrs.get("unfinished")
        self._meta: list[dict[str, Any]] = []
        self.incomplete: list[str] = []

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(
        cls,
        path: str | Path,
        schema: PhaseSchema,
        description: str = "",
        overwrite: bool = False,
        image_dtype: str = "float32",
    ) -> "DatasetStore":
        """Create an empty store at ``path`` for masks of ``schema``.

        An existing path is refused unless ``overwrite=True``, and even then only an existing dataset
        store or an empty folder is replaced (never an unrelated folder). ``image_dtype`` is
        ``"float32"`` (exact, default), ``"uint8"`` or ``"uint16"`` (quantised, see the module doc).
        """
        import zarr

        path = Path(path)
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
        if not isinstance(schema, PhaseSchema):
            raise TypeError(f"schema must be a PhaseSchema, got {type(schema).__name__}")
        if path.exists():
            if not (path.is_dir() and (is_store(path) or not any(path.iterdir()))):
                raise FileExistsError(
                    f"{path} exists and is not a napari-microsynth store; refusing to delete or write into it "
                    "(choose a new path or remove it yourself)"
                )
            if not overwrite:
                raise FileExistsError(f"{path} already exists; replace it with --overwrite")
            if is_store(path):
                key = _lock(path)  # refuses a store another process is writing
                shutil.rmtree(path)
                _unlock(key)
            else:
                path.rmdir()
        root = zarr.open_group(path, mode="w-", zarr_format=3)
        root.create_group("samples")
        from .. import __version__

        root.update_attributes(
            {
                FORMAT_KEY: {
                    "format": FORMAT_NAME,
                    "version": FORMAT_VERSION,
                    "image_dtype": image_dtype,
                    "package_version": __version__,
                    "chunks_complete": True,
                },
                "schema": schema.to_dict(),
                "description": str(description),
                "count": 0,
                "splits": {},
            }
        )
        return cls(root, path, writable=True)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", check_data: bool = False) -> "DatasetStore":
        """Open an existing store read-only (``mode="r"``) or for appending and curation (``mode="a"``).

        Opening checks the structure, quickly (a few small files per sample, no array data): the format
        version, the schema, and for every committed sample its attributes, its image and mask arrays (2-D,
        same shape, dtypes) and that every chunk file of them is there. ``check_data`` also reads every
        image and mask, checking that each decodes and that the masks' values and class counts agree with
        the schema and the stored counts (``microsynth describe --full``). Problems raise
        :class:`StoreError` listing them; a chunk damaged later is reported when it is read.
        """
        import zarr

        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no dataset store at {path}")
        _root_attributes(path)
        root = zarr.open_group(path, mode="r" if mode == "r" else "r+")
        store = cls(root, path, writable=(mode == "a"))
        store._validate(check_data)
        return store

    def _validate(self, check_data: bool) -> None:
        """Check every committed sample (see :meth:`open`); collect all problems into one StoreError."""
        problems: list[str] = []
        self._meta = []
        for i in range(self._count):
            meta, found = self._check_sample(i, check_data)
            self._meta.append(meta)
            problems += found
        for name, indices in self._splits.items():
            bad = [i for i in indices if not 0 <= i < self._count]
            if bad:
                problems.append(
                    f"split {name!r} refers to samples {bad[:10]} that do not exist (store has {self._count})"
                )
        if problems:
            shown = "\n  - ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise StoreError(f"dataset store {self.path} is damaged:\n  - {shown}{more}")
        self.incomplete = sorted(
            k for k in self._samples_group.group_keys() if not (k.isdigit() and int(k) < self._count)
        )
        if self.incomplete:
            warnings.warn(
                f"{self.path}: ignoring {len(self.incomplete)} incompletely written sample group(s) "
                f"{self.incomplete[:5]} left by an interrupted write; the next append overwrites them",
                IncompleteWriteWarning,
                stacklevel=3,
            )

    def _check_sample(self, index: int, check_data: bool) -> tuple[dict[str, Any], list[str]]:
        """The attributes of committed sample ``index`` and the problems found in it (read from its JSON
        files directly, which is many times faster than through zarr)."""
        key = self._key(index)
        where = f"sample {index} (samples/{key})"
        folder = self.path / "samples" / key
        if not folder.is_dir():
            return {}, [f"{where} is missing"]
        try:
            meta = _node_metadata(folder, "group").get("attributes", {})
        except StoreError as exc:
            return {}, [f"{where}: {exc}"]
        missing = [k for k in _SAMPLE_KEYS if k not in meta]
        if missing:
            return meta, [f"{where} lacks attributes {missing}"]
        problems = []
        try:
            Provenance.from_dict(meta["provenance"])
        except (TypeError, ValueError) as exc:
            problems.append(f"{where} has invalid provenance: {exc}")
        if meta["status"] not in STATUSES:
            problems.append(f"{where} has status {meta['status']!r}, expected one of {STATUSES}")
        if len(meta["class_counts"]) != self.schema.n_classes:
            problems.append(f"{where} has {len(meta['class_counts'])} class counts but the schema "
                            f"{self.schema.name!r} has {self.schema.n_classes} classes")
        arrays = {}
        for role, name in (("image", "image"), ("mask", meta["mask_array"])):
            if not (folder / name).is_dir():
                problems.append(f"{where} has no {role} array" + (f" {name!r}" if role == "mask" else ""))
                continue
            try:
                arrays[role] = _node_metadata(folder / name, "array")
            except StoreError as exc:
                problems.append(f"{where}: {role} array: {exc}")
        if len(arrays) < 2:
            return meta, problems
        image, mask = arrays["image"], arrays["mask"]
        if len(image["shape"]) != 2:
            problems.append(f"{where}: image must be 2-D, got shape {tuple(image['shape'])}")
        if image["shape"] != mask["shape"]:
            problems.append(f"{where}: image shape {tuple(image['shape'])} differs from mask shape "
                            f"{tuple(mask['shape'])}")
        if image["data_type"] != self.image_dtype:
            problems.append(f"{where}: image dtype {image['data_type']} differs from the store's {self.image_dtype}")
        if not np.issubdtype(np.dtype(str(mask["data_type"])), np.integer):
            return meta, problems + [f"{where}: mask dtype {mask['data_type']} is not an integer type"]
        lost = (self._missing_chunks(folder / "image", image) + self._missing_chunks(folder / meta["mask_array"], mask)
                if self._chunks_complete else [])
        problems += [f"{where}: {p}" for p in lost]
        if check_data and not lost and image["shape"] == mask["shape"]:
            problems += [f"{where}: {p}" for p in self._check_data(index, meta)]
        return meta, problems

    def _check_data(self, index: int, meta: dict[str, Any]) -> list[str]:
        """Problems of the data of a sample whose structure is sound: undecodable chunks, mask values the
        schema does not define, class counts that disagree with the mask."""
        try:
            self._read(index, "image")
            counts = _class_counts(self._read(index, meta["mask_array"]), self.schema)
        except (StoreError, ValueError) as exc:
            return [str(exc)]
        if counts.tolist() != list(meta["class_counts"]):
            return [f"stored class counts {meta['class_counts']} disagree with the mask ({counts.tolist()})"]
        return []

    @property
    def _chunks_complete(self) -> bool:
        """Whether every chunk of every array was written (stores written before this flag existed skip
        chunks that hold only zeros, so a missing chunk there is not damage)."""
        return bool(self._format.get("chunks_complete"))

    @staticmethod
    def _missing_chunks(folder: Path, array: dict[str, Any]) -> list[str]:
        """Missing chunk files of an array (shape and chunk shape from its metadata)."""
        shape = array["shape"]
        chunks = array["chunk_grid"]["configuration"]["chunk_shape"]
        grid = [range(-(-int(n) // max(1, int(c)))) for n, c in zip(shape, chunks)]
        missing = [idx for idx in np.ndindex(*(len(g) for g in grid))
                   if not (folder / "c").joinpath(*map(str, idx)).is_file()]
        if not missing:
            return []
        listed = ", ".join("c/" + "/".join(map(str, idx)) for idx in missing[:3])
        return [f"{len(missing)} chunk file(s) of {folder.name} are missing ({listed}); restore the store from a "
                "backup or rewrite the sample"]

    def _read(self, index: int, name: str) -> np.ndarray:
        """The data of array ``name`` of sample ``index``; a missing or undecodable chunk raises StoreError
        naming it (never zeros in its place)."""
        where = f"{self.path}: sample {index} (samples/{self._key(index)}/{name})"
        array = self._group(index)[name]
        if self._chunks_complete:
            metadata = {"shape": list(array.shape), "chunk_grid": {"configuration": {"chunk_shape": list(array.chunks)}}}
            lost = self._missing_chunks(self.path / "samples" / self._key(index) / name, metadata)
            if lost:
                raise StoreError(f"{where}: {lost[0]}")
        try:
            return array[...]
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise StoreError(f"{where}: a chunk cannot be decoded ({exc}); the store is damaged") from None

    # ------------------------------------------------------------------ basic access
    @staticmethod
    def _key(index: int) -> str:
        return f"{index:06d}"

    @property
    def image_dtype(self) -> str:
        return str(self._format["image_dtype"])

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Release the write lock (a read-only store holds none); the store is read-only afterwards."""
        if self._release is not None:
            self._release()
        self.writable = False

    def __enter__(self) -> "DatasetStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DatasetStore({str(self.path)!r}, schema={self.schema.name!r}, samples={self._count})"

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"sample index must be an integer, got {type(index).__name__}")
        i = int(index) + (self._count if index < 0 else 0)
        if not 0 <= i < self._count:
            raise IndexError(f"sample index {index} out of range for a store with {self._count} samples")
        return i

    def _group(self, index: int):
        return self._samples_group[self._key(index)]

    def _require_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only (or closed); use DatasetStore.open(path, mode='a')")

    def __getitem__(self, index: int) -> Sample:
        i = self._index(index)
        group = self._group(i)
        meta = self._meta[i]
        instances = group.get("instances")
        return Sample(
            image=self._decode_image(self._read(i, "image")),
            schema=self.schema,
            mask=self._read(i, meta["mask_array"]),
            name=meta["name"],
            pixel_size_um=meta["pixel_size_um"],
            properties=dict(meta["properties"]),
            provenance=Provenance.from_dict(meta["provenance"]),
            instances=None if instances is None else self._read(i, "instances"),
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self._count):
            yield self[i]

    def image(self, index: int) -> np.ndarray:
        """Float32 image of one sample, without reading its mask."""
        return self._decode_image(self._read(self._index(index), "image"))

    def mask(self, index: int, version: str | None = None) -> np.ndarray:
        """Current mask of a sample, or an older version by array name (see :meth:`mask_versions`)."""
        i = self._index(index)
        name = self._meta[i]["mask_array"] if version is None else version
        if name not in self.mask_versions(i):
            raise KeyError(f"sample {i} has no mask version {name!r}; versions: {self.mask_versions(i)}")
        return self._read(i, name)

    def mask_versions(self, index: int) -> list[str]:
        """Mask array names of a sample, oldest first (``"mask"`` is the one first appended)."""
        i = self._index(index)
        return ["mask"] + [entry["array"] for entry in self._meta[i].get("mask_history", [])]

    def shape(self, index: int) -> tuple[int, int]:
        """(H, W) of a sample without reading its data."""
        return tuple(self._group(self._index(index))["image"].shape)  # type: ignore[return-value]

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self._meta]

    @property
    def splits(self) -> dict[str, list[int]]:
        """Split name -> sample indices (a copy)."""
        return {k: list(v) for k, v in self._splits.items()}

    def provenance(self, index: int) -> Provenance:
        return Provenance.from_dict(self._meta[self._index(index)]["provenance"])

    def pixel_size_um(self, index: int) -> float | None:
        return self._meta[self._index(index)]["pixel_size_um"]

    def properties(self, index: int) -> dict[str, float]:
        return dict(self._meta[self._index(index)]["properties"])

    def status(self, index: int) -> str:
        return str(self._meta[self._index(index)]["status"])

    def statuses(self) -> list[str]:
        return [str(m["status"]) for m in self._meta]

    def class_counts(self) -> np.ndarray:
        """``(N, C)`` int64 pixel counts per class of the current masks (ignore id skipped)."""
        return np.array([m["class_counts"] for m in self._meta], dtype=np.int64).reshape(-1, self.schema.n_classes)

    def fractions(self) -> np.ndarray:
        """``(N, C)`` phase fractions of the current masks, without reading any image or mask.

        A sample whose mask is entirely the ignore id has a row of NaN.
        """
        return fractions_from_counts(self.class_counts())

    @property
    def unfinished(self) -> str | None:
        """Why the store is not finished (e.g. an export in progress or interrupted), None when it is."""
        return self._unfinished

    def set_unfinished(self, note: str | None) -> None:
        """Mark the store unfinished with ``note`` (what is being written and how to finish it), or
        finished with None; ``describe`` reports it and readers of whole datasets refuse it."""
        self._require_writable()
        self._root.update_attributes({"unfinished": note})
        self._unfinished = note

    def describe(self) -> str:
        """A short text summary: schema, sample count, origins, curation states, splits, mean fractions."""
        from collections import Counter

        origins = Counter(m["provenance"]["origin"] for m in self._meta)
        states = Counter(self.statuses())
        lines = [
            f"dataset store {self.path}",
            f"  schema       {self.schema.name}: {', '.join(self.schema.names)}",
            f"  samples      {len(self)}" + (f" ({self.description})" if self.description else ""),
            f"  images       {self.image_dtype}",
            "  origins      " + (", ".join(f"{k} {v}" for k, v in sorted(origins.items())) or "-"),
            "  status       " + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "-"),
            "  splits       " + (", ".join(f"{k} {len(v)}" for k, v in self._splits.items()) or "-"),
        ]
        if len(self):
            mean = np.nanmean(self.fractions(), axis=0)
            lines.append("  mean fractions " + ", ".join(f"{n} {f:.1%}" for n, f in zip(self.schema.names, mean)))
        if self.incomplete:
            lines.append(f"  ignored      {len(self.incomplete)} incompletely written sample group(s)")
        if self.unfinished:
            lines.append(f"  UNFINISHED   {self.unfinished}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ encoding
    def _encode_image(self, image: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(image)):
            raise ValueError("image holds NaN or infinite values; expected float values in [0, 1]")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"image values must lie in [0, 1], got {lo:.4g}..{hi:.4g}; rescale or clip first")
        if self.image_dtype == "float32":
            return image.astype(np.float32, copy=False)
        scale = 255.0 if self.image_dtype == "uint8" else 65535.0
        return np.round(image.astype(np.float64) * scale).astype(self.image_dtype)

    def _decode_image(self, data: np.ndarray) -> np.ndarray:
        if self.image_dtype == "float32":
            return data.astype(np.float32, copy=False)
        scale = np.float32(255.0 if self.image_dtype == "uint8" else 65535.0)
        return data.astype(np.float32) / scale

    def _write_array(self, group, name: str, data: np.ndarray) -> None:
        array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=_chunks(data.shape), overwrite=True,
                                   config={"write_empty_chunks": True})  # every chunk on disk: a missing one is damage
        array[...] = data

    # ------------------------------------------------------------------ writing
    def append(self, sample: Sample, split: str | Iterable[str] | None = None, status: str = "pending") -> int:
        """Add one sample (it must have a mask of this store's schema); returns its index.

        ``split`` adds the index to that split (a list of names: to each, e.g. ``train`` and a fold);
        ``status`` is the curation state (one of ``STATUSES``).
        """
        self._require_writable()
        if not isinstance(sample, Sample):
            raise TypeError(f"expected a Sample, got {type(sample).__name__}")
        if sample.mask is None:
            raise ValueError(f"sample {sample.name!r} has no mask; the store holds image + mask pairs")
        if sample.schema != self.schema:
            raise ValueError(
                f"sample {sample.name!r} uses schema {sample.schema.name!r} ({', '.join(sample.schema.names)}) "
                f"but the store uses {self.schema.name!r} ({', '.join(self.schema.names)})"
            )
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        split_names = [] if split is None else [split] if isinstance(split, str) else list(split)
        if not all(isinstance(name, str) and name for name in split_names):
            raise ValueError(f"split must be a non-empty name or a list of them, got {split!r}")
        counts = _class_counts(sample.mask, self.schema)
        image = self._encode_image(sample.image)
        index = self._count
        meta = {
            "name": sample.name or f"sample_{index:06d}",
            "pixel_size_um": None if sample.pixel_size_um is None else float(sample.pixel_size_um),
            "properties": {str(k): float(v) for k, v in sample.properties.items()},
            "provenance": jsonable(sample.provenance.to_dict()),
            "class_counts": counts.tolist(),
            "status": status,
            "mask_array": "mask",
            "mask_history": [],
        }
        group = self._samples_group.create_group(self._key(index), overwrite=True, attributes=meta)
        self._write_array(group, "image", image)
        self._write_array(group, "mask", sample.mask.astype(self.schema.mask_dtype, copy=False))
        if sample.instances is not None:
            self._write_array(group, "instances", np.asarray(sample.instances).astype(np.int32, copy=False))
        splits = self.splits
        for name in dict.fromkeys(split_names):
            splits.setdefault(name, []).append(index)
        # The commit point: one atomic rewrite of the root metadata.
        self._root.update_attributes({"count": index + 1, "splits": splits})
        self._count = index + 1
        self._splits = splits
        self._meta.append(meta)
        if self._key(index) in self.incomplete:
            self.incomplete.remove(self._key(index))
        return index

    def extend(
        self,
        samples: Iterable[Sample],
        split: str | None = None,
        progress: ProgressFn = no_progress,
        should_stop: StopFn = never_stop,
        status: str = "pending",
    ) -> list[int]:
        """Append many samples (a list or a generator); each is committed as soon as it is written.

        Raises :class:`Cancelled` when ``should_stop()`` turns true; samples appended so far stay.
        ``progress`` gets ``total=0`` when ``samples`` has no length.
        """
        total = len(samples) if hasattr(samples, "__len__") else 0  # type: ignore[arg-type]
        indices: list[int] = []
        for sample in samples:
            check_stop(should_stop)
            indices.append(self.append(sample, split=split, status=status))
            progress(len(indices), total, f"stored {sample.name or len(indices)}")
        return indices

    def _write_sample_attrs(self, index: int, meta: dict[str, Any]) -> None:
        self._group(index).update_attributes(meta)
        self._meta[index] = meta

    def set_split(self, name: str, indices: Iterable[int]) -> None:
        """Make split ``name`` hold exactly ``indices`` (sorted, duplicates dropped)."""
        self._require_writable()
        if not isinstance(name, str) or not name:
            raise ValueError(f"split name must be a non-empty string, got {name!r}")
        values = sorted({self._index(int(i)) for i in indices})
        splits = self.splits
        splits[name] = values
        self._root.update_attributes({"splits": splits})
        self._splits = splits

    def set_status(self, index: int, status: str, rule: str | None = None) -> None:
        """Curation state of a sample: ``pending``, ``accepted``, ``rejected`` or ``flagged``, and the batch
        ``rule`` that set it (None: a person did, one pair at a time); see :meth:`status_rule`.

        Rejected samples stay in the store (nothing is deleted) but are left out of ``export_folder``.
        """
        self._require_writable()
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        i = self._index(index)
        self._write_sample_attrs(i, {**self._meta[i], "status": status, "status_rule": rule})

    def status_rule(self, index: int) -> str | None:
        """The batch rule that set the sample's status, in words (None: set by hand, or never changed)."""
        return self._meta[self._index(index)].get("status_rule")

    def replace_mask(self, index: int, mask: np.ndarray, origin: str = "corrected") -> None:
        """Store a corrected mask for a sample as a new array version; the original stays readable.

        The sample's provenance gets ``origin`` and ``changed_pixels`` (pixels that differ from the
        originally appended mask); the origin it had before is kept in ``provenance.extra["original_origin"]``.
        Class counts and fractions follow the new mask.
        """
        self._require_writable()
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
        i = self._index(index)
        mask = np.asarray(mask)
        if mask.shape != self.shape(i):
            raise ValueError(f"new mask shape {mask.shape} differs from sample {i}'s shape {self.shape(i)}")
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}")
        counts = _class_counts(mask, self.schema)
        meta = self._meta[i]
        history = list(meta.get("mask_history", []))
        array_name = f"mask_v{len(history) + 1}"
        changed = int(np.count_nonzero(self._read(i, "mask") != mask))
        group = self._group(i)
        self._write_array(group, array_name, mask.astype(self.schema.mask_dtype, copy=False))
        provenance = jsonable(Provenance.from_dict(meta["provenance"]).corrected(changed, origin).to_dict())
        history.append({"array": array_name, "origin": origin, "changed_pixels": changed})
        # The new array is written before the attributes point to it, so a crash keeps the old mask current.
        self._write_sample_attrs(
            i,
            {
                **meta,
                "provenance": provenance,
                "class_counts": counts.tolist(),
                "mask_array": array_name,
                "mask_history": history,
            },
        )

    def export_folder(self, out_dir: str | Path, **kwargs) -> Path:
        """Same as :func:`~napari_microsynth.core.folder_export.export_folder` ``(self, out_dir, ...)``."""
        from .folder_export import export_folder

        return export_folder(self, out_dir, **kwargs)


__all__ = [
    "DatasetStore",
    "StoreError",
    "StoreLockedError",
    "IncompleteWriteWarning",
    "STATUSES",
    "IMAGE_DTYPES",
    "is_store",
    "has_store_metadata",
    "removed_if_left_empty",
]
