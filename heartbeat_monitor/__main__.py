"""``python -m heartbeat_monitor``: the ``heartbeat-monitor`` command."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
