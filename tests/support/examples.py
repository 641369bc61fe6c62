"""The examples are scripts, not a package: each is loaded from its file under a name of its own."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.checkout import ROOT


def ocpp_example(name: str) -> ModuleType:
    """examples/ocpp/NAME.py as a module, loaded once per test run."""
    module_name = f"fwrepo_example_ocpp_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / "ocpp" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
