"""The bad-input battery (issue 19): command lines that must end in exit status 2 and one ``error:`` line.

Each row runs ``microsynth -q <argv>`` in a fresh empty folder ``{tmp}`` after (in this order) copying
``copies`` (path under ``{tmp}`` -> folder or file to copy), copying a small valid two-sample store to
``{tmp}/s.zarr`` when ``store`` is set, deleting ``removed`` and writing ``files`` (path -> text or bytes):
damage injected into good files. In ``argv``, ``{data}`` is the real data folder (``shared_data``).
``message`` must appear in the error line. Add a row for every bad input that is fixed, so the battery
grows with the program.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ("generate", "pf-diffseg-uhcs-demo", "{tmp}/pairs.zarr", "--steps", "2", "--device", "cpu",
            "--threads", "1")
FRACTIONS = ("--fractions", "0.7,0.1,0.1,0.1")
SEGMENT = ("segment", "{data}/uhcs/images/uhcs1648.tif", "{tmp}/map.png", "--device", "cpu",
           "--threads", "1")
PLM = ROOT / "resources" / "models" / "plm-uhcs-demo"
PLM_CONFIG = (PLM / "config.json").read_text()
EXPORT_PLAN = '{"format": "napari-microsynth-training-set-plan", "version": 1, "settings": {}, "samples": []}'
TRAIN_SEGMENTER = ("train-segmenter", "{data}/uhcs", "--preset", "tiny", "--tile", "64", "--steps", "2",
                   "--device", "cpu", "--threads", "1", "--out", "{tmp}/run")


def _encoded(fmt: str, size: tuple[int, int] = (64, 64), scale: int = 255) -> bytes:
    pixels = (np.random.default_rng(0).random(size) * scale).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _zero_tiff() -> bytes:
    import warnings

    import tifffile

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a 0x0 TIFF does not conform
        tifffile.imwrite(buffer, np.zeros((0, 0), np.uint8))
    return buffer.getvalue()


def _config_with(**changes) -> str:
    config = json.loads(PLM_CONFIG)
    config["arch_kwargs"].update(changes)
    return json.dumps(config)


def _overlay() -> bytes:
    """A 64x64 grey micrograph with a red square painted on it, as an RGB PNG."""
    grey = (np.random.default_rng(0).random((64, 64)) * 200 + 20).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[10:20, 10:20] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _schema(**masks) -> str:
    """A two-phase schema.json (grey matrix, red carbide) with ``masks`` as its "masks" entry."""
    phases = [{"id": 0, "name": "matrix", "color": [90, 90, 90]}, {"id": 1, "name": "carbide", "color": [255, 0, 0]}]
    return json.dumps({"name": "alloy", "phases": phases, **({"masks": masks} if masks else {})})


PNG, JPEG = _encoded("PNG"), _encoded("JPEG")
OVERLAY = _overlay()
MASK = _encoded("PNG", (64, 64), scale=0)
ZERO_TIFF = _zero_tiff()
UHCS_TIFF = ROOT / "tests" / "data" / "uhcs" / "images" / "uhcs0006.tif"


@dataclass(frozen=True)
class BadInput:
    name: str
    argv: tuple[str, ...]
    message: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    copies: dict[str, Path] = field(default_factory=dict)
    store: bool = False
    removed: tuple[str, ...] = ()


BAD_INPUTS = [
    BadInput("describe a missing folder", ("describe", "/no/such/folder"), "no/such/folder"),
    BadInput("import with an unknown schema", ("import", "{data}/uhcs", "{tmp}/x.zarr", "--schema", "steel"),
             "steel"),
    BadInput("import into an existing folder", ("import", "{data}/uhcs", "{tmp}/exists"),
             "exists and is not a napari-microsynth store; refusing to delete or write into it",
             {"exists/keep.txt": "user data"}),
    BadInput("generate -n 0", (*GENERATE, "-n", "0", "--fractions", "0.7,0.1,0.1,0.1"), "-n must be at least 1"),
    BadInput("generate -n negative", (*GENERATE, "-n", "-3", "--fractions", "0.7,0.1,0.1,0.1"),
             "-n must be at least 1"),
    BadInput("generate --csv with fewer rows than -n", (*GENERATE, "-n", "5", "--csv", "{tmp}/targets.csv"),
             "has 2 condition rows but -n asks for 5 pairs",
             {"targets.csv": "ferrite matrix,cementite network,spheroidite,widmanstaetten\n"
                             "0.7,0.1,0.1,0.1\n0.5,0.3,0.1,0.1\n"}),
    BadInput("generate negative fraction", (*GENERATE, "--fractions", "0.7,-0.1,0.2,0.2"),
             "fractions cannot be negative: cementite network -0.1"),
    BadInput("generate too few fractions", (*GENERATE, "--fractions", "0.5,0.5"), "one value per phase (4: "),
    BadInput("generate fractions not numbers", (*GENERATE, "--fractions", "a,b,c,d"), "comma-separated numbers"),
    BadInput("generate all-zero fractions", (*GENERATE, "--fractions", "0,0,0,0"), "all zero"),
    BadInput("generate NaN fraction", (*GENERATE, "--fractions", "nan,0.1,0.1,0.1"), "finite numbers"),
    BadInput("generate fractions overflowing the sum", (*GENERATE, "--fractions", "1e308,1e308,0,0"),
             "too large to add up"),
    BadInput("segment negative ratio", (*SEGMENT, "--ratio", "0.5,-0.2,0.5,0.2"),
             "fractions cannot be negative: cementite network -0.2"),
    BadInput("segment ratio of the wrong length", (*SEGMENT, "--ratio", "0.5,0.5"), "one value per phase"),
    BadInput("segment with weights that are not safetensors", (*SEGMENT, "--model", "{tmp}/model"),
             "segmenter.safetensors is not a readable safetensors file",
             {"model/config.json": PLM_CONFIG, "model/segmenter.safetensors": "not weights"}),
    BadInput("export --overwrite into a folder holding a user's file",
             ("export", "{data}/uhcs", "--tile", "128", "--overwrite", "--out", "{tmp}/set"),
             "holds files the export did not write (notes.txt)",
             {"set/export_plan.json": EXPORT_PLAN, "set/notes.txt": "my notes"}),
    BadInput("generate with a sampling option out of its range", (*GENERATE[:3], "--steps", "0", *GENERATE[5:],
                                                                  "--fractions", "0.7,0.1,0.1,0.1"),
             "--steps must be in [1, inf], got 0"),
    BadInput("generate with a sampler the family does not have",
             (*GENERATE, "--sampler", "euler", "--fractions", "0.7,0.1,0.1,0.1"),
             "--sampler must be one of ddim, dpm++; got 'euler'"),
    BadInput("train-generator of an unknown family", ("train-generator", "stable-diffusion", "{data}/uhcs", "--out",
                                                      "{tmp}/run"), "no generator 'stable-diffusion'; available: "),
    BadInput("train-generator --set of an unknown setting",
             ("train-generator", "pf-diffseg", "{data}/uhcs", "--set", "stepz=3", "--out", "{tmp}/run"),
             "--set 'stepz=3': expected KEY=VALUE with KEY one of "),
    # unreadable, empty and too small micrographs (issue 19 items 8 and 9)
    BadInput("segment an empty PNG", ("segment", "{tmp}/a.png", "{tmp}/map.png"), "a.png: the file is empty (0 bytes)",
             {"a.png": b""}),
    BadInput("segment a truncated PNG", ("segment", "{tmp}/a.png", "{tmp}/map.png"),
             "a.png: not a readable PNG file", {"a.png": PNG[: len(PNG) // 2]}),
    BadInput("segment a PNG with a corrupt body", ("segment", "{tmp}/a.png", "{tmp}/map.png"),
             "a.png: not a readable PNG file", {"a.png": PNG[:16] + b"garbage" * 40}),
    BadInput("segment a truncated JPEG", ("segment", "{tmp}/a.jpg", "{tmp}/map.png"),
             "a.jpg: not a readable JPG file", {"a.jpg": JPEG[: len(JPEG) // 2]}),
    BadInput("segment a text file named .png", ("segment", "{tmp}/a.png", "{tmp}/map.png"),
             "a.png: not a readable PNG file", {"a.png": "just some notes"}),
    BadInput("segment a 0x0 TIFF", ("segment", "{tmp}/a.tif", "{tmp}/map.png"), "a.tif: the image is empty (0x0 pixels)",
             {"a.tif": ZERO_TIFF}),
    BadInput("segment a truncated TIFF", ("segment", "{tmp}/a.tif", "{tmp}/map.png"), "a.tif: not a readable TIF file",
             {"a.tif": UHCS_TIFF.read_bytes()[:5000]}),
    BadInput("segment a 1x1 image", (*SEGMENT[:1], "{tmp}/a.png", *SEGMENT[2:]),
             "a.png: the micrograph is 1x1 px, smaller than the model's 256x256 px window",
             {"a.png": _encoded("PNG", (1, 1))}),
    BadInput("segment a missing micrograph", ("segment", "{tmp}/none.tif", "{tmp}/map.png"), "micrograph not found"),
    BadInput("segment with an info band taller than the image", (*SEGMENT, "--info-band", "9999"),
             "info_band=9999 rows, but the image has"),
    # model folders
    BadInput("segment with a model folder that does not exist", (*SEGMENT, "--model", "{tmp}/nothing"),
             "no model folder"),
    BadInput("segment with weights that do not fit config.json", (*SEGMENT, "--model", "{tmp}/model"),
             "the weights do not fit the network its config.json describes",
             {"model/config.json": _config_with(decoder_channels=[64, 32, 16, 16, 16])}, {"model": PLM}),
    BadInput("segment with truncated weights", (*SEGMENT, "--model", "{tmp}/model"),
             "segmenter.safetensors is not a readable safetensors file",
             {"model/segmenter.safetensors": (PLM / "segmenter.safetensors").read_bytes()[:4000]}, {"model": PLM}),
    BadInput("segment on a device that does not exist", (*SEGMENT[:4], "tpu", *SEGMENT[5:]),
             "--device tpu: unknown device 'tpu'"),
    BadInput("segment --trust without --ratio", (*SEGMENT, "--trust", "1"), "--trust needs --ratio"),
    BadInput("segment NaN ratio", (*SEGMENT, "--ratio", "nan,0.1,0.1,0.1"), "finite numbers"),
    # damaged stores (issue 19 items 5, 9, 10)
    BadInput("describe a store whose root zarr.json is corrupt", ("describe", "{tmp}/s.zarr"),
             "s.zarr/zarr.json is damaged (not readable JSON", {"s.zarr/zarr.json": "{garbage"}, store=True),
    BadInput("describe a store with a garbage array zarr.json", ("describe", "{tmp}/s.zarr"),
             "samples/000001/image/zarr.json is damaged (not readable JSON",
             {"s.zarr/samples/000001/image/zarr.json": "{garbage"}, store=True),
    BadInput("describe a store with a deleted image chunk", ("describe", "{tmp}/s.zarr"),
             "sample 1 (samples/000001): 1 chunk file(s) of image are missing (c/0/0)", store=True,
             removed=("s.zarr/samples/000001/image/c/0/0",)),
    BadInput("export-folders a store with a deleted image chunk", ("export-folders", "{tmp}/s.zarr", "--out", "{tmp}/o"),
             "1 chunk file(s) of image are missing", store=True, removed=("s.zarr/samples/000000/image/c/0/0",)),
    BadInput("export-folders a store with a corrupt image chunk", ("export-folders", "{tmp}/s.zarr", "--out", "{tmp}/o"),
             "sample 0 (samples/000000/image): a chunk cannot be decoded",
             {"s.zarr/samples/000000/image/c/0/0": b"garbage"}, store=True),
    BadInput("describe --full a store with a corrupt mask chunk", ("describe", "--full", "{tmp}/s.zarr"),
             "a chunk cannot be decoded", {"s.zarr/samples/000001/mask/c/0/0": b"\x28\xb5\x2f\xfdgarbage"}, store=True),
    BadInput("fractions of a split the store does not have", ("fractions", "{tmp}/s.zarr", "--split", "nope"),
             "has no split 'nope'", store=True),
    BadInput("tile with tiles larger than every sample", ("tile", "{tmp}/s.zarr", "{tmp}/t.zarr", "--size", "5000"),
             "--size 5000 is larger than every sample", store=True),
    BadInput("import over a store without --overwrite", ("import", "{data}/uhcs", "{tmp}/s.zarr"),
             "replace it with --overwrite", store=True),
    BadInput("import with tiles larger than every micrograph", ("import", "{data}/uhcs", "{tmp}/x.zarr", "--tile", "5000"),
             "--tile 5000 is larger than every micrograph"),
    BadInput("import a generic folder without a schema", ("import", "{tmp}/set", "{tmp}/x.zarr"),
             "needs a phase schema; put schema.json in the folder (draft one with 'microsynth describe", {"set/images/a.png": PNG}),
    BadInput("import a folder with a truncated micrograph", ("import", "{tmp}/set", "{tmp}/x.zarr", "--schema", "uhcs"),
             "not a readable PNG file", {"set/images/a.png": PNG[:100], "set/masks/a.png": MASK}),
    BadInput("export-folders of a folder that is not a store", ("export-folders", "{tmp}/d", "--out", "{tmp}/o"),
             "not a dataset store (no zarr.json)", {"d/notes.txt": "mine"}),
    BadInput("describe a folder that is not a dataset", ("describe", "{tmp}/d"), "not a dataset folder",
             {"d/notes.txt": "mine"}),
    BadInput("export --ratio without synthetic pairs", ("export", "{data}/uhcs", "--ratio", "2", "--out", "{tmp}/o"),
             "needs synthetic pairs"),
    # generate and train
    BadInput("generate --guidance nan", (*GENERATE, "--guidance", "nan", *FRACTIONS), "--guidance-scale must be finite"),
    BadInput("generate with two kinds of targets", (*GENERATE, *FRACTIONS, "--csv", "{tmp}/t.csv"),
             "give only one of --fractions, --csv and --boost-from"),
    BadInput("generate without targets", GENERATE, "say what to generate"),
    BadInput("generate into a folder of the user's", (*GENERATE[:2], "{tmp}/mine", *GENERATE[3:], *FRACTIONS),
             "is not a napari-microsynth store", {"mine/notes.txt": "mine"}),
    BadInput("generate from a model folder that does not exist", ("generate", "{tmp}/nothing", "{tmp}/p.zarr", *FRACTIONS),
             "no model folder"),
    BadInput("train-segmenter --checkpoint-every 0", (*TRAIN_SEGMENTER, "--checkpoint-every", "0"),
             "checkpoint_every (--checkpoint-every) must be at least 1"),
    # a lab's own folder: schema, mask encoding and mask names (issue 20)
    BadInput("describe --propose-schema over an existing schema.json", ("describe", "{tmp}/set", "--propose-schema"),
             "schema.json exists; remove it to propose a new one, or name another file",
             {"set/images/a.png": PNG, "set/masks/a_mask.png": OVERLAY, "set/schema.json": _schema()}),
    BadInput("describe --propose-schema and --schema", ("describe", "{tmp}/set", "--propose-schema", "--schema", "uhcs"),
             "give either --schema or --propose-schema", {"set/images/a.png": PNG, "set/masks/a.png": OVERLAY}),
    BadInput("describe --propose-schema of masks named after no micrograph",
             ("describe", "{tmp}/set", "--propose-schema"), "no micrograph has a mask in masks/",
             {"set/images/a.png": PNG, "set/masks/b.png": OVERLAY}),
    BadInput("import a folder whose micrographs have no mask", ("import", "{tmp}/set", "{tmp}/x.zarr"),
             "no micrograph has a mask in masks/", {"set/images/a.png": PNG, "set/schema.json": _schema()}),
    BadInput("import overlays read as a colour legend", ("import", "{tmp}/set", "{tmp}/x.zarr"),
             "most of them are grey, as in a hand-painted overlay",
             {"set/images/a.png": PNG, "set/masks/a_mask.png": OVERLAY, "set/schema.json": _schema()}),
    BadInput("import with two masks for one micrograph", ("import", "{tmp}/set", "{tmp}/x.zarr"),
             "two masks for micrograph 'a'",
             {"set/images/a.png": PNG, "set/masks/a.png": MASK, "set/masks/a_mask.png": MASK, "set/schema.json": _schema()}),
    BadInput("schema.json: an overlay without a background phase", ("describe", "{tmp}/set"),
             "an overlay needs \"background\"",
             {"set/images/a.png": PNG, "set/schema.json": _schema(encoding="overlay")}),
    BadInput("schema.json: a background that is not a phase", ("describe", "{tmp}/set"),
             "\"masks\" background 'ferrite' is not a phase name (matrix, carbide)",
             {"set/images/a.png": PNG, "set/schema.json": _schema(encoding="overlay", background="ferrite")}),
    BadInput("schema.json: an unknown mask setting", ("describe", "{tmp}/set"), "\"masks\" has unknown keys ['encodng']",
             {"set/images/a.png": PNG, "set/schema.json": _schema(encodng="overlay")}),
    BadInput("schema.json: a mask pattern without {stem}", ("describe", "{tmp}/set"), "pattern must hold {stem} once",
             {"set/images/a.png": PNG, "set/schema.json": _schema(pattern="mask_*")}),
    BadInput("describe --propose-schema of a store", ("describe", "{tmp}/s.zarr", "--propose-schema"),
             "is a dataset store, which holds its schema; --propose-schema is for folders", store=True),
    BadInput("curate without a rule", ("curate", "{tmp}/s.zarr"), "say which rule to apply", store=True),
    BadInput("curate --accept-within over 100 points", ("curate", "{tmp}/s.zarr", "--accept-within", "150"),
             "--accept-within must be 0..100 percentage points, got 150", store=True),
    BadInput("curate a folder that is not a store", ("curate", "{tmp}/d", "--accept-all"), "not a dataset store",
             {"d/notes.txt": "mine"}),
    BadInput("train-generator on a folder without splits", ("train-generator", "phasefield-cyclegan",
             "{data}/fastfinecut_iron", "--preset", "tiny", "--steps", "1", "--device", "cpu", "--out", "{tmp}/g"),
             "no split 'train'; available: none (or 'all' for every micrograph)"),
    BadInput("evaluate-generator of simulator conditions on micrographs that do not record them",
             ("evaluate-generator", "phasefield-cyclegan-iron-demo", "{data}/fastfinecut_iron", "--split", "all",
              "--encoder-split", "all", "-n", "2", "--device", "cpu", "--out", "{tmp}/e"),
             "do not record grains, growth_steps, regularity"),
    BadInput("grain-stats of a store of phase maps", ("grain-stats", "{tmp}/s.zarr", "--out", "{tmp}/g"),
             "not grain-boundary masks", store=True),
]
