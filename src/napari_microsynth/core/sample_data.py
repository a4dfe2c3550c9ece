"""The sample micrograph shipped with napari-microsynth (UHCS, MIT; see resources/sample_data/ATTRIBUTION.md)."""
from __future__ import annotations

from .sample import Provenance, Sample
from .schema import PhaseSchema

SAMPLE_NAME = "uhcs1648"
# From uhcs-metadata.csv (micrograph_id 1648), with the property names and units core.datasets uses:
# scale bar 20 um = 103 px; annealed at 800 C for 24 h, quenched.
SAMPLE_PIXEL_SIZE_UM = 20.0 / 103.0
SAMPLE_PROPERTIES = {"anneal_temperature_c": 800.0, "anneal_time_h": 24.0}
SAMPLE_EXTRA = {"micrograph_id": 1648, "cool_method": "Q", "magnification": "982x",
                "primary_microconstituent": "spheroidite"}


def load_sample() -> Sample:
    """The bundled UHCS micrograph (test split of MatSeg's 16/4/4 split) with its four-phase mask.

    See ``resources/sample_data/ATTRIBUTION.md`` for origin, licence and citations.
    """
    from .io import read_mask, read_micrograph
    from ..resources import resource_path

    schema = PhaseSchema.bundled("uhcs")
    # The bundled file's information band is already cropped off, so nothing is cut.
    image, _ = read_micrograph(resource_path("sample_data", f"{SAMPLE_NAME}.tif"), info_band=None)
    mask = read_mask(resource_path("sample_data", f"{SAMPLE_NAME}.npy"), schema)
    return Sample(
        image=image,
        schema=schema,
        mask=mask,
        name=SAMPLE_NAME,
        pixel_size_um=SAMPLE_PIXEL_SIZE_UM,
        properties=dict(SAMPLE_PROPERTIES),
        provenance=Provenance(
            origin="real",
            source=f"UHCS {SAMPLE_NAME}.tif (CMU/NIST, hdl.handle.net/11256/940; mask MatSeg 2022)",
            extra=dict(SAMPLE_EXTRA),
        ),
    )
