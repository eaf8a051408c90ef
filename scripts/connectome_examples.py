"""The transcripts of docs/connectome.md: circuits built from the connectome, and a run.

    python scripts/connectome_examples.py          # print the section
    python scripts/connectome_examples.py --docs   # and write it into docs/connectome.md

Each command runs as a user would type it, in a scratch folder, and its output is quoted
as printed (the run's wall time is a timing and names its machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_sections import publish_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "connectome.md"

COMMANDS = (
    ("connectome", "cook2019", "--neurons", "tap_withdrawal", "-o", "tw_lr.yaml"),
    ("connectome", "cook2019", "--neurons", "tap_withdrawal", "--merge-classes", "-o",
     "tw_classes.yaml"),
    ("connectome", "cook2019", "--neurons", "whole_worm", "-o", "worm.yaml"),
    ("run", "worm.yaml", "-p", "posterior_touch", "-o", "worm.h5"),
)


def transcript() -> str:
    """Every command of :data:`COMMANDS` and what it printed, as one shell block."""
    lines = ["```"]
    with tempfile.TemporaryDirectory() as scratch:
        for command in COMMANDS:
            done = subprocess.run([sys.executable, "-m", "neurosim.cli", *command], cwd=scratch,
                                  capture_output=True, text=True,
                                  env=dict(os.environ, COLUMNS="100"))
            if done.returncode != 0:
                raise SystemExit(f"neurosim {' '.join(command)} failed:\n{done.stderr}")
            lines.append("$ neurosim " + " ".join(command))
            lines += [line for line in (done.stderr + done.stdout).splitlines()
                      if not line.startswith("neurosim: compiling") and "compiled in" not in line]
    lines.append("```")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", action="store_true", help="write docs/connectome.md's section")
    args = parser.parse_args(argv)
    publish_section(transcript(), DOC, __file__, args.docs)


if __name__ == "__main__":
    main()
