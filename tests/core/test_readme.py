"""The README is for users, and its code is code: every block runs in a test or is an excerpt
of an example that a test runs (tests/examples); its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def blocks(language: str, text: str | None = None) -> list[str]:
    text = README.read_text() if text is None else text
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def excerpt_of(block: str, folder: Path, pattern: str) -> Path | None:
    """The file under ``folder`` holding ``block``'s lines, contiguous (blank lines aside)."""
    wanted = _lines(block)
    for path in sorted(folder.rglob(pattern)):
        have = _lines(path.read_text())
        for start in range(len(have) - len(wanted) + 1):
            if have[start : start + len(wanted)] == wanted:
                return path
    return None


def test_short_and_opens_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first = blocks("sh")[0]
    assert text.index(first) < text.index("## ")  # above the first section
    commands = _lines(first)
    assert len(commands) == 2
    assert commands[0].endswith("heartbeat-monitor demo")
    assert commands[1] == "scripts/test"
    assert "pip install 'aio-heartbeat-monitor[socketio]'" in text
    assert "Python 3.11" in text
    assert "```mermaid" in text  # the picture of beat -> expiry -> notify


def test_the_hand_driven_example_runs():
    [block] = [b for b in blocks("python") if "ManualClock()" in b]
    namespace: dict[str, object] = {}
    exec(block, namespace)  # its asserts are the test
    assert namespace["event"].key == "a"  # type: ignore[attr-defined]


def test_every_other_python_block_is_an_excerpt_of_an_example():
    for block in blocks("python"):
        if "ManualClock()" in block:
            continue
        assert excerpt_of(block, ROOT / "examples", "*.py"), block


def test_every_local_link_leads_to_a_file():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://")):
            continue
        assert (ROOT / target).exists(), target


def test_docs_python_blocks_compile():
    import ast

    for page in sorted((ROOT / "docs").rglob("*.md")):
        for block in blocks("python", page.read_text()):
            if block.lstrip().startswith("--8<--"):
                continue  # an excerpt of an example, included at build time
            compile(block, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
