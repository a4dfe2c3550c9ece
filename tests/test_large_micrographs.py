"""Micrographs too large for memory: lazy TIFF reading, block-by-block segmentation into a zarr phase map
(equal to whole-image inference, resumable, bounded by the block), and the commands on its output."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_microsynth.cli import main
from napari_microsynth.core.io import read_micrograph, to_unit_float
from napari_microsynth.core.large_image import (
    PhaseMap,
    is_large_micrograph,
    mirrored_mosaic,
    open_micrograph,
    write_pyramid_tiff,
)
from napari_microsynth.core.progress import Cancelled
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.engines import inference
from napari_microsynth.engines.inference import (
    WindowGrid,
    predict_image,
    region_features,
)
from napari_microsynth.engines.large_inference import block_windows, segment_large
from napari_microsynth.models.segmenter import Segmenter
from napari_microsynth.napari_io import get_reader, read_tiff_micrograph
from napari_microsynth.resources import resources_dir

pytestmark = pytest.mark.usefixtures("one_thread")
UHCS = PhaseSchema.bundled("uhcs")
RATIO = [0.5, 0.2, 0.2, 0.1]


@pytest.fixture(scope="module")
def demo_model():
    """The bundled PLM (128 px windows at input scale 1/2: 256 micrograph pixels, 128 apart)."""
    return Segmenter.load(resources_dir() / "models" / "plm-uhcs-demo", device="cpu")


@pytest.fixture(scope="module")
def micrograph(shared_data) -> np.ndarray:
    """A real UHCS micrograph, 645x484: odd width, so the half-scale network sees it padded by one column."""
    return read_micrograph(shared_data / "uhcs" / "images" / "uhcs0006.tif", info_band=None)[0]


@pytest.mark.parametrize("ratio, trust", [(None, 0.0), (RATIO, 1.0)], ids=["no ratio", "ratio corrected"])
def test_block_by_block_equals_whole_image_inference(demo_model, micrograph, tmp_path, ratio, trust):
    """Six blocks of about 256 px: the phase map, and with the ratio correction its bias solved on the
    whole micrograph's pixel subsample, are those of whole-image inference."""
    whole, _ = predict_image(demo_model, micrograph, ratio, trust)
    phase_map = segment_large(demo_model, micrograph, tmp_path / "phases.zarr", ratio, trust, block=256)
    assert len(phase_map.blocks) == 6 and phase_map.complete
    labels = phase_map.levels[0][:]
    assert (labels == whole).mean() > 0.999
    np.testing.assert_allclose(phase_map.fractions(), np.bincount(whole.ravel(), minlength=4) / whole.size, atol=1e-3)
    if trust:
        np.testing.assert_allclose(phase_map.fractions(), RATIO, atol=0.01)


def test_a_region_has_the_whole_micrographs_features(demo_model, micrograph):
    whole = region_features(demo_model, micrograph)
    box = (101, 37, 350, 600)
    np.testing.assert_allclose(region_features(demo_model, micrograph, box), whole[:, 101:350, 37:600], atol=1e-4)
    with pytest.raises(ValueError, match="does not lie inside"):
        region_features(demo_model, micrograph, (0, 0, 500, 10))


def test_an_interrupted_run_resumes_with_the_unfinished_blocks_only(demo_model, micrograph, tmp_path):
    out = tmp_path / "phases.zarr"
    with pytest.raises(Cancelled):  # Ctrl-C after two blocks of the labels pass
        segment_large(demo_model, micrograph, out, RATIO, 1.0, block=256,
                      should_stop=lambda: PhaseMap.open(out).done.sum() >= 2)
    assert PhaseMap.open(out).done.sum() == 2 and not PhaseMap.open(out).complete
    assert "blocks written: 2 of 6 (unfinished" in PhaseMap.open(out).describe()
    messages = []
    phase_map = segment_large(demo_model, micrograph, out, RATIO, 1.0, block=256,
                              progress=lambda done, total, message: messages.append(message))
    blocks_run = {message.split(":")[0] for message in messages}
    assert blocks_run == {f"block {k}/4 (labels pass)" for k in range(1, 5)}  # no first pass, no finished block
    whole, _ = predict_image(demo_model, micrograph, RATIO, 1.0)
    assert phase_map.complete and (phase_map.levels[0][:] == whole).mean() > 0.999
    with pytest.raises(ValueError, match="another run"):
        segment_large(demo_model, micrograph, out, RATIO, 0.5, block=256)


