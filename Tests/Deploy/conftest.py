"""Fixtures of the deploy-kit tests; the shared helpers live in deploylib.py (a plain module, so that running
Tests/EndToEnd, Tests/Faults and Tests/Deploy in one pytest session does not mix up their `conftest` imports)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploylib import *  # noqa: E402,F401,F403  (fixtures and helpers)
