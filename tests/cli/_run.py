"""Run ``heartbeat-monitor`` and ``scripts/smoke.py`` as a user would: real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scripts" / "smoke.py"


def run_cli(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(
        [sys.executable, "-m", "heartbeat_monitor._cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    return result


def run_smoke(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``scripts/smoke.py``: the same checks .ci/run makes against the installed wheel."""
    return subprocess.run(
        [sys.executable, str(SMOKE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT.parent,
    )
