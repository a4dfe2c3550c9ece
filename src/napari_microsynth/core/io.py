"""Reading micrographs and masks in the forms real datasets come in.

Micrographs (JPEG, PNG, 8/16-bit TIFF incl. LZW; grey, or RGB whose channels are equal) become float32
grey images in [0, 1]. An SEM information band at the bottom (scale bar, kV, magnification, often in
coloured text) can be detected and cropped. Masks (index PNG/TIFF, ``.npy`` labels, colour masks through
a legend, hand-painted overlays, grain instance-colour maps) become integer class maps checked against a
:class:`~napari_microsynth.core.schema.PhaseSchema`; a value or colour the schema does not define is an
error that names it, never a silent class.

>>> image, pixel_size_um = read_micrograph("micrograph0.jpg")  # doctest: +SKIP
>>> mask = read_mask("micrograph0.png", PhaseSchema.bundled("metaldam"))  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Union

import numpy as np

from .schema import PhaseSchema

MICROGRAPH_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".bmp")

Legend = Union[PhaseSchema, Mapping[tuple[int, int, int], int]]

# A pixel is "coloured" when its channels differ by more than this share of the value range.
_COLOUR_TOLERANCE = 0.1
# An RGB micrograph is refused as colour when more than this share of its pixels is coloured.
_MAX_COLOURED_SHARE = 1e-4
# Information-band detector: a row belongs to the band when at least this share of its pixels lies
# within +-2 grey levels (of 255) of one value (flat graphics, text on a plain background) ...
_BAND_ROW_MODE_SHARE = 0.65
# ... or when at least this share of its pixels is coloured (coloured text).
_BAND_ROW_COLOUR_SHARE = 0.01
_MODE_HALF_WIDTH = 2
# The band must hold a plain row (frame line or background): this share of pixels at one value.
_PLAIN_ROW_MODE_SHARE = 0.95
_BAND_MAX_FRACTION = 0.3
_BAND_MAX_GAP = 2


# ----------------------------------------------------------------------------------------------
# raw file access


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError("the TIFF holds no image")
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        pixel_size = _imagej_pixel_size_um(tif)
    keep = [i for i, (axis, size) in enumerate(zip(axes, data.shape)) if size > 1 or axis in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if axes == "SYX":
        data, axes = np.moveaxis(data, 0, -1), "YXS"
    if axes not in ("YX", "YXS"):
        raise ValueError(f"TIFF holds a {data.shape} array with axes {axes!r}; expected one 2-D image (grey or RGB)")
    return data, pixel_size


def _imagej_pixel_size_um(tif) -> float | None:
    """Pixel size from an ImageJ calibration (``unit`` + X/Y resolution), in micrometres."""
    meta = tif.imagej_metadata or {}
    scale = {"um": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3, "mm": 1e3}
    unit = str(meta.get("unit", "")).strip().lower()
    for micro in ("\\u00b5", "\u00b5", "\u03bc"):  # ImageJ's escaped micro sign, micro sign, Greek mu
        unit = unit.replace(micro, "u")
    if unit not in scale:
        return None
    tags = tif.pages[0].tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    if xn == 0 or yn == 0:
        return None
    size_x, size_y = xd / xn, yd / yn
    if abs(size_x - size_y) > 0.01 * size_x:
        return None  # anisotropic pixels: no single pixel size
    return float(size_x * scale[unit])


def _read_pillow(path: Path, palette_as_index: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        if mode == "P":
            if palette_as_index:
                return np.asarray(im)
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        data = np.asarray(im)
    if mode.startswith("I;16"):
        data = data.astype(np.uint16)
    return data


def _read_array(path: Path, palette_as_index: bool = False) -> tuple[np.ndarray, float | None]:
    """The pixel array of an image file; ValueError saying what is wrong with an unreadable or empty file
    (the readers raise OSError, EOFError or SyntaxError for empty, truncated or corrupt files)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            data, pixel_size = _read_tiff(path)
        elif suffix == ".npy":
            data, pixel_size = np.load(path, allow_pickle=False), None
        else:
            data, pixel_size = _read_pillow(path, palette_as_index), None
    except (OSError, EOFError, SyntaxError) as exc:
        empty = path.stat().st_size == 0 if path.is_file() else False
        raise ValueError("the file is empty (0 bytes)" if empty else
                         f"not a readable {suffix.lstrip('.').upper() or 'image'} file ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"not a readable {suffix.lstrip('.').upper()} file ({exc})") from None
    if data.size == 0:
        raise ValueError(f"the image is empty ({'x'.join(map(str, data.shape))} pixels)")
    return data, pixel_size


def image_shape(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header where the format allows."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                sizes = dict(zip(series.axes, series.shape))
            return int(sizes["Y"]), int(sizes["X"])
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
        return height, width
    except (OSError, EOFError, SyntaxError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable image file ({exc})") from None


def _drop_alpha(data: np.ndarray) -> np.ndarray:
    """Remove the alpha channel of LA/RGBA data, refusing pixels that are not fully opaque."""
    if data.ndim == 3 and data.shape[2] in (2, 4):
        alpha = data[..., -1]
        opaque = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else 1.0
        n_clear = int(np.count_nonzero(alpha != opaque))
        if n_clear:
            raise ValueError(f"{n_clear} pixels are not fully opaque (alpha channel); expected an opaque image")
        data = data[..., :-1]
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    return data


def to_unit_float(data: np.ndarray) -> np.ndarray:
    """Scale integer data by its dtype range to float32 [0, 1]; float data must already be in [0, 1]."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype == np.uint16:
        return data.astype(np.float32) / 65535.0
    if data.dtype == bool:
        return data.astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or data.min() < 0 or data.max() > 1:
            raise ValueError(
                f"floating-point image with values in [{np.nanmin(data):g}, {np.nanmax(data):g}]; "
                "expected floats in [0, 1] or an 8/16-bit integer image (rescale the image first)"
            )
        return data.astype(np.float32)
    raise ValueError(f"unsupported pixel type {data.dtype}; expected 8- or 16-bit unsigned integers or floats in [0, 1]")


# ----------------------------------------------------------------------------------------------
# micrographs


def detect_info_band(image: np.ndarray) -> int:
    """Number of rows of an SEM information band at the bottom of ``image`` (0 if there is none).

    ``image`` is grey ``(H, W)`` or RGB(A) ``(H, W, C)``, 8/16-bit or float in [0, 1]. The band is the
    bottom block (at most 30 % of the height, at least 1 % and 4 rows) made of flat graphics rows (most
    pixels within 2 grey levels of one value) or coloured text rows, allowing gaps of two rows; it must
    hold a plain row (frame line or background) and text (both near-black and near-white pixels, or
    coloured pixels), and the rows above it must look like a micrograph. Real micrograph rows, even
    bright optical ones with clipped highlights, stay well below the flat-row threshold.

    On MetalDAM the visible band is 50 rows of the 1024x768 images (from row 718 down, incl. one
    scan row below its lower frame line) and 64 rows of the 1280x960 images; the dataset's masks
    were cut with a fixed 65 (two images: 66) rows, i.e. a few micrograph rows more than the band.
    """
    data = _drop_alpha(np.asarray(image))
    height, width = data.shape[:2]
    start = height - int(height * _BAND_MAX_FRACTION)
    n_rows = height - start
    if n_rows == 0:
        return 0
    values = to_unit_float(data[start:])
    if values.ndim == 3:
        spread = _channel_spread(values)
        region = values.mean(axis=2)
    else:
        spread = np.zeros_like(values)
        region = values
    levels = np.rint(region * 255).astype(np.int64)
    hist = np.bincount((levels + 256 * np.arange(n_rows)[:, None]).ravel(), minlength=n_rows * 256)
    hist = hist.reshape(n_rows, 256)
    window = 2 * _MODE_HALF_WIDTH + 1
    cum = np.cumsum(np.pad(hist, ((0, 0), (_MODE_HALF_WIDTH + 1, _MODE_HALF_WIDTH))), axis=1)
    mode_share = (cum[:, window:] - cum[:, :-window]).max(axis=1) / width
    coloured = spread > _COLOUR_TOLERANCE
    colour_share = coloured.mean(axis=1)
    band_row = (mode_share >= _BAND_ROW_MODE_SHARE) | (colour_share >= _BAND_ROW_COLOUR_SHARE)

    top = None
    gap = 0
    for r in range(n_rows - 1, -1, -1):
        if band_row[r]:
            top, gap = r, 0
        else:
            gap += 1
            if gap > _BAND_MAX_GAP:
                break
    else:
        return 0  # the "band" runs into the search limit: flat content, not a band below a micrograph
    if top is None:
        return 0
    rows = n_rows - top
    if rows < max(4, int(np.ceil(0.01 * height))):
        return 0
    band = region[top:]
    plain_row = bool(np.any(mode_share[top:] >= _PLAIN_ROW_MODE_SHARE))
    text = (np.mean(band < 0.1) >= 0.01 and np.mean(band > 0.9) >= 0.01) or np.mean(coloured[top:]) >= 0.001
    if np.mean(band_row[top:]) < 0.8 or not plain_row or not text:
        return 0
    return int(rows)


def read_micrograph(path: str | Path, info_band: str | int | None = "auto") -> tuple[np.ndarray, float | None]:
    """Read a micrograph as float32 grey ``(H, W)`` in [0, 1] and its pixel size in micrometres.

    8-bit data are divided by 255, 16-bit by 65535. RGB files must be grey (equal channels) outside
    the information band; a colour image raises ``ValueError``. ``info_band``: ``"auto"`` detects
    and crops an SEM information band at the bottom (:func:`detect_info_band`), an int crops that
    many bottom rows, ``None`` keeps every row. The pixel size comes from an ImageJ TIFF calibration;
    it is ``None`` when the file does not carry one (JPEG and PNG never do).

    >>> image, pixel_size_um = read_micrograph("uhcs0006.tif")  # doctest: +SKIP
    >>> image.dtype, image.shape, pixel_size_um  # doctest: +SKIP
    (dtype('float32'), (484, 645), None)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"micrograph not found: {path}")
    try:
        data, pixel_size = _read_array(path)
        data = _drop_alpha(data)
        if data.ndim == 3 and data.shape[2] != 3:
            raise ValueError(f"image has {data.shape[2]} channels; expected grey or RGB")
        if data.ndim not in (2, 3):
            raise ValueError(f"image has shape {data.shape}; expected a 2-D grey or RGB image")
        height = data.shape[0]
        if info_band == "auto":
            rows = detect_info_band(data)
        elif info_band is None:
            rows = 0
        elif isinstance(info_band, (int, np.integer)) and not isinstance(info_band, bool):
            rows = int(info_band)
            if not 0 <= rows < height:
                raise ValueError(f"info_band={rows} rows, but the image has {height} rows")
        else:
            raise ValueError(f"info_band must be 'auto', a row count or None, got {info_band!r}")
        values = to_unit_float(data[: height - rows])
        if values.ndim == 3:
            values = _grey_from_rgb(values, rows)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return values, pixel_size


def _channel_spread(values: np.ndarray) -> np.ndarray:
    """Per-pixel difference between the largest and smallest channel of ``(H, W, C)`` data."""
    channels = [values[..., c] for c in range(values.shape[2])]
    return np.maximum.reduce(channels) - np.minimum.reduce(channels)


def _grey_from_rgb(values: np.ndarray, band_rows: int) -> np.ndarray:
    coloured = _channel_spread(values) > _COLOUR_TOLERANCE
    n_coloured = int(np.count_nonzero(coloured))
    if n_coloured > _MAX_COLOURED_SHARE * coloured.size:
        ys, xs = np.nonzero(coloured)
        where = "above the information band" if band_rows else "(no information band cropped)"
        raise ValueError(
            f"colour image: {n_coloured} pixels {where} have channels differing by more than "
            f"{_COLOUR_TOLERANCE:.0%} of the range (first at row {ys[0]}, column {xs[0]}); expected grey "
            "or RGB with equal channels. If the colour sits in a bottom information band, crop it (--info-band "
            "auto or its row count); a true colour micrograph must be converted to grey first"
        )
    return (values[..., 0] + values[..., 1] + values[..., 2]) / np.float32(3)


# ----------------------------------------------------------------------------------------------
# masks


def _value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype in (np.uint8, np.bool_):
        counts = np.bincount(values.ravel().astype(np.intp), minlength=1)
        present = np.nonzero(counts)[0]
        return present, counts[present]
    return np.unique(values, return_counts=True)


def _check_index_values(mask: np.ndarray, schema: PhaseSchema) -> None:
    allowed = set(range(schema.n_classes))
    if schema.ignore_id is not None:
        allowed.add(schema.ignore_id)
    values, counts = _value_counts(mask)
    unknown = [(int(v), int(c)) for v, c in zip(values, counts) if int(v) not in allowed]
    if unknown:
        listed = ", ".join(f"{v} ({c} px)" for v, c in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        ignore = f", ignore {schema.ignore_id}" if schema.ignore_id is not None else ""
        raise ValueError(
            f"mask holds values schema {schema.name!r} does not define: {listed}{more} "
            f"(expected class ids 0..{schema.n_classes - 1}{ignore})"
        )


def _index_mask(data: np.ndarray, schema: PhaseSchema) -> np.ndarray:
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise ValueError(f"mask holds non-integer {data.dtype} values; expected integer class ids")
    elif not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"mask has pixel type {data.dtype}; expected integer class ids")
    if data.ndim != 2:
        raise ValueError(f"mask has shape {data.shape}; expected a 2-D class map")
    _check_index_values(data, schema)
    return data.astype(schema.mask_dtype)


def _legend_table(legend: Legend) -> tuple[np.ndarray, np.ndarray]:
    """``(colours (K, 3) int64, class ids (K,))`` of a schema or a ``{(r, g, b): id}`` mapping."""
    if isinstance(legend, PhaseSchema):
        colours = legend.colors.astype(np.int64)
        ids = np.arange(legend.n_classes)
    else:
        if not legend:
            raise ValueError("empty colour legend")
        colours = np.array([tuple(int(c) for c in colour) for colour in legend], dtype=np.int64)
        ids = np.array([int(i) for i in legend.values()])
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"legend colours must be (r, g, b) triples, got {colours.tolist()}")
    codes = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    if len(np.unique(codes)) != len(codes):
        raise ValueError(f"legend repeats a colour: {colours.tolist()}")
    return colours, ids


def _colour_list(colours: np.ndarray, counts: np.ndarray) -> str:
    order = np.argsort(-counts, kind="stable")
    listed = ", ".join(f"{tuple(int(c) for c in colours[i])} ({int(counts[i])} px)" for i in order[:10])
    more = f" and {len(order) - 10} more" if len(order) > 10 else ""
    return listed + more


def _match_legend(rgb: np.ndarray, legend: Legend, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Class id per pixel (-1 where no legend colour is within ``tolerance`` per channel) and a matched flag."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"colour mask has shape {rgb.shape}; expected (H, W, 3) RGB")
    colours, ids = _legend_table(legend)
    pixels = rgb.astype(np.int64)
    if tolerance == 0:
        codes = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
        legend_codes = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
        order = np.argsort(legend_codes)
        sorted_codes = legend_codes[order]
        pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
        matched = sorted_codes[pos] == codes
        labels = np.where(matched, ids[order][pos], -1)
        return labels, matched
    gaps = np.abs(colours[:, None, :] - colours[None, :, :]).max(axis=2)
    np.fill_diagonal(gaps, np.iinfo(np.int64).max)
    if gaps.min() <= 2 * tolerance:
        raise ValueError(f"legend colours lie within 2 x tolerance={tolerance} of each other; lower the tolerance")
    distance = np.stack([np.abs(pixels - c).max(axis=2) for c in colours])
    nearest = distance.argmin(axis=0)
    matched = np.take_along_axis(distance, nearest[None], axis=0)[0] <= tolerance
    labels = np.where(matched, ids[nearest], -1)
    return labels, matched


def _raise_unknown_colours(rgb: np.ndarray, unknown: np.ndarray, legend: Legend, what: str) -> None:
    colours, counts = np.unique(rgb[unknown].reshape(-1, 3), axis=0, return_counts=True)
    known, _ = _legend_table(legend)
    name = f" of schema {legend.name!r}" if isinstance(legend, PhaseSchema) else ""
    grey = counts[colours.max(axis=1) - colours.min(axis=1) == 0].sum()
    hint = ("; most of them are grey, as in a hand-painted overlay on the micrograph: set \"masks\": "
            "{\"encoding\": \"overlay\", \"background\": PHASE} in schema.json "
            "('microsynth describe FOLDER --propose-schema' drafts one)" if grey > counts.sum() / 2 else "")
    raise ValueError(
        f"{what} holds {int(unknown.sum())} pixels in {len(colours)} colours not in the legend{name}: "
        f"{_colour_list(colours, counts)}; legend colours: {[tuple(int(v) for v in c) for c in known]}{hint}"
    )


def decode_color_mask(rgb: np.ndarray, legend: Legend, *, tolerance: int = 0) -> np.ndarray:
    """Class map of a colour mask: each pixel's colour looked up in ``legend``.

    ``legend`` is a :class:`PhaseSchema` (its phase colours) or a ``{(r, g, b): class_id}`` mapping.
    ``tolerance`` (0-255, per channel) accepts colours shifted by lossy compression. A colour that
    matches no legend entry raises ``ValueError`` naming it with its pixel count.

    >>> schema = PhaseSchema.bundled("metaldam")
    >>> decode_color_mask(schema.colors[[[2, 0]]], schema).tolist()
    [[2, 0]]
    """
    rgb = _drop_alpha(np.asarray(rgb))
    labels, matched = _match_legend(rgb, legend, tolerance)
    if not matched.all():
        _raise_unknown_colours(rgb, ~matched, legend, "colour mask")
    return labels.astype(np.uint8 if labels.max(initial=0) <= 255 and labels.min(initial=0) >= 0 else np.int32)


def decode_overlay(rgb: np.ndarray, legend: Legend, background_id: int, *, tolerance: int = 0) -> np.ndarray:
    """Class map of a hand-painted overlay: legend colours are their classes, unpainted grey pixels
    (R = G = B within ``tolerance``, i.e. the micrograph showing through) are ``background_id``.

    Any other colour raises ``ValueError`` naming it with its pixel count. The legend must not hold
    grey colours, since those could not be told apart from unpainted pixels. With a schema as the legend,
    the background phase's own colour is only its display colour (it may be grey) and is not looked up.

    >>> legend = {(255, 0, 0): 2, (0, 255, 0): 1}
    >>> decode_overlay(np.array([[[90, 90, 90], [255, 0, 0]]], np.uint8), legend, background_id=0).tolist()
    [[0, 2]]
    """
    rgb = _drop_alpha(np.asarray(rgb))
    if isinstance(legend, PhaseSchema):
        valid = set(range(legend.n_classes)) | ({legend.ignore_id} if legend.ignore_id is not None else set())
        if int(background_id) not in valid:
            raise ValueError(f"background class {background_id} is not a class of schema {legend.name!r}")
        legend = {tuple(int(v) for v in colour): i for i, colour in enumerate(legend.colors) if i != background_id}
    colours, _ = _legend_table(legend)
    grey_entries = colours[(colours.max(axis=1) - colours.min(axis=1)) <= tolerance]
    if len(grey_entries):
        raise ValueError(
            f"legend holds grey colours {grey_entries.tolist()} that cannot be told apart from unpainted "
            "micrograph pixels; use a colour legend for overlays"
        )
    labels, matched = _match_legend(rgb, legend, tolerance)
    pixels = rgb.astype(np.int64)
    grey = (pixels.max(axis=2) - pixels.min(axis=2)) <= tolerance
    labels = np.where(matched, labels, int(background_id))
    unknown = ~matched & ~grey
    if unknown.any():
        _raise_unknown_colours(rgb, unknown, legend, "overlay")
    return labels.astype(np.uint8 if labels.max(initial=0) <= 255 and labels.min(initial=0) >= 0 else np.int32)


def mask_array(path: Path) -> np.ndarray:
    """The pixel values of a mask file as stored: palette indices of a palette PNG, RGB without its alpha
    channel (whose pixels must be opaque), 8 or 16 bits. Raises ``ValueError`` without the file name."""
    data, _ = _read_array(path, palette_as_index=True)
    return _drop_alpha(np.asarray(data))


def read_mask(
    path: str | Path,
    schema: PhaseSchema,
    *,
    kind: str = "auto",
    background_id: int | None = None,
    tolerance: int = 0,
) -> np.ndarray:
    """Read a class mask as an integer ``(H, W)`` array of ``schema`` class ids (uint8 when they fit).

    ``kind``:
      - ``"index"``: pixel values are class ids (grey PNG/TIFF, palette PNG indices, ``.npy``; an RGB
        file whose channels are all equal, like MetalDAM's micrograph26.png, gives its first channel).
      - ``"color"``: RGB(A) colours looked up in the schema's phase colours (:func:`decode_color_mask`);
        a grey mask's value v is the colour (v, v, v).
      - ``"overlay"``: hand-painted RGB overlay; grey pixels become ``background_id`` (:func:`decode_overlay`).
      - ``"auto"``: ``"index"`` for single-channel data and for RGB with equal channels whose values are
        class ids; ``"color"`` otherwise.
    16-bit colours are brought to 8 bits (v / 257) before they are looked up. Values or colours the schema
    does not define raise ``ValueError`` naming them with pixel counts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    if kind not in ("auto", "index", "color", "overlay"):
        raise ValueError(f"mask kind must be 'auto', 'index', 'color' or 'overlay', got {kind!r}")
    try:
        data = mask_array(path)
        if kind in ("color", "overlay") and data.ndim == 2:
            data = np.stack([data] * 3, axis=-1)
        if kind == "overlay":
            if background_id is None:
                raise ValueError("kind='overlay' needs background_id (the class of unpainted pixels)")
            return decode_overlay(eight_bit_colours(data), schema, background_id,
                                  tolerance=tolerance).astype(schema.mask_dtype)
        if kind == "color":
            return decode_color_mask(eight_bit_colours(data), schema, tolerance=tolerance).astype(schema.mask_dtype)
        if data.ndim == 3:
            if data.shape[2] != 3:
                raise ValueError(f"mask has {data.shape[2]} channels; expected 1 (class ids) or 3 (RGB colours)")
            equal = bool(np.all(data[..., 0] == data[..., 1]) and np.all(data[..., 0] == data[..., 2]))
            if kind == "index":
                if not equal:
                    raise ValueError("RGB mask with differing channels read as class ids; read it as colours "
                                     "(\"masks\": {\"encoding\": \"color\"} in schema.json)")
                return _index_mask(data[..., 0], schema)
            colours = schema.colors.astype(int)
            grey_legend = bool(np.all(colours.max(axis=1) == colours.min(axis=1)))
            if equal and not (grey_legend and not _are_class_ids(data[..., 0], schema)):
                return _index_mask(data[..., 0], schema)
            return decode_color_mask(eight_bit_colours(data), schema, tolerance=tolerance).astype(schema.mask_dtype)
        return _index_mask(data, schema)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def eight_bit_colours(data: np.ndarray) -> np.ndarray:
    """16-bit colours as 8-bit ones (v / 257, rounded: 65535 -> 255); other data unchanged.

    >>> eight_bit_colours(np.array([[[65535, 0, 32896]]], np.uint16)).tolist()
    [[[255, 0, 128]]]
    """
    if data.dtype != np.uint16:
        return data
    return np.rint(data / 257.0).astype(np.uint8)


def write_mask(path: str | Path, mask: np.ndarray, schema: PhaseSchema) -> Path:
    """Write a class mask as an indexed-colour PNG: pixel values are the class ids, shown in the phase colours.

    Image viewers show the phases in colour; :func:`read_mask` reads the class ids back.

    >>> write_mask("phases.png", labels, PhaseSchema.bundled("uhcs"))  # doctest: +SKIP
    """
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size and not 0 <= mask.min() <= mask.max() <= 255:
        raise ValueError(f"expected a 2-D mask of class ids 0..255, got shape {mask.shape}")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: schema.n_classes] = schema.colors
    image = Image.fromarray(mask.astype(np.uint8))
    image.putpalette(palette.ravel().tolist())  # a grey image becomes a palette image, pixel values kept
    path = Path(path)
    image.save(path)
    return path


def _are_class_ids(values: np.ndarray, schema: PhaseSchema) -> bool:
    try:
        _check_index_values(values, schema)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# grain instance maps


class InstanceMap(NamedTuple):
    """Grain instances of an instance map: ``labels`` int32 (0 = none, grains 1..N), ``boundary`` bool
    (a 4-neighbour belongs to another label), ``colors`` (N, 3) uint8 RGB of grain ``i`` at ``i - 1``
    (empty for label images)."""

    labels: np.ndarray
    boundary: np.ndarray
    colors: np.ndarray


def instance_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose up/down/left/right neighbour holds a different label (both sides are marked).

    >>> instance_boundaries(np.array([[1, 1, 2]])).tolist()
    [[False, True, True]]
    """
    labels = np.asarray(labels)
    boundary = np.zeros(labels.shape, dtype=bool)
    vertical = labels[:-1] != labels[1:]
    boundary[:-1] |= vertical
    boundary[1:] |= vertical
    horizontal = labels[:, :-1] != labels[:, 1:]
    boundary[:, :-1] |= horizontal
    boundary[:, 1:] |= horizontal
    return boundary


def decode_instance_map(rgb: np.ndarray) -> InstanceMap:
    """Instances of a colour-per-grain map: every distinct colour is one grain, numbered 1..N in order
    of its packed RGB value (so the same colour gets the same rank in maps holding the same colours).

    >>> decode_instance_map(np.array([[[9, 9, 9], [1, 2, 3]]], np.uint8)).labels.tolist()
    [[2, 1]]
    """
    rgb = _drop_alpha(np.asarray(rgb))
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"instance colour map must be 8-bit RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    pixels = rgb.astype(np.int64)
    codes = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    unique, inverse = np.unique(codes, return_inverse=True)
    labels = (inverse.reshape(codes.shape) + 1).astype(np.int32)
    colours = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1).astype(np.uint8)
    return InstanceMap(labels, instance_boundaries(labels), colours)


def read_instance_map(path: str | Path) -> InstanceMap:
    """Read a grain instance map: an RGB file with one random colour per grain (e.g. Fast-FineCut's
    LZW TIFFs), or a 2-D integer label image (0 = no grain)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"instance map not found: {path}")
    try:
        data = mask_array(path)
        if data.ndim == 3:
            return decode_instance_map(data)
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer) or data.min() < 0:
            raise ValueError(f"instance map has {data.dtype} {data.shape}; expected RGB or non-negative integer labels")
        labels = data.astype(np.int32)
        return InstanceMap(labels, instance_boundaries(labels), np.zeros((0, 3), dtype=np.uint8))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
