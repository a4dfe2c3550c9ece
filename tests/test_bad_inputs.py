"""Every row of the bad-input battery (tests/bad_inputs.py) ends in exit status 2 and one clear error line,
and leaves the files it was given as they were; unexpected failures, --debug, --device and the
checkpoint interval of the CLI (issue 19)."""
from __future__ import annotations

import shutil

import pytest
import torch
from bad_inputs import BAD_INPUTS, FRACTIONS, ROOT, BadInput

from napari_microsynth.cli import EXIT_BAD_INPUT, main
from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.core.store import DatasetStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, read_uhcs):
    """A valid store of two 64x64 UHCS pairs, split 'train'."""
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    with DatasetStore.create(path, PhaseSchema.bundled("uhcs")) as store:
        for sample in read_uhcs(2):
            store.append(sample.crop((0, 0, 64, 64)), split="train")
    return path


def _prepare(case: BadInput, tmp_path, small_store) -> None:
    """The row's files in ``tmp_path``: copies, the store, deletions, then written files (see bad_inputs)."""
    for name, source in case.copies.items():
        shutil.copytree(source, tmp_path / name) if source.is_dir() else shutil.copy(source, tmp_path / name)
    if case.store:
        shutil.copytree(small_store, tmp_path / "s.zarr")
    for name in case.removed:
        (tmp_path / name).unlink()
    for name, content in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write = (tmp_path / name).write_bytes if isinstance(content, bytes) else (tmp_path / name).write_text
        write(content)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_bad_input_ends_in_one_error_line(case: BadInput, shared_data, tmp_path, small_store, capsys):
    _prepare(case, tmp_path, small_store)
    fill = {"data": shared_data, "tmp": tmp_path}
    assert main(["-q", *(arg.format(**fill) for arg in case.argv)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert case.message in err, err
    for name, content in case.files.items():
        assert (tmp_path / name).read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_at_least_fifty_kinds_of_bad_input():
    assert len(BAD_INPUTS) >= 50


def test_an_unexpected_failure_is_one_line_naming_the_command_and_debug_shows_the_traceback(monkeypatch, capsys):
    """Issue 19 item 9: anything not foreseen ends in one line (exit status 1); --debug adds the traceback."""
    from napari_microsynth.cli import EXIT_FAILED
    from napari_microsynth.cli import _common

    def broken(path):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(_common, "schema_arg", lambda value: broken(value))
    monkeypatch.setattr("napari_microsynth.cli.data.schema_arg", lambda value: broken(value))
    assert main(["-q", "describe", str(ROOT / "tests" / "data" / "uhcs")]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err == ("error: describe failed: RuntimeError: disk on fire second line; run it again with --debug for "
                   "the traceback")
    assert main(["-q", "--debug", "describe", str(ROOT / "tests" / "data" / "uhcs")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("disk on fire second line")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_anything_is_written(shared_data, tmp_path, capsys):
    argv = ["-q", "generate", "pf-diffseg-uhcs-demo", str(tmp_path / "p.zarr"), "--device", "cuda", *FRACTIONS]
    assert main(argv) == EXIT_BAD_INPUT
    assert "error: --device cuda: CUDA was requested but no CUDA GPU is available" in capsys.readouterr().err
    assert not (tmp_path / "p.zarr").exists()


def test_train_segmenter_checkpoints_as_often_as_asked(shared_data, tmp_path):
    """Issue 19 item 14: --checkpoint-every sets how much a kill can lose (here every step: the last two
    steps' checkpoints are kept)."""
    argv = ["-q", "train-segmenter", str(ROOT / "tests" / "data" / "uhcs"), "--preset", "tiny", "--tile", "64",
            "--steps", "3", "--batch-size", "2", "--checkpoint-every", "1", "--test-split", "", "--threads", "1",
            "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    kept = sorted(p.name for p in (tmp_path / "run" / "work" / "checkpoints").iterdir())
    assert kept == ["checkpoint-2", "checkpoint-3"]


def test_a_model_with_nan_weights_is_refused_not_used(tmp_path, capsys):
    """All-NaN weights once loaded and segmented the sample as "100 % ferrite"."""
    import shutil

    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from napari_microsynth.core.sample_data import load_sample
    from napari_microsynth.resources import resource_path

    folder = tmp_path / "model"
    shutil.copytree(resource_path("models", "plm-uhcs-demo"), folder)
    weights = load_file(str(folder / "segmenter.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              str(folder / "segmenter.safetensors"))
    image = tmp_path / "sample.npy"
    np.save(image, load_sample().image)
    argv = ["-q", "segment", str(image), str(tmp_path / "map.png"), "--model", str(folder), "--threads", "1"]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "segmenter.safetensors" in err
    assert not (tmp_path / "map.png").exists()
