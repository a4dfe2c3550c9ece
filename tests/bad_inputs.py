"""The bad-input battery (issue 19): command lines that must end in exit status 2 and one ``error:`` line.

Each row runs ``microsynth -q <argv>`` after writing its ``files`` (path under a fresh empty folder -> text).
In ``argv``, ``{data}`` is the real data folder (``shared_data``) and ``{tmp}`` that fresh folder. ``message`` must appear in the
error line. Add a row for every bad input that is fixed, so the battery grows with the program.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GENERATE = ("generate", "pf-diffseg-uhcs-demo", "{tmp}/pairs.zarr", "--steps", "2", "--device", "cpu",
            "--threads", "1")
SEGMENT = ("segment", "{data}/uhcs/images/uhcs1648.tif", "{tmp}/map.png", "--device", "cpu",
           "--threads", "1")
PLM_CONFIG = (Path(__file__).resolve().parents[1] / "resources" / "models" / "plm-uhcs-demo" / "config.json").read_text()
EXPORT_PLAN = '{"format": "napari-microsynth-training-set-plan", "version": 1, "settings": {}, "samples": []}'


@dataclass(frozen=True)
class BadInput:
    name: str
    argv: tuple[str, ...]
    message: str
    files: dict[str, str] = field(default_factory=dict)


BAD_INPUTS = [
    BadInput("describe a missing folder", ("describe", "/no/such/folder"), "no/such/folder"),
    BadInput("import with an unknown schema", ("import", "{data}/uhcs", "{tmp}/x.zarr", "--schema", "steel"),
             "steel"),
    BadInput("import into an existing folder", ("import", "{data}/uhcs", "{tmp}/exists"), "already exists",
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
             "steps must be in [1, inf], got 0"),
    BadInput("generate with a sampler the family does not have",
             (*GENERATE, "--sampler", "euler", "--fractions", "0.7,0.1,0.1,0.1"),
             "sampler must be one of ddim, dpm++; got 'euler'"),
    BadInput("train-generator of an unknown family", ("train-generator", "stable-diffusion", "{data}/uhcs", "--out",
                                                      "{tmp}/run"), "no generator 'stable-diffusion'; available: "),
    BadInput("train-generator --set of an unknown setting",
             ("train-generator", "pf-diffseg", "{data}/uhcs", "--set", "stepz=3", "--out", "{tmp}/run"),
             "--set 'stepz=3': expected KEY=VALUE with KEY one of "),
]
