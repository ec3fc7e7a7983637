"""MkDocs hooks: nav slots for pages other team members write (left out until they exist)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def _keep(entry: Any, docs: Path) -> bool:
    if isinstance(entry, dict):
        for title, value in list(entry.items()):
            if isinstance(value, str) and value.endswith(".md") and not (docs / value).exists():
                del entry[title]
            elif isinstance(value, list):
                value[:] = [item for item in value if _keep(item, docs)]
        return bool(entry)
    return not (isinstance(entry, str) and entry.endswith(".md") and not (docs / entry).exists())


def on_config(config: Any) -> Any:
    """Drop nav entries whose page does not exist yet (``mkdocs build --strict`` stays green)."""
    docs = Path(config["docs_dir"])
    nav = config.get("nav")
    if nav:
        nav[:] = [entry for entry in nav if _keep(entry, docs)]
    return config


_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>~?([^<]*)</code>")


def on_page_content(html: str, **_: Any) -> str:
    """The docstrings use Sphinx roles (``:class:`Name```); show them as plain code."""

    def code(match: re.Match[str]) -> str:
        target = match.group(1)
        short = "~" in match.group(0)  # ``:class:`~a.b.C``` shows as ``C``
        return f"<code>{target.rpartition('.')[2] if short else target}</code>"

    return _ROLE.sub(code, html)
