"""The docs' generated sections: the text between a script's start and end markers."""

import re
from pathlib import Path


def write_section(path: Path, start: str, end: str, generated: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` by ``generated``."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no generated-section markers {start!r}")
    path.write_text(pattern.sub(lambda _: f"{start}\n{generated}{end}", text), encoding="utf-8")
    print(f"-> {path}")
