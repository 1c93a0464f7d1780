"""tests/operator: the lag-aware scaling operator (services/operator/wallet_operator).

The package is importable once pyproject.toml maps it (``wallet_operator =
"services/operator/wallet_operator"``); until then, and in a plain checkout, put its directory on
sys.path here so the tests run either way.
"""

import importlib.util
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # harness.py
if importlib.util.find_spec("wallet_operator") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "operator"))
