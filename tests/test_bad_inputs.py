"""Every row of the bad-input battery (tests/bad_inputs.py) ends in exit status 2 and one clear error line,
and leaves the files it was given as they were."""
from __future__ import annotations

import pytest
from bad_inputs import BAD_INPUTS, BadInput

from napari_microsynth.cli import EXIT_BAD_INPUT, main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_bad_input_ends_in_one_error_line(case: BadInput, shared_data, tmp_path, capsys):
    fill = {"data": shared_data, "tmp": tmp_path}
    for name, text in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert main(["-q", *(arg.format(**fill) for arg in case.argv)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert case.message in err, err
    for name, text in case.files.items():
        assert (tmp_path / name).read_text() == text


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
