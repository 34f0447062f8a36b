"""``python -m sofamesh`` is the ``sofamesh`` command."""

from __future__ import annotations

import sys

from sofamesh.cli import main

sys.exit(main())