def test_memory_is_bounded_by_the_block_not_the_micrograph(micrograph, tmp_path, monkeypatch):
    """On a 1536x1536 mosaic with 256 px blocks every blended map held spans one block and at most a
    window on each side (not the micrograph's 768 network pixels), and no block runs more than
    (2 + block / stride)^2 windows."""
    torch.manual_seed(0)
    model = Segmenter.build(UHCS, preset="tiny", tile_size=64, input_scale=0.5).eval()  # 128 px windows, 64 apart
    image = mirrored_mosaic(micrograph, (1536, 1536))
    held = []

    class Recording(inference.WindowAccumulator):
        def __init__(self, shape, n_channels):
            held.append(tuple(shape))
            super().__init__(shape, n_channels)

    monkeypatch.setattr(inference, "WindowAccumulator", Recording)
    phase_map = segment_large(model, image, tmp_path / "phases.zarr", block=256)
    grid = WindowGrid.of(model, image.shape)
    assert len(phase_map.blocks) == 36 and len(held) == 36
    net_block = 256 // 2  # network pixels of a block at input scale 1/2
    largest = max(max(shape) for shape in held)
    assert largest <= net_block + 2 * model.tile_size and largest**2 < 0.1 * grid.net_shape[0] * grid.net_shape[1]
    assert max(len(block_windows(grid, box)) for _, _, box in phase_map.blocks) <= (2 + 256 // 64) ** 2
    assert len(grid.boxes) > 4 * max(len(block_windows(grid, box)) for _, _, box in phase_map.blocks)


def test_the_phase_map_keeps_a_pyramid_and_block_counts(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (2100, 1300), dtype=np.uint8)
    phase_map = PhaseMap.create(tmp_path / "p.zarr", UHCS, labels.shape, [0, 700, 1500], [0, 333], run={})
    for i, j, (y0, x0, y1, x1) in phase_map.blocks:
        phase_map.write_block(i, j, (y0, x0, y1, x1), labels[y0:y1, x0:x1])
    opened = PhaseMap.open(tmp_path / "p.zarr")
    assert [level.shape for level in opened.levels] == [(2100, 1300), (1050, 650), (525, 325)]
    for k, level in enumerate(opened.levels):
        np.testing.assert_array_equal(level[:], labels[:: 2**k, :: 2**k])
    np.testing.assert_allclose(opened.fractions(), np.bincount(labels.ravel(), minlength=4) / labels.size)
    with pytest.raises(ValueError, match="not a phase map"):
        PhaseMap.open(tmp_path)
    reader = get_reader(str(tmp_path / "p.zarr"))  # napari opens it as a multiscale labels layer
    [(data, kwargs, kind)] = reader(str(tmp_path / "p.zarr"))
    assert kind == "labels" and kwargs["multiscale"] and [level.shape for level in data][-1] == (525, 325)
    assert kwargs["metadata"]["microsynth"]["schema"]["name"] == "uhcs"


def test_a_large_tiff_is_read_lazily_with_its_pyramid(micrograph, tmp_path):
    mosaic = mirrored_mosaic((micrograph * 255).round().astype(np.uint8), (4200, 4100))
    write_pyramid_tiff(tmp_path / "mosaic.tif", mosaic)
    tifffile.imwrite(tmp_path / "flat.tif", mosaic[:1500, :1500], tile=(256, 256))
    assert is_large_micrograph(tmp_path / "mosaic.tif") and not is_large_micrograph(tmp_path / "flat.tif")
    opened = open_micrograph(tmp_path / "mosaic.tif", info_band_rows=100)
    assert opened.stored_pyramid and [level.shape for level in opened.levels][:2] == [(4200, 4100), (2100, 2050)]
    assert opened.image.shape == (4100, 4100)  # the band's rows left out
    np.testing.assert_array_equal(opened.image[1000:1300, 4000:], to_unit_float(mosaic[1000:1300, 4000:]))
    np.testing.assert_array_equal(np.asarray(opened.levels[2][:10, :10]), mosaic[::4, ::4][:10, :10])
    opened.close()
    flat = open_micrograph(tmp_path / "flat.tif")
    assert not flat.stored_pyramid and [level.shape for level in flat.levels] == [(1500, 1500), (750, 750)]
    flat.close()
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="one 2-D grey image"):
        open_micrograph(tmp_path / "rgb.tif")
    # napari: the plugin claims large grey TIFFs; ordinary and colour ones are left to napari's reader. Its
    # reader reads lazily, multiscale when larger than 1024 px
    assert get_reader(str(tmp_path / "mosaic.tif")) is read_tiff_micrograph
    assert get_reader(str(tmp_path / "flat.tif")) is None and get_reader(str(tmp_path / "rgb.tif")) is None
    [(data, kwargs, kind)] = read_tiff_micrograph(str(tmp_path / "flat.tif"))
    assert kind == "image" and kwargs["multiscale"] and [level.shape for level in data] == [(1500, 1500), (750, 750)]
    tifffile.imwrite(tmp_path / "small.tif", mosaic[:300, :400])
    [(data, kwargs, _)] = read_tiff_micrograph(str(tmp_path / "small.tif"))
    assert not kwargs["multiscale"] and data.shape == (300, 400) and kwargs["contrast_limits"] == (0, 255)


