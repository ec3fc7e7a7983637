"""The README's examples are code: every Python block compiles, and the sans-I/O one runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_python_block_compiles():
    blocks = python_blocks()
    assert blocks
    for block in blocks:
        # Snippets may use top-level ``await`` (as in ``python -m asyncio``).
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_hand_driven_example_runs():
    [block] = [b for b in python_blocks() if "tracker.poll()" in b and "ManualClock()" in b]
    namespace: dict[str, object] = {}
    exec(block, namespace)  # its asserts are the test
    assert namespace["event"].key == "a"  # type: ignore[attr-defined]
