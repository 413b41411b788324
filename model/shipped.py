"""Where the models shipped with tileseg live (``model/weights/<name>/``: card.json + .keras)."""

from __future__ import annotations

import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

#: The default of ``tileseg run``, ``demo``, ``bench`` and ``evaluate``.
DEFAULT_MODEL = os.path.join(WEIGHTS_DIR, "aerial-dubai6")

#: The drone model (Aeroscapes, issue 16): ``tileseg demo --drone``; people, vehicles, obstacles from above.
DRONE_MODEL = os.path.join(WEIGHTS_DIR, "drone-aeroscapes")
