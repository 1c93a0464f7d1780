"""tests/observability: metrics, dashboards, alert rules and logs, checked against a real Prometheus.

Helpers live in observability_support.py beside this file; put this directory on sys.path so the
test modules import it under any pytest import mode.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
