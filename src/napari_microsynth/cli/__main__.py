"""``python -m napari_microsynth.cli``: the ``microsynth`` command."""
import sys

from . import main

sys.exit(main())
