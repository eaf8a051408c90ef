"""Reproduce the tap-withdrawal experiment table end to end, with a figure.

Runs every protocol of both shipped TW circuits, reads the behaviour, checks the four
biological facts of shared/reference/tap_withdrawal.md and saves a CSV per circuit and
a figure (traces under tap / anterior / posterior touch, bar chart per ablation).

    python scripts/tap_withdrawal.py [--out out/tap_withdrawal]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import neurosim as ns
from neurosim.behaviour import format_table, run_experiments, write_table
from neurosim.plot import plot_experiments, save_figure

ROOT = Path(__file__).resolve().parents[1]
CIRCUITS = {"lechner": ROOT / "circuits" / "tap_withdrawal.yaml",
            "anatomical": ROOT / "circuits" / "tap_withdrawal_anatomical.yaml"}


def biological_facts(rows) -> list[tuple[str, bool, str]]:
    """(fact, reproduced?, evidence) for the four facts of the reference."""
    by = {r.protocol: r for r in rows}
    tap, ant, post = by["tap"], by["anterior"], by["posterior"]
    no_plm, half_plm = by["tap_no_PLM"], by["tap_half_PLM"]
    return [
        ("intact tap -> reversal", tap.label == "reversal", f"score {tap.score:+.3f} ({tap.label})"),
        ("anterior touch -> reversal", ant.label == "reversal", f"score {ant.score:+.3f} ({ant.label})"),
        ("posterior touch -> forward", post.label == "forward", f"score {post.score:+.3f} ({post.label})"),
        ("PLM ablation -> more reversal after tap", no_plm.score > tap.score,
         f"{no_plm.score:+.3f} vs intact {tap.score:+.3f}"),
        ("one PLM ablated -> (almost) no effect", abs(half_plm.score - tap.score)
         < abs(no_plm.score - tap.score) / 2, f"{half_plm.score:+.3f} vs intact {tap.score:+.3f}"),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/tap_withdrawal", help="output folder")
    parser.add_argument("--integrator", default="dopri5")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, path in CIRCUITS.items():
        circuit = ns.load_circuit(path)
        rows, results = run_experiments(circuit, integrator=args.integrator, dt_out=1.0)
        print(f"\n== {circuit.name} ({path.name}) ==")
        print(format_table(rows))
        print("\nbiological facts:")
        for fact, ok, evidence in biological_facts(rows):
            print(f"  [{'x' if ok else ' '}] {fact:42s} {evidence}")
        write_table(rows, out / f"{label}.csv")
        spec = circuit.readout()
        fig = plot_experiments(rows, results, threshold=spec.threshold,
                               neurons=["AVA", "AVB", "REV", "FWD"],
                               trace_protocols=["tap", "anterior", "posterior"], title=circuit.name)
        save_figure(fig, out / f"{label}.png")
        print(f"-> {out / f'{label}.csv'}, {out / f'{label}.png'}")


if __name__ == "__main__":
    main()