def test_segment_writes_a_zarr_phase_map_block_by_block_and_resumes(shared_data, tmp_path, capsys):
    """`segment --blocks` (automatic above 4096x4096 px), then `describe` and `fractions` of its output."""
    image = shared_data / "uhcs" / "images" / "uhcs0006.tif"
    argv = ["-q", "segment", str(image), str(tmp_path / "phases.png"), "--blocks", "--block-size", "256",
            "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "the phase map is a zarr store" in printed and "in 6 blocks" in printed and "achieved" in printed
    out = tmp_path / "phases.zarr"
    assert PhaseMap.open(out).complete and not (tmp_path / "phases.png").exists()
    assert main(argv) == 0  # run again: every block is done, nothing is recomputed
    assert "in 6 blocks" in capsys.readouterr().out
    assert main(["describe", str(out)]) == 0
    assert "blocks written: 6 of 6" in capsys.readouterr().out
    assert main(["-q", "fractions", str(out)]) == 0
    table = capsys.readouterr().out
    assert "phases.zarr" in table and "ferrite matrix" in table


def test_segment_reads_a_tiff_above_the_large_size_lazily(shared_data, tmp_path, capsys, monkeypatch):
    """With the large-micrograph size lowered, a plain `segment` of a UHCS TIFF takes the lazy block path;
    an information band is left out by its row count."""
    from napari_microsynth.core import large_image

    monkeypatch.setattr(large_image, "LARGE_PIXELS", 100_000)
    image = shared_data / "uhcs" / "images" / "uhcs0006.tif"
    argv = ["-q", "segment", str(image), str(tmp_path / "phases.png"), "--info-band", "20", "--block-size", "256",
            "--threads", "1"]
    assert main(argv) == 0
    assert "phase map 645x464 px in 6 blocks" in capsys.readouterr().out
    assert PhaseMap.open(tmp_path / "phases.zarr").shape == (464, 645)
