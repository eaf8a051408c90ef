"""docs/neuroml.md's cross-check numbers: neurosim against jNeuroML on the three-cell
example (protocol baseline) and the tap-withdrawal circuit (protocol tap).

    python scripts/neuroml_examples.py          # print the section
    python scripts/neuroml_examples.py --docs   # and write it into docs/neuroml.md

Each cross-check runs jNeuroML (through pyNeuroML, Java) at dt = 0.01 ms and 0.005 ms
and neurosim's dopri5 at rtol = atol = 1e-10 (about a minute on 2 cores); wall times
are timings and name their conditions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_sections import publish_section  # noqa: E402

import neurosim as ns  # noqa: E402
from neurosim.neuroml import crosscheck  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "neuroml.md"
CASES = (("circuits/examples/three_cells.yaml", "baseline"), ("circuits/tap_withdrawal.yaml", "tap"))
DT = 0.01


def section() -> str:
    """The cross-check tables, as `neurosim crosscheck` prints them, in one shell block."""
    lines = []
    for path, protocol in CASES:
        check = crosscheck(ns.load_circuit(ROOT / path), protocol, dt=DT)
        lines += ["```", f"$ neurosim crosscheck {path} --protocol {protocol}", *check.lines(), "```"]
        worst = check.max_difference.max(axis=1)
        lines.append(f"Largest difference over the neurons: {worst[0]:.3g} mV at dt = {DT:g} ms, "
                     f"{worst[1]:.3g} mV at dt = {DT / 2:g} ms; ratios "
                     f"{check.ratio.min():.2f} to {check.ratio.max():.2f}. Wall times: "
                     f"{os.cpu_count()} cores, Java's start included.")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", action="store_true", help="write docs/neuroml.md's section")
    args = parser.parse_args(argv)
    publish_section(section(), DOC, __file__, args.docs)


if __name__ == "__main__":
    main()
