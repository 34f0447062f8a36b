"""``python -m sofamesh.pilot [options]``: the same as ``sofamesh pilot [options]``."""

from __future__ import annotations

import sys

from sofamesh.pilot.cli import main

sys.exit(main(["pilot", *sys.argv[1:]]))
