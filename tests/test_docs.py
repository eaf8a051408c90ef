"""Every Python example in README.md and docs/*.md runs as written."""

import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def examples():
    for page in PAGES:
        for k, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            if "# doc: skip" not in block:
                yield pytest.param(block, id=f"{page.name}-{k}")


@pytest.mark.parametrize("code", list(examples()))
@pytest.mark.filterwarnings("default::neurosim.RestWarning")  # a page may show one
def test_example_runs(code, tmp_path, monkeypatch):
    os.symlink(ROOT / "circuits", tmp_path / "circuits")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc example>", "exec"), {"__name__": "__doc_example__"})
