"""workshop/play.py as a module (it is a script of the workshop, not part of a package): the one loader the
unit tests of the player and the e2e run of the chapters share."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    if "workshop_play" in sys.modules:
        return sys.modules["workshop_play"]
    spec = importlib.util.spec_from_file_location("workshop_play", ROOT / "workshop" / "play.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["workshop_play"] = module    # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    return module
