"""Reading micrographs and masks in every form the real datasets use (plus formats written here)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_microsynth.core.io import (
    decode_color_mask,
    decode_instance_map,
    decode_overlay,
    detect_info_band,
    instance_boundaries,
    read_instance_map,
    read_mask,
    read_micrograph,
)
from napari_microsynth.core.schema import PhaseSchema

METALDAM = PhaseSchema.bundled("metaldam")
UHCS = PhaseSchema.bundled("uhcs")


def _names(folder, suffix):
    return sorted(p.stem for p in folder.glob(f"*{suffix}"))


# ---------------------------------------------------------------------------------------------- micrographs


@pytest.mark.real_data("metaldam")
def test_metaldam_info_band_detected_on_every_image_and_inside_the_official_crop(shared_data):
    """The visible SEM band is 50 rows on 1024x768 and 64 rows on 1280x960 images; the masks were cut
    65/66 rows up, so the auto-cropped image always contains the whole annotated area."""
    folder = shared_data / "metaldam"
    names = _names(folder / "images", ".jpg")
    assert len(names) == 42
    for name in names:
        rgb = np.asarray(Image.open(folder / "images" / f"{name}.jpg"))
        band = detect_info_band(rgb)
        assert band == {768: 50, 960: 64}[rgb.shape[0]], name
        mask_rows = Image.open(folder / "masks" / f"{name}.png").size[1]
        assert band <= rgb.shape[0] - mask_rows, name  # 65, or 66 for micrograph15/19
        assert rgb[-band:].std() > 50  # the band is text/graphics, not a flat strip


def test_no_info_band_on_uhcs_or_optical_iron(shared_data):
    paths = sorted((shared_data / "uhcs" / "images").glob("*.tif"))
    paths += sorted((shared_data / "fastfinecut_iron" / "images").glob("*.tif"))
    for path in paths:
        assert detect_info_band(tifffile.imread(path)) == 0, path.name
        image, _ = read_micrograph(path)
        assert image.shape == tifffile.imread(path).shape


@pytest.mark.real_data("metaldam")
def test_metaldam_jpeg_reads_as_grey_float_without_the_band(shared_data):
    path = shared_data / "metaldam" / "images" / "micrograph15.jpg"
    rgb = np.asarray(Image.open(path))
    image, pixel_size = read_micrograph(path)
    assert image.dtype == np.float32 and image.shape == (718, 1024)
    assert pixel_size is None  # JPEG carries no calibration
    np.testing.assert_allclose(image, rgb[:718, :, 0] / 255.0, atol=1e-6)
    cropped, _ = read_micrograph(path, info_band=66)
    assert cropped.shape == (702, 1024)
    np.testing.assert_array_equal(cropped, image[:702])


@pytest.mark.real_data("metaldam")
def test_coloured_band_text_is_refused_when_not_cropped(shared_data):
    path = shared_data / "metaldam" / "images" / "micrograph0.jpg"
    with pytest.raises(ValueError, match="colour image.*--info-band"):
        read_micrograph(path, info_band=None)
    with pytest.raises(ValueError, match="info_band=800 rows, but the image has 768 rows"):
        read_micrograph(path, info_band=800)


def test_synthetic_band_appended_to_a_uhcs_image_is_found(shared_data):
    image = tifffile.imread(shared_data / "uhcs" / "images" / "uhcs0006.tif")
    band = np.full((40, image.shape[1]), 255, dtype=np.uint8)
    band[0] = 0  # frame line
    band[12:25, 30:200:7] = 0  # "text" strokes
    assert detect_info_band(np.vstack([image, band])) == 40
    # a flat dark strip without text is micrograph content (e.g. a pore), not an information band
    dark = np.zeros((40, image.shape[1]), dtype=np.uint8)
    assert detect_info_band(np.vstack([image, dark])) == 0


def test_16bit_lzw_tiff_scaled_by_dtype_range_with_imagej_pixel_size(tmp_path):
    data = np.arange(60 * 80, dtype=np.uint16).reshape(60, 80) * 13
    path = tmp_path / "sem16.tif"
    tifffile.imwrite(path, data, compression="lzw", imagej=True, resolution=(1 / 0.025, 1 / 0.025), metadata={"unit": "um"})
    assert tifffile.TiffFile(path).pages[0].compression == 5  # LZW
    image, pixel_size = read_micrograph(path)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, data / 65535.0, rtol=1e-6)
    assert pixel_size == pytest.approx(0.025)
    plain = tmp_path / "plain16.tif"
    tifffile.imwrite(plain, data)
    assert read_micrograph(plain)[1] is None


def test_16bit_png_and_8bit_png(tmp_path):
    data16 = (np.linspace(0, 65535, 50 * 40).reshape(50, 40)).astype(np.uint16)
    Image.fromarray(data16).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_micrograph(tmp_path / "a.png")[0], data16 / 65535.0, rtol=1e-6)
    data8 = (np.arange(50 * 40) % 256).astype(np.uint8).reshape(50, 40)
    Image.fromarray(data8).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_micrograph(tmp_path / "b.png")[0], data8 / 255.0)


def test_rgb_grey_jpeg_reads_as_grey_and_colour_jpeg_is_refused(shared_data, tmp_path):
    grey = tifffile.imread(shared_data / "uhcs" / "images" / "uhcs0007.tif")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey.jpg", quality=95)
    image, _ = read_micrograph(tmp_path / "grey.jpg")
    assert image.shape == grey.shape
    assert np.abs(image - grey / 255.0).mean() < 0.02  # lossy, but the same picture
    colour = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.jpg", quality=95)
    with pytest.raises(ValueError, match="colour.jpg: colour image"):
        read_micrograph(tmp_path / "colour.jpg")


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.real_data("metaldam")
def test_metaldam_colour_masks_decode_to_the_index_masks(shared_data):
    folder = shared_data / "metaldam"
    names = _names(folder / "masks", ".png")
    assert len(names) == 42
    for name in names:
        index = read_mask(folder / "masks" / f"{name}.png", METALDAM)
        colour = read_mask(folder / "masks_colored" / f"{name}.png", METALDAM)
        assert index.dtype == np.uint8 and index.ndim == 2
        np.testing.assert_array_equal(colour, index, err_msg=name)


@pytest.mark.real_data("metaldam")
def test_metaldam_mask_stored_as_rgb_grey_gives_its_first_channel(shared_data):
    path = shared_data / "metaldam" / "masks" / "micrograph26.png"
    raw = np.asarray(Image.open(path))
    assert raw.shape == (703, 1024, 3)
    mask = read_mask(path, METALDAM)
    np.testing.assert_array_equal(mask, raw[..., 0])
    assert set(np.unique(mask)) == {0, 1}


def test_uhcs_npy_labels_and_rgba_preview_agree(shared_data):
    folder = shared_data / "uhcs"
    names = _names(folder / "masks", ".npy")
    assert names == _names(folder / "images", ".tif")
    for name in names:
        labels = np.load(folder / "masks" / f"{name}.npy")
        mask = read_mask(folder / "masks" / f"{name}.npy", UHCS)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, labels)
        # the RGBA preview uses the schema palette exactly (fully opaque, no blending)
        np.testing.assert_array_equal(read_mask(folder / "masks_colored" / f"{name}.png", UHCS), labels, err_msg=name)


@pytest.mark.real_data("metaldam")
def test_unknown_colour_is_named_with_its_pixel_count(shared_data):
    rgb = np.array(Image.open(shared_data / "metaldam" / "masks_colored" / "micrograph3.png"))
    rgb[10:17, 20] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"7 pixels in 1 colours.*\(1, 2, 3\) \(7 px\)"):
        decode_color_mask(rgb, METALDAM)


def test_a_mask_in_another_schemas_palette_names_every_colour(shared_data):
    with pytest.raises(ValueError, match=r"uhcs0006.png: .*\(54, 1, 84\) \(190420 px\)"):
        read_mask(shared_data / "uhcs" / "masks_colored" / "uhcs0006.png", METALDAM)


def test_unknown_index_value_is_named_with_its_pixel_count(tmp_path):
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[:3, :4] = 9
    Image.fromarray(mask).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"m.png: .*9 \(12 px\).*0..4"):
        read_mask(tmp_path / "m.png", METALDAM)


def test_palette_png_mask_reads_indices(tmp_path):
    mask = (np.arange(12 * 10) % 5).astype(np.uint8).reshape(12, 10)
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette(METALDAM.colors.ravel().tolist() + [0] * (768 - 15))
    image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png", METALDAM), mask)


def test_grey_colour_legend_and_explicit_kinds(tmp_path):
    grains = PhaseSchema.bundled("grains")  # colours (200, 200, 200) and (20, 20, 20)
    classes = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
    Image.fromarray(grains.colors[classes]).save(tmp_path / "grains.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grains.png", grains), classes)
    colour = METALDAM.colors[classes]
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="read it as colours"):
        read_mask(tmp_path / "colour.png", METALDAM, kind="index")
    np.testing.assert_array_equal(read_mask(tmp_path / "colour.png", METALDAM, kind="color"), classes)


@pytest.mark.real_data("metaldam")
def test_colour_tolerance_accepts_small_shifts_only(shared_data):
    index = read_mask(shared_data / "metaldam" / "masks" / "micrograph1.png", METALDAM)[:200, :300]
    assert len(np.unique(index)) >= 4
    rng = np.random.default_rng(0)
    noisy = np.clip(METALDAM.colors[index].astype(int) + rng.integers(-3, 4, (*index.shape, 3)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decode_color_mask(noisy, METALDAM, tolerance=3), index)
    with pytest.raises(ValueError, match="not in the legend"):
        decode_color_mask(noisy, METALDAM)


def test_hand_painted_overlay_unpainted_grey_is_background(shared_data):
    grey = tifffile.imread(shared_data / "uhcs" / "images" / "uhcs0075.tif")
    labels = np.load(shared_data / "uhcs" / "masks" / "uhcs0075.npy")
    overlay = np.stack([grey] * 3, axis=-1)
    painted = labels > 0
    overlay[painted] = UHCS.colors[labels[painted]]
    np.testing.assert_array_equal(decode_overlay(overlay, UHCS, background_id=0), labels)
    overlay[5, 5] = (10, 200, 10)
    with pytest.raises(ValueError, match=r"\(10, 200, 10\) \(1 px\)"):
        decode_overlay(overlay, UHCS, background_id=0)
    with pytest.raises(ValueError, match="grey colours"):
        decode_overlay(overlay, PhaseSchema.bundled("grains"), background_id=0)
    with pytest.raises(ValueError, match="background class 7 is not a class of schema 'uhcs'"):
        decode_overlay(overlay, UHCS, background_id=7)


def test_overlay_file_through_read_mask(shared_data, tmp_path):
    labels = np.load(shared_data / "uhcs" / "masks" / "uhcs0124.npy")
    overlay = np.full((*labels.shape, 3), 128, dtype=np.uint8)
    overlay[labels == 3] = UHCS.colors[3]
    Image.fromarray(overlay).save(tmp_path / "overlay.png")
    mask = read_mask(tmp_path / "overlay.png", UHCS, kind="overlay", background_id=0)
    np.testing.assert_array_equal(mask, np.where(labels == 3, 3, 0))
    with pytest.raises(ValueError, match="needs background_id"):
        read_mask(tmp_path / "overlay.png", UHCS, kind="overlay")


# ---------------------------------------------------------------------------------------------- grain maps


def test_iron_instance_maps_give_about_180_grains_and_thin_boundaries(shared_data):
    folder = shared_data / "fastfinecut_iron" / "masks"
    previous = None
    for path in sorted(folder.glob("*.tif")):
        grains = read_instance_map(path)
        rgb = tifffile.imread(path)
        n = int(grains.labels.max())
        assert 160 <= n <= 200, path.name
        assert set(np.unique(grains.labels)) == set(range(1, n + 1))
        assert len(grains.colors) == n
        np.testing.assert_array_equal(grains.colors[grains.labels - 1], rgb)  # one colour per grain
        assert 0.04 < grains.boundary.mean() < 0.09
        colours = {tuple(c) for c in grains.colors.tolist()}
        if previous is not None:  # serial sections share most grains (3-D identity by colour)
            assert len(colours & previous) > 0.8 * len(colours)
        previous = colours


def test_integer_label_image_as_instance_map(tmp_path):
    labels = np.zeros((6, 8), dtype=np.uint16)
    labels[:, 4:] = 300
    labels[4:, :] = 7
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    grains = read_instance_map(tmp_path / "labels.tif")
    np.testing.assert_array_equal(grains.labels, labels)
    expected = np.zeros((6, 8), dtype=bool)
    expected[3:5, :] = True  # rows on both sides of the horizontal change
    expected[:4, 3:5] = True  # columns on both sides of the vertical change, above it
    np.testing.assert_array_equal(grains.boundary, expected)
    assert grains.colors.shape == (0, 3)


def test_instance_boundaries_mark_both_sides_of_4_neighbour_changes():
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    expected = np.array([[False, True, True], [True, True, True], [True, True, True]])
    np.testing.assert_array_equal(instance_boundaries(labels), expected)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (200, 10, 10)
    assert decode_instance_map(rgb).labels.tolist() == [[2, 1], [1, 1]]


@pytest.mark.parametrize("name, content, message", [
    ("a.png", b"", "the file is empty (0 bytes)"),
    ("a.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "not a readable PNG file"),
    ("a.jpg", b"\xff\xd8\xff\xe0 truncated", "not a readable JPG file"),
    ("a.tif", b"II*\x00 truncated", "not a readable TIF file"),
    ("a.npy", b"not numpy", "not a readable NPY file"),
])
def test_unreadable_files_raise_one_value_error_naming_the_file(tmp_path, name, content, message):
    """Issue 19 item 9: PIL's UnidentifiedImageError / OSError and tifffile's errors came out as tracebacks."""
    from napari_microsynth.core.io import read_mask, read_micrograph

    (tmp_path / name).write_bytes(content)
    for read in (read_micrograph, lambda p: read_mask(p, PhaseSchema.bundled("uhcs"))):
        with pytest.raises(ValueError) as info:
            read(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: {message}")


def test_an_empty_tiff_is_refused(tmp_path):
    import warnings

    from napari_microsynth.core.io import read_micrograph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 0), np.uint8))
    with pytest.raises(ValueError, match=r"zero.tif: the image is empty \(0x0 pixels\)"):
        read_micrograph(tmp_path / "zero.tif")
