"""Benchmarks: neurosim against its peers, in one process, on one machine.

Prints a table and writes ``bench/results.json``.  Every case reports wall time and the
error against a reference solution, so nobody wins by being wrong.

    python scripts/bench.py            # full run
    python scripts/bench.py --quick    # < 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import neurosim as ns


def random_network(n_neurons: int, n_synapses: int, n_gap: int, seed: int = 0) -> ns.Circuit:
    """A random circuit of TW-like neurons (τ = 10 ms) with sparse synapses and gaps."""
    rng = np.random.default_rng(seed)
    names = [f"N{i}" for i in range(n_neurons)]
    neurons = tuple(ns.Neuron(nm, C=10.0, g_L=1.0, E_L=-70.0, V0=float(rng.uniform(-70, -30)))
                    for nm in names)
    pairs = set()
    while len(pairs) < n_synapses:
        pairs.add((int(rng.integers(n_neurons)), int(rng.integers(n_neurons))))
    synapses = tuple(ns.Synapse(names[j], names[i], w=float(rng.uniform(0, 0.5)),
                                E=float(rng.choice([0.0, -90.0])), mu=-40.0, nu=0.1)
                     for j, i in sorted(pairs))
    gaps = set()
    while len(gaps) < n_gap:
        a, b = sorted(rng.choice(n_neurons, 2, replace=False))
        gaps.add((int(a), int(b)))
    junctions = tuple(ns.GapJunction(names[a], names[b], g=float(rng.uniform(0, 0.2)))
                      for a, b in sorted(gaps))
    drive = ns.Stimulus("sine", tuple(names[:20]), amplitude=15.0, frequency=5.0)
    return ns.Circuit(f"random{n_neurons}", neurons, synapses, junctions,
                      {"drive": drive}, {"run": ns.Protocol(1000.0, ("drive",))})


def best_of(repeats: int, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bench_recording(repeats: int) -> dict:
    """Streaming to HDF5 vs keeping in memory, 300 neurons, 1 s, dopri5."""
    circuit = random_network(300, 4000, 150)
    options = dict(integrator="dopri5", rtol=1e-6, atol=1e-6, dt_out=0.1)
    ns.simulate(circuit, "run", **options)  # compile
    t_mem, mem = best_of(repeats, lambda: ns.simulate(circuit, "run", **options))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.h5"

        def to_disk():
            return ns.simulate(circuit, "run", recorder=ns.HDF5Recorder(path, overwrite=True),
                               **options)
        # the first recorded run of a circuit also writes its YAML text (cached after)
        t_first, _ = best_of(1, to_disk)
        t_h5, disk = best_of(repeats, to_disk)
        assert np.array_equal(disk.V, mem.V)
        size = path.stat().st_size
    return {"case": "recording overhead, 300 neurons, 4000 synapses, 1 s, dopri5, dt_out 0.1 ms",
            "memory_s": t_mem, "hdf5_s": t_h5, "hdf5_first_run_s": t_first,
            "overhead": t_h5 / t_mem - 1.0, "overhead_first_run": t_first / t_mem - 1.0,
            "samples": int(mem.t.size), "file_MB": size / 1e6}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 2 minutes)")
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "python": platform.python_version(), "neurosim": ns.__version__},
               "cases": []}
    rec = bench_recording(repeats)
    results["cases"].append(rec)
    print(f"{rec['case']}: memory {rec['memory_s']:.3f} s, HDF5 {rec['hdf5_s']:.3f} s "
          f"(overhead {100 * rec['overhead']:+.1f} %; first run of the circuit "
          f"{100 * rec['overhead_first_run']:+.1f} %), {rec['file_MB']:.0f} MB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
