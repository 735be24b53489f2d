"""Run pip with the PEP 508 marker environment of another interpreter.

    python pip_for_target.py MARKERS.json PIP-ARGS...

The host's marker environment, updated with the target's values from MARKERS.json, replaces
pip's vendored ``packaging.markers.default_environment``, which ``Marker.evaluate`` looks up
at each call: no pip option does this (see ``ensure_wheelhouse`` in tests/services.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pip._vendor.packaging.markers as markers
from pip._internal.cli.main import main

host = markers.default_environment()
target = json.loads(Path(sys.argv[1]).read_text())
markers.default_environment = lambda: {**host, **target}  # type: ignore[assignment,return-value]
sys.exit(main(sys.argv[2:]))
