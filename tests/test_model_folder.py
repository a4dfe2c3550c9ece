"""Model folders: one save/load path (models.folder.ModelFolderMixin) for segmenters, generators and feature
extractors, with one identity check and a single writer under ``accelerate launch``."""
from __future__ import annotations

import pytest
import torch

from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.generators import load_generator
from napari_microsynth.generators.pf_diffseg import PFDiffSeg
from napari_microsynth.generators.super_resolution import SuperResolution
from napari_microsynth.generators.two_stage import TwoStage
from napari_microsynth.models.folder import folder_checksum
from napari_microsynth.models.segmenter import Segmenter
from napari_microsynth.resources import resource_path

UHCS = PhaseSchema.bundled("uhcs")


def tiny_segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter.build(UHCS, preset="tiny", tile_size=64)


def as_process(monkeypatch, rank: int, sent: list) -> None:
    """Make this process look like process ``rank`` of a two-process run; the main process's broadcast
    goes into ``sent``, the others receive ``sent[0]``."""
    import torch.distributed as dist

    def broadcast(objects: list, src: int) -> None:
        assert src == 0
        if rank == 0:
            sent.append(objects[0])
        else:
            objects[0] = sent[0]

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)


def test_only_the_main_process_writes_and_every_process_gets_the_checksum(monkeypatch, tmp_path):
    sent: list = []
    as_process(monkeypatch, 0, sent)
    main = tiny_segmenter().save(tmp_path / "main")
    assert sent == [(True, folder_checksum(main))] and (main / "config.json").is_file()

    as_process(monkeypatch, 1, sent)
    other = tiny_segmenter()
    other.save(tmp_path / "other")
    assert not (tmp_path / "other").exists()  # a process other than the main one writes nothing
    assert other.model_checksum == folder_checksum(main)


def test_a_failed_write_on_the_main_process_raises_on_every_process(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should go")
    sent: list = []
    as_process(monkeypatch, 0, sent)
    with pytest.raises(FileExistsError):
        tiny_segmenter().save(blocked)
    as_process(monkeypatch, 1, sent)
    with pytest.raises(FileExistsError):  # the other process is told, not left waiting
        tiny_segmenter().save(tmp_path / "elsewhere")


def test_each_kind_of_model_refuses_another_kinds_folder_in_one_line(tmp_path):
    segmenter = tiny_segmenter().save(tmp_path / "segmenter")
    pf = PFDiffSeg(UHCS, "tiny", device="cpu").save(tmp_path / "pf")
    cases = [
        (lambda: Segmenter.load(pf), f"{pf} holds a pf-diffseg model, not a segmenter model"),
        (lambda: PFDiffSeg.load(segmenter), f"{segmenter} holds a segmenter model, not a pf-diffseg model"),
        (lambda: TwoStage.load(pf), f"{pf} holds a pf-diffseg model, not a two-stage model"),
        (lambda: SuperResolution.load(pf), f"{pf} holds a pf-diffseg model, not a super-resolution model"),
    ]
    for load, message in cases:
        with pytest.raises(ValueError) as refused:
            load()
        assert str(refused.value) == message


def test_bundled_folders_load_on_the_cpu_with_their_checksum():
    segmenter_folder = resource_path("models", "plm-uhcs-demo")
    segmenter = Segmenter.load(segmenter_folder)
    assert segmenter.model_checksum == folder_checksum(segmenter_folder)
    assert segmenter.training_record["image_statistics"]["n_images"] == 16
    for name in ("pf-diffseg-uhcs-demo", "two-stage-gan-uhcs-demo", "vqvae-pixelcnn-uhcs-demo",
                 "phasefield-cyclegan-iron-demo", "tim3-uhcs-demo"):
        generator = load_generator(resource_path("models", name))
        assert generator.device == torch.device("cpu")
        assert generator.model_checksum == folder_checksum(resource_path("models", name))
