"""What a sweep costs over the same runs in one simulate_batch call (docs/distributed.md).

    python scripts/sweep_overhead.py [--runs 10000] [--docs]

Runs a grid of ``--runs`` parameter sets of the tap-withdrawal circuit (two synaptic
weights, protocol ``tap``, dopri5 at rtol 1e-6, AVA and AVB recorded every 10 ms) three
ways, each once its kernels are compiled: in one ``simulate_batch`` call in memory; as a
sweep in this process into an HDF5 file; and as a sweep on a ``LocalCluster`` of one
worker process per processor.  Prints the rates and the per-chunk cost, and checks that
the three give the same traces bit for bit.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import neurosim as ns
from neurosim.io.sweep_file import load_sweep
from neurosim.sweep import loads_sweep_spec, plan_sweep, sweep, theta_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_sections import publish_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "distributed.md"
CHUNK = 1000
REPEATS = 3  # each way, the fastest counts (the machine may be shared)


def spec_text(runs: int) -> str:
    side = math.isqrt(runs)
    return ("parameters:\n"
            f"  - {{select: \"synapses[AVD->AVA].w\", range: [0.5, 3.0], steps: {side}}}\n"
            f"  - {{select: \"synapses[PVC->AVB].w\", range: [0.5, 3.0], steps: {side}}}\n"
            "protocols: [tap]\nsimulation: {dt_out: 10.0}\nrecord: [AVA, AVB]\n"
            f"chunk: {CHUNK}\n")


def measure(runs: int) -> dict:
    circuit = ns.load_circuit(ROOT / "circuits" / "tap_withdrawal.yaml")
    spec = loads_sweep_spec(spec_text(runs))
    plan = plan_sweep(circuit, spec)
    theta = theta_rows(plan, slice(0, plan.n_runs))
    options = dict(dt_out=10.0, record=["AVA", "AVB"])
    ns.simulate_batch(circuit, theta[:2], "tap", **options)  # compiled before the clocks
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"runs": plan.n_runs, "chunks": plan.n_chunks, "workers": workers}
    batches = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        batch = ns.simulate_batch(circuit, theta, "tap", **options)
        batches.append(time.perf_counter() - started)
    out["batch_s"] = min(batches)
    with tempfile.TemporaryDirectory() as folder:
        here = [sweep(circuit, spec, Path(folder) / f"here{k}.h5") for k in range(REPEATS)]
        out["here_s"] = min(s.seconds for s in here)
        from neurosim.distributed import connect
        client, owned = connect(workers=workers)
        try:
            sweep(circuit, loads_sweep_spec(spec_text(4)), Path(folder) / "warm.h5",
                  client=client)  # every worker has its kernels loaded
            there = [sweep(circuit, spec, Path(folder) / f"there{k}.h5", client=client)
                     for k in range(REPEATS)]
            out["there_s"] = min(s.seconds for s in there)
        finally:
            for thing in owned:
                thing.close()
        a, b = load_sweep(here[0].path), load_sweep(there[0].path)
        out["equal"] = (np.array_equal(a.V, batch.V) and np.array_equal(b.V, batch.V))
    return out


def markdown(m: dict) -> str:
    rate = {k: m["runs"] / m[f"{k}_s"] for k in ("batch", "here", "there")}
    per_chunk = (m["here_s"] - m["batch_s"]) / m["chunks"]
    return (
        f"{m['runs']:,} runs of `tap` ({m['chunks']} chunks of {CHUNK:,}; dopri5, rtol 1e-6, "
        f"AVA and AVB every 10 ms), kernels compiled before the clocks, fastest of {REPEATS} "
        f"each, on {m['workers']} cores:\n\n"
        "| how | seconds | runs/s |\n|---|---|---|\n"
        f"| one `simulate_batch` call, in memory | {m['batch_s']:.2f} s | "
        f"{rate['batch']:,.0f} runs/s |\n"
        f"| `sweep`, this process, to HDF5 | {m['here_s']:.2f} s | {rate['here']:,.0f} runs/s |\n"
        f"| `sweep`, LocalCluster of {m['workers']} one-thread workers, to HDF5 | "
        f"{m['there_s']:.2f} s | {rate['there']:,.0f} runs/s |\n\n"
        f"The sweep in this process costs {per_chunk * 1e3:+.0f} ms per chunk over the batch "
        f"({m['here_s'] / m['batch_s']:.2f}× its time); on the cluster "
        f"{m['there_s'] / m['batch_s']:.2f}×. Traces bit for bit equal in all three: "
        f"{'yes' if m['equal'] else 'NO'}.\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--docs", action="store_true", help="write docs/distributed.md's table")
    args = parser.parse_args(argv)
    publish_section(markdown(measure(args.runs)), DOC, __file__, args.docs)


if __name__ == "__main__":
    main()
