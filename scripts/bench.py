"""Benchmarks: neurosim against its peers, in one process, on one machine.

Prints a table and writes ``bench/results.json``.  Every case reports wall time and the
error against a reference solution, so nobody wins by being wrong.

    python scripts/bench.py            # full run
    python scripts/bench.py --quick    # < 2 minutes
    python scripts/bench.py --quick --case whole_worm --out /tmp/ww.json   # one case
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numba
import numpy as np

import brian2_peer
import neurosim as ns

ROOT = Path(__file__).resolve().parents[1]


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


def numpy_rhs(circuit: ns.Circuit, stimuli):
    """The same right-hand side written in vectorised NumPy: the peer for solve_ivp."""
    from neurosim.compile import compile_circuit
    compiled = compile_circuit(circuit)
    n, s = compiled.n_neurons, compiled.n_synapses
    th = compiled.theta
    C, g_L, E_L = th[:n], th[n:2 * n], th[2 * n:3 * n]
    w, E, mu, nu, kappa = (th[4 * n + k * s:4 * n + (k + 1) * s] for k in range(5))
    g = th[4 * n + 5 * s:]
    post = np.repeat(np.arange(n), np.diff(compiled.syn_ptr))
    pre = compiled.syn_pre
    gap_a = np.array([compiled.index(x.a) for x in circuit.gap_junctions], dtype=int)
    gap_b = np.array([compiled.index(x.b) for x in circuit.gap_junctions], dtype=int)
    clamped = ~np.isnan(compiled.hold)
    hold = np.where(clamped, compiled.hold, 0.0)
    current = [(compiled.index(t), st) for st in stimuli if st.quantity == "current" for t in st.targets]
    voltage = [(compiled.index(t), st) for st in stimuli if st.quantity == "voltage" for t in st.targets]
    for i, _ in voltage:
        clamped[i] = True

    def f(t, V):
        V = np.where(clamped, hold, V)
        for i, st in voltage:
            V[i] += st.value(t)
        I = g_L * (E_L - V)
        for i, st in current:
            I[i] += st.value(t)
        syn = w / (1.0 + np.exp(-nu * (V[pre] - mu))) * (E - kappa * V[post])
        I += np.bincount(post, syn, minlength=n)
        gap = g * (V[gap_b] - V[gap_a])
        I += np.bincount(gap_a, gap, minlength=n) - np.bincount(gap_b, gap, minlength=n)
        out = I / C
        out[clamped] = 0.0
        return out

    return f, compiled.theta[3 * n:4 * n].copy(), clamped


def solve_ivp_run(circuit, protocol, method, rtol, atol, t_eval, V0=None):
    """solve_ivp from ``V0`` (default the circuit's V0): give it neurosim's rest, which
    neurosim's own time includes, so that both integrate the same trajectory."""
    from scipy.integrate import solve_ivp
    proto = circuit.protocol(protocol)
    stimuli = circuit.resolve_stimuli(proto)
    f, given, _ = numpy_rhs(circuit, stimuli)
    V0 = given if V0 is None else np.asarray(V0, dtype=float)
    edges = sorted({0.0, proto.duration, *(b for st in stimuli for b in st.breakpoints(proto.duration))})
    out = np.empty((t_eval.size, V0.size))
    V = V0
    for a, b in zip(edges, edges[1:]):
        inside = (t_eval >= a) & (t_eval <= b)
        sol = solve_ivp(f, (a, b), V, method=method, rtol=rtol, atol=atol, dense_output=True)
        out[inside] = sol.sol(t_eval[inside]).T
        V = sol.y[:, -1]
    return out


def tw_one_second() -> ns.Circuit:
    c = ns.load_circuit(ROOT / "circuits" / "tap_withdrawal.yaml")
    return c.replace(protocols={"tap": ns.Protocol(1000.0, ("tap_touch",))})


def free_error(V, reference, clamped):
    return float(np.max(np.abs(V[:, ~clamped] - reference[:, ~clamped])))


def bench_tw_vs_scipy(repeats: int) -> dict:
    """TW circuit, 1 s, dopri5 rtol 1e-6 vs solve_ivp LSODA and RK45 on a NumPy RHS."""
    c = tw_one_second()
    reference = ns.simulate(c, "tap", rtol=1e-12, atol=1e-12, dt_out=1.0)
    rest = [reference.metadata["initial"]["V"][name] for name in c.neuron_names]
    _, _, clamped = numpy_rhs(c, c.resolve_stimuli(c.protocol("tap")))
    rows = {}
    ns.simulate(c, "tap", rtol=1e-6, atol=1e-6, dt_out=1.0)
    t, r = best_of(repeats, lambda: ns.simulate(c, "tap", rtol=1e-6, atol=1e-6, dt_out=1.0))
    rows["neurosim dopri5"] = {"time_s": t, "max_error_mV": free_error(r.V, reference.V, clamped)}
    ns.simulate(c, "tap", rtol=1e-8, atol=1e-8, dt_out=1.0)
    t, r = best_of(repeats, lambda: ns.simulate(c, "tap", rtol=1e-8, atol=1e-8, dt_out=1.0))
    rows["neurosim dopri5 rtol 1e-8"] = {"time_s": t,
                                         "max_error_mV": free_error(r.V, reference.V, clamped)}
    for method in ("LSODA", "RK45"):
        for tol in (1e-6, 1e-8):
            t, V = best_of(max(1, repeats // 2),
                           lambda: solve_ivp_run(c, "tap", method, tol, tol, reference.t, rest))
            rows[f"solve_ivp {method} rtol {tol:g}"] = {"time_s": t,
                                                        "max_error_mV": free_error(V, reference.V, clamped)}
    ours = rows["neurosim dopri5"]
    for name, row in rows.items():
        row["speedup_of_neurosim"] = row["time_s"] / ours["time_s"]
    return {"case": "TW circuit, 1 s, tap, from its rest; neurosim dopri5 (warm, finding the "
                    "rest included) vs solve_ivp on a NumPy RHS (given the rest); speedups "
                    "relative to neurosim at rtol 1e-6",
            "rows": rows}


def bench_batch(n_sets: int) -> dict:
    """Throughput of simulate_batch on the TW circuit (1 s each, adaptive dopri5).

    The error column: largest deviation of the final REV and FWD potentials of the first
    50 parameter sets from single runs at rtol 1e-12."""
    from neurosim.compile import compile_circuit
    c = tw_one_second()
    base = compile_circuit(c).theta
    rng = np.random.default_rng(0)
    params = np.tile(base, (n_sets, 1))
    n = c.n_neurons
    params[:, 4 * n:4 * n + len(c.synapses)] *= rng.uniform(0.5, 1.5, (n_sets, len(c.synapses)))
    exact = np.array([ns.simulate(c, "tap", theta=params[k], rtol=1e-12, atol=1e-12, dt_out=1000.0,
                                  record=["REV", "FWD"]).V[-1] for k in range(50)])
    out = {"case": f"batch of {n_sets} TW simulations, 1 s each, dopri5, each from the rest "
                   "of its own parameters (Newton) unless 'as given'", "rows": {}}
    cases = [(1e-6, "float64", "rest"), (1e-6, "float64", "as_given"), (1e-4, "float64", "rest"),
             (1e-3, "float64", "rest"), (1e-4, "float32", "rest"), (1e-3, "float32", "rest")]
    for rtol, precision, initial in cases:
        options = dict(rtol=rtol, atol=rtol, dt_out=1000.0, precision=precision, initial=initial)
        ns.simulate_batch(c, params[:8], "tap", **options)
        t, b = best_of(2, lambda: ns.simulate_batch(c, params, "tap", record=["REV", "FWD"],
                                                    **options))
        error = (float(np.max(np.abs(b.V[0, :50, -1] - exact))) if initial == "rest"
                 else float("nan"))  # the reference starts at rest
        name = (f"rtol {rtol:g}" + (" float32" if precision == "float32" else "")
                + (", as given (no rest)" if initial == "as_given" else ""))
        out["rows"][name] = {"time_s": t, "simulations_per_s": n_sets / t,
                             "max_error_mV": error, "failed": int(b.failed.sum())}
    return out


@numba.njit(nogil=True)
def fill_ones(a, lo, hi):
    for i in range(lo, hi):
        a[i] = 1.0


def fill_in_threads(nbytes: int, reuse: np.ndarray | None = None) -> float:
    """Seconds to write ``nbytes`` of float64 ones into new memory (or into ``reuse``) on
    numba's threads, with no arithmetic: what storing a batch's output costs at least."""
    threads = numba.get_num_threads()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fill_ones, [np.empty(2)] * threads, [0] * threads, [2] * threads))
        start = time.perf_counter()
        a = np.empty(nbytes // 8) if reuse is None else reuse
        cuts = np.linspace(0, a.size, threads + 1).astype(int)
        list(pool.map(fill_ones, [a] * threads, cuts[:-1], cuts[1:]))
        return time.perf_counter() - start


def bench_batch_output(n_sets: int, repeats: int) -> dict:
    """Batch throughput with real output: TW ``tap`` (1.5 s), dopri5 rtol 1e-6, as given
    (no rests: the output's cost alone), every neuron recorded at dt_out 50, 5 and 1 ms,
    against the same runs recording REV and FWD once (dt_out = the run).  At dt_out 5 and
    1 ms also into an array reused from one call to the next (``out=``: its pages exist)
    and, at 5 ms, streamed to a new HDF5 file (HDF5BatchRecorder).  Cases take turns
    ``repeats`` times; each row is its best turn, ratios are of best turns.  For scale,
    the time of writing the same bytes with no arithmetic on the same threads, into new
    memory and into memory written before, and the ratio a batch would have if its
    writing cost that much on top of its runs (nothing overlapped)."""
    from neurosim.compile import compile_circuit
    c = ns.load_circuit(ROOT / "circuits" / "tap_withdrawal.yaml")
    base = compile_circuit(c).theta
    rng = np.random.default_rng(0)
    params = np.tile(base, (n_sets, 1))
    n = c.n_neurons
    params[:, 4 * n:4 * n + len(c.synapses)] *= rng.uniform(0.5, 1.5, (n_sets, len(c.synapses)))
    options = dict(rtol=1e-6, atol=1e-6, initial="as_given")
    no_output = "no output (dt_out 1500 ms, REV and FWD)"
    cases = {no_output: dict(dt_out=1500.0, record=["REV", "FWD"]),
             "dt_out 50 ms, all 11 neurons": dict(dt_out=50.0),
             "dt_out 5 ms, all 11 neurons": dict(dt_out=5.0),
             "dt_out 5 ms, into a reused array (out=)": dict(dt_out=5.0, reuse=True),
             "dt_out 1 ms, all 11 neurons": dict(dt_out=1.0),
             "dt_out 1 ms, into a reused array (out=)": dict(dt_out=1.0, reuse=True),
             "dt_out 5 ms, all neurons, to a new HDF5 file": dict(dt_out=5.0, file=True)}
    ns.simulate_batch(c, params[:8], "tap", dt_out=5.0, **options)
    samples = {dt_out: int(round(1500.0 / dt_out)) + 1 for dt_out in (5.0, 1.0)}
    arrays = {name: np.empty((1, n_sets, samples[case["dt_out"]], n))
              for name, case in cases.items() if case.get("reuse")}
    times = {name: [] for name in cases}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(repeats):
            for k, (name, case) in enumerate(cases.items()):
                case = dict(case)
                recorder = (ns.HDF5BatchRecorder(Path(tmp) / f"b{turn}_{k}.h5")
                            if case.pop("file", False) else None)
                out = arrays[name] if case.pop("reuse", False) else None
                start = time.perf_counter()
                b = ns.simulate_batch(c, params, "tap", recorder=recorder, out=out, **case,
                                      **options)
                times[name].append(time.perf_counter() - start)
                sizes[name] = int(np.prod(b.V.shape)) * 8 if recorder is None else \
                    os.path.getsize(b.metadata["path"])
                del b
                for path in Path(tmp).glob("*.h5"):
                    path.unlink()
    rows = {}
    base_t = min(times[no_output])
    for name, values in times.items():
        t = min(values)
        rows[name] = {"time_s": t, "simulations_per_s": n_sets / t, "output_MB": sizes[name] / 1e6,
                      "ratio_to_no_output": base_t / t}
    rows["dt_out 5 ms, all neurons, to a new HDF5 file"]["overhead_vs_memory"] = (
        min(times["dt_out 5 ms, all neurons, to a new HDF5 file"])
        / min(times["dt_out 5 ms, all 11 neurons"]) - 1)
    for dt_out in (5.0, 1.0):
        nbytes = sizes[f"dt_out {dt_out:g} ms, all 11 neurons"]
        reused = np.empty(nbytes // 8)
        fill_in_threads(nbytes, reused)
        for label, reuse in (("new memory", None), ("memory written before", reused)):
            t = min(fill_in_threads(nbytes, reuse) for _ in range(repeats + 2))
            rows[f"writing dt_out {dt_out:g} ms's {nbytes / 1e6:.0f} MB alone, {label}"] = {
                "time_s": t, "ratio_if_added_to_no_output": base_t / (base_t + t)}
    return {"case": f"batch of {n_sets} TW tap runs (1.5 s), dopri5 rtol 1e-6, as given, "
                    f"best of {repeats} interleaved turns; ratio = no-output time / this row's",
            "rows": rows}


def bench_own_sigmoids(duration_ms: float) -> dict:
    """A random 200-neuron circuit with 11,769 synapses, every synapse with its own
    (μ, ν) against the same circuit with shared sigmoids: time per right-hand side and
    per synapse (rk4 at dt 0.05 ms, single runs, interleaved, best of 5)."""
    import dataclasses
    c = random_network(200, 11769, 100)
    c = c.replace(protocols={"run": ns.Protocol(duration_ms, ("drive",))})
    rng = np.random.default_rng(1)
    own = c.replace(synapses=tuple(dataclasses.replace(s, mu=float(rng.uniform(-50, -30)),
                                                       nu=float(rng.uniform(0.05, 0.2)))
                                   for s in c.synapses))
    options = dict(integrator="rk4", dt=0.05, dt_out=1.0, v0=np.full(200, -60.0))
    circuits = {"shared sigmoids (one per presynaptic neuron)": c,
                "a sigmoid per synapse (own μ, ν)": own}
    best = {name: (np.inf, 1) for name in circuits}
    for name, circuit in circuits.items():
        ns.simulate(circuit, "run", **options)
    for _ in range(5):
        for name, circuit in circuits.items():
            start = time.perf_counter()
            r = ns.simulate(circuit, "run", **options)
            best[name] = min(best[name], (time.perf_counter() - start, r.stats["rhs_evaluations"]))
    rows = {}
    for name, (t, evaluations) in best.items():
        rows[name] = {"us_per_rhs": t / evaluations * 1e6,
                      "ns_per_synapse": t / evaluations / len(c.synapses) * 1e9}
    shared = rows["shared sigmoids (one per presynaptic neuron)"]["ns_per_synapse"]
    rows["a sigmoid per synapse (own μ, ν)"]["ratio_to_shared"] = (
        rows["a sigmoid per synapse (own μ, ν)"]["ns_per_synapse"] / shared)
    return {"case": f"random 200 neurons / {len(c.synapses):,} synapses / 100 gaps, rk4 dt 0.05 ms, "
                    f"{duration_ms:g} ms, single run: cost per right-hand side", "rows": rows}


def bench_brian2(duration_ms: float, brian2_python: str | None) -> dict:
    """300 neurons / 4000 synapses at dt 0.05 ms vs Brian2 (Cython target), RK4.

    Brian2's RK4 evaluates the summed synaptic currents once per step and holds them
    through the four stages; neurosim's rk4 evaluates the whole right-hand side four
    times.  exp_euler and ltc are neurosim's methods with one synaptic evaluation per
    step, so they are reported beside it, each with its error.
    """
    c = random_network(300, 4000, 150)
    c = c.replace(protocols={"run": ns.Protocol(duration_ms, ("drive",))})
    reference = ns.simulate(c, "run", rtol=1e-10, atol=1e-10, dt_out=1.0)
    rows = {}
    for method in ("rk4", "exp_euler", "ltc"):
        ns.simulate(c, "run", integrator=method, dt=0.05, dt_out=1.0)
        t, ours = best_of(3, lambda: ns.simulate(c, "run", integrator=method, dt=0.05, dt_out=1.0))
        rows[f"neurosim {method}"] = {"time_s": t,
                                      "max_error_mV": float(np.max(np.abs(ours.V - reference.V)))}
    case = f"random 300 neurons / 4000 synapses / 150 gaps, {duration_ms:g} ms, dt 0.05 ms"
    data = brian2_peer.circuit_data(c, duration_ms)
    try:
        t_b, V_b = brian2_peer.run(data, brian2_python, repeats=3)
    except brian2_peer.PeerUnavailable as exc:
        return {"case": case, "skipped": str(exc), "rows": rows}
    rows["brian2 cython rk4"] = {"time_s": t_b,
                                 "max_error_mV": float(np.max(np.abs(V_b - reference.V[:V_b.shape[0]])))}
    for name, row in rows.items():
        row["speedup_of_neurosim"] = t_b / row["time_s"]
    return {"case": case + "; speedup = Brian2 time / this row's time", "rows": rows}


def bench_recording(pairs: int) -> dict:
    """Streaming to HDF5 vs keeping in memory, 300 neurons, 1 s, dt_out 0.1 ms (24 MB).

    Two runs: dopri5 at rtol 1e-6 (a fast kernel: writing the file costs about as much
    as the run) and rk4 at dt 0.05 ms (a run 20 times longer).  Runs to memory, to a new
    file and over an existing file take turns ``pairs`` times; the overhead is the
    median over turns of (file time / memory time − 1), robust to the machine's drift.
    For scale, the time h5py takes to write the same array to a new file on its own, and
    with the file fsynced after (a recorded file is on the disk before it is named)."""
    circuit = random_network(300, 4000, 150)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = (Path(tmp) / f"r{k}.h5" for k in range(10 * pairs + 10))
        for label, options in (("dopri5", dict(integrator="dopri5", rtol=1e-6, atol=1e-6)),
                               ("rk4", dict(integrator="rk4", dt=0.05))):
            options["dt_out"] = 0.1
            memory = ns.simulate(circuit, "run", **options)  # compile

            def timed(recorder=None):
                start = time.perf_counter()
                result = ns.simulate(circuit, "run", recorder=recorder, **options)
                return time.perf_counter() - start, result
            # the first recorded run of a circuit also writes its YAML text (cached after)
            t_first, first = timed(ns.HDF5Recorder(next(paths)))
            assert np.array_equal(first.V, memory.V)
            same = Path(tmp) / "same.h5"
            times = {"memory": [], "new file": [], "overwriting a file": []}
            for _ in range(pairs):
                times["memory"].append(timed()[0])
                times["new file"].append(timed(ns.HDF5Recorder(next(paths)))[0])
                times["overwriting a file"].append(timed(ns.HDF5Recorder(same, overwrite=True))[0])
            for name, values in times.items():
                row = {"time_s": float(np.median(values)), "min_s": min(values)}
                if name != "memory":
                    row["overhead"] = float(np.median(np.divide(values, times["memory"]) - 1))
                rows[f"{label}: {name}"] = row
            if label == "dopri5":
                rows["dopri5: first recorded run of the circuit"] = {
                    "time_s": t_first, "overhead": t_first / np.median(times["memory"]) - 1}

                def raw_write(durable=False):
                    path = next(paths)
                    with h5py.File(path, "w") as f:
                        f.create_dataset("V", data=memory.V, chunks=True)
                    if durable:  # what a recorded file guarantees: on the disk when named
                        fd = os.open(path, os.O_RDONLY)
                        os.fsync(fd)
                        os.close(fd)
                t_raw, _ = best_of(3, raw_write)
                t_durable, _ = best_of(3, lambda: raw_write(durable=True))
                rows["h5py alone, the same array to a new file"] = {
                    "time_s": t_raw, "file_MB": memory.V.nbytes / 1e6}
                rows["h5py alone, the same array, fsynced"] = {"time_s": t_durable}
                for name, t_alone in (("h5py alone", t_raw), ("h5py alone fsynced", t_durable)):
                    rows[f"dopri5: new file / max(memory, {name})"] = {
                        "ratio": float(np.median(times["new file"])
                                       / max(np.median(times["memory"]), t_alone))}
    return {"case": "recording overhead, 300 neurons, 4000 synapses, 1 s, dt_out 0.1 ms "
                    "(medians of interleaved runs)", "rows": rows}


def bench_cold_start() -> dict:
    """Wall time of `neurosim run` on the TW circuit in a fresh process (warm disk cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "neurosim.cli", "run", str(ROOT / "circuits" / "tap_withdrawal.yaml"),
               "-p", "tap", "-o", str(Path(tmp) / "tap.h5"), "--overwrite"]
        subprocess.run(cmd, check=True, capture_output=True)  # fills the compile cache
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return {"case": "neurosim run TW (tap, 1.5 s) in a new process, warm compile cache",
            "rows": {"neurosim run": {"time_s": min(times)}}}


def bench_large_rest(n_neurons: int) -> dict:
    """The rest of a circuit too large for dense Newton: the pre-run alone."""
    c = random_network(n_neurons, 5 * n_neurons, n_neurons // 10)
    seconds, rest = best_of(2, lambda: ns.rest_state(c, "run"))
    return {"case": f"rest of a random {n_neurons:,}-neuron circuit ({5 * n_neurons:,} synapses, "
                    f"{n_neurons // 10:,} gap junctions), above the dense-Newton limit: "
                    "stimulus-free pre-run alone, warm",
            "rows": {"rest_state": {"seconds": seconds, "method": rest.method,
                                    "pre-run ms": rest.prerun_ms,
                                    "max |dV/dt| mV/ms": rest.residual}}}


# --- the whole worm ----------------------------------------------------------------------

WHOLE_WORM = ROOT / "circuits" / "whole_worm.yaml"


def brian2_touch_data(circuit, protocol: str, V0) -> dict:
    """Plain lists describing ``circuit`` under a protocol of current pulses, from ``V0``
    (mV per neuron): the input of :func:`brian2_touch_run_here`."""
    proto = circuit.protocol(protocol)
    pulses = {}
    for st in circuit.resolve_stimuli(proto):
        if st.kind != "pulse" or st.quantity != "current":
            raise ValueError(f"the Brian2 touch peer takes current pulses, not a {st.quantity} {st.kind}")
        for target in st.targets:
            if target in pulses:
                raise ValueError(f"the Brian2 touch peer takes one pulse per neuron ({target} has two)")
            pulses[target] = [st.amplitude, st.start, st.start + st.duration]
    return {"names": list(circuit.neuron_names), "duration_ms": proto.duration,
            "C": [n.C for n in circuit.neurons], "g_L": [n.g_L for n in circuit.neurons],
            "E_L": [n.E_L for n in circuit.neurons], "V0": [float(v) for v in V0],
            "synapses": [[s.pre, s.post, s.w, s.E, s.mu, s.nu, s.kappa] for s in circuit.synapses],
            "gaps": [[g.a, g.b, g.g] for g in circuit.gap_junctions],
            "pulses": pulses, "dt_ms": 0.05, "dt_out_ms": 1.0}


def brian2_touch_run_here(data: dict, repeats: int = 1):
    """(the shortest wall time of ``repeats`` runs, V (samples x neurons, mV)) of Brian2
    (Cython target, RK4 at data["dt_ms"]) on the circuit of :func:`brian2_touch_data`,
    the Cython code compiled beforehand.  Imports only NumPy and Brian2: its source also
    runs under another interpreter (``--brian2-python``)."""
    import time

    import brian2 as b2
    import numpy as np
    b2.prefs.codegen.target = "cython"
    b2.prefs.logging.console_log_level = "ERROR"
    b2.defaultclock.dt = data["dt_ms"] * b2.ms
    names = data["names"]
    index = {nm: i for i, nm in enumerate(names)}

    def build():
        group = b2.NeuronGroup(len(names), """
            dv/dt = (gL * (EL - v) + Isyn + Igap + Iext) / Cm : volt
            Iext = I_pulse * int(t >= t_on) * int(t < t_off) : amp
            Isyn : amp
            Igap : amp
            I_pulse : amp (constant)
            t_on : second (constant)
            t_off : second (constant)
            Cm : farad (constant)
            gL : siemens (constant)
            EL : volt (constant)
            """, method="rk4", name="neurons")
        group.Cm = np.array(data["C"]) * b2.pF
        group.gL = np.array(data["g_L"]) * b2.nS
        group.EL = np.array(data["E_L"]) * b2.mV
        group.v = np.array(data["V0"]) * b2.mV
        amp, t_on, t_off = np.zeros(len(names)), np.zeros(len(names)), np.zeros(len(names))
        for target, (a, on, off) in data["pulses"].items():
            amp[index[target]], t_on[index[target]], t_off[index[target]] = a, on, off
        group.I_pulse, group.t_on, group.t_off = amp * b2.pA, t_on * b2.ms, t_off * b2.ms
        syn = b2.Synapses(group, group, model="""
            w : siemens (constant)
            E : volt (constant)
            mu : volt (constant)
            nu : 1/volt (constant)
            kappa : 1 (constant)
            Isyn_post = w / (1 + exp(-nu * (v_pre - mu))) * (E - kappa * v_post) : amp (summed)
            """, name="chemical")
        pre, post, w, E, mu, nu, kappa = zip(*data["synapses"])
        syn.connect(i=[index[x] for x in pre], j=[index[x] for x in post])
        syn.w, syn.E = np.array(w) * b2.nS, np.array(E) * b2.mV
        syn.mu, syn.nu, syn.kappa = np.array(mu) * b2.mV, np.array(nu) / b2.mV, np.array(kappa)
        gap = b2.Synapses(group, group, model="""
            g : siemens (constant)
            Igap_post = g * (v_pre - v_post) : amp (summed)
            """, name="gap")
        a, b, g = zip(*data["gaps"])
        ia, ib = [index[x] for x in a], [index[x] for x in b]
        gap.connect(i=ia + ib, j=ib + ia)       # a junction is two one-way currents
        gap.g = np.concatenate([g, g]) * b2.nS
        monitor = b2.StateMonitor(group, "v", record=True, dt=data["dt_out_ms"] * b2.ms,
                                  name="monitor")
        return b2.Network(group, syn, gap, monitor), monitor

    warm, _ = build()
    warm.run(1 * b2.ms)  # compiles the Cython code into Brian2's disk cache
    times = []
    for _ in range(repeats):
        net, monitor = build()
        start = time.perf_counter()
        net.run(data["duration_ms"] * b2.ms)
        times.append(time.perf_counter() - start)
    return min(times), np.asarray(monitor.v[:, :] / b2.mV).T


def brian2_touch_run(data: dict, python: str | None = None, repeats: int = 1):
    """:func:`brian2_touch_run_here` in this process if Brian2 imports, else its source
    under ``python``; brian2_peer.PeerUnavailable if neither (as brian2_peer.run)."""
    try:
        import brian2  # noqa: F401
    except Exception as exc:  # Brian2 2.9 fails with AttributeError under NumPy >= 2.3
        if python is None:
            raise brian2_peer.PeerUnavailable(
                f"brian2 does not import here ({type(exc).__name__}: {exc}); pass "
                "--brian2-python with an interpreter that has it") from None
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.json", Path(tmp) / "out.npz"
            src.write_text(json.dumps(data))
            code = (inspect.getsource(brian2_touch_run_here)
                    + "\nimport json, sys\nimport numpy as np\n"
                      "elapsed, V = brian2_touch_run_here(json.loads(open(sys.argv[1]).read()), "
                      "int(sys.argv[3]))\nnp.savez(sys.argv[2], elapsed=elapsed, V=V)\n")
            done = subprocess.run([python, "-c", code, str(src), str(dst), str(repeats)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise brian2_peer.PeerUnavailable(
                    f"brian2 under {python} failed: {done.stderr[-500:]}") from None
            out = np.load(dst)
            return float(out["elapsed"]), out["V"]
    return brian2_touch_run_here(data, repeats)


def bench_whole_worm(repeats: int, brian2_python: str | None) -> dict:
    """The whole worm (circuits/whole_worm.yaml), 1 s of posterior_touch, every neuron
    recorded every 1 ms (1,001 samples x 302 neurons).

    neurosim dopri5 from the protocol's rest, its time with finding the rest (what
    ``simulate`` does) and given the rest as ``v0``; solve_ivp LSODA and RK45 on the
    vectorised NumPy right-hand side (:func:`numpy_rhs`) given the same rest; Brian2
    (Cython, RK4 at dt 0.05 ms, its synaptic currents summed once per step) from the
    same rest beside neurosim's rk4 at the same step.  Errors: max over neurons and
    samples against neurosim dopri5 at rtol 1e-12."""
    repeats = max(repeats, 5)   # runs of 10-20 ms on a noisy machine: best of 5 even if quick
    c = ns.load_circuit(WHOLE_WORM)
    protocol = "posterior_touch"
    reference = ns.simulate(c, protocol, rtol=1e-12, atol=1e-12, dt_out=1.0)
    rest = np.array([reference.metadata["initial"]["V"][name] for name in c.neuron_names])
    _, _, clamped = numpy_rhs(c, c.resolve_stimuli(c.protocol(protocol)))
    rows = {}

    def ours(label, **options):
        ns.simulate(c, protocol, dt_out=1.0, **options)
        t, r = best_of(repeats, lambda: ns.simulate(c, protocol, dt_out=1.0, **options))
        rows[label] = {"time_s": t, "max_error_mV": free_error(r.V, reference.V, clamped)}

    ours("neurosim dopri5, rest included", rtol=1e-6, atol=1e-6)
    ours("neurosim dopri5, given the rest", rtol=1e-6, atol=1e-6, v0=rest)
    ours("neurosim dopri5 rtol 1e-8, given", rtol=1e-8, atol=1e-8, v0=rest)
    for method, tol in (("LSODA", 1e-6), ("LSODA", 1e-8), ("RK45", 1e-6)):
        t, V = best_of(max(1, repeats // 2),
                       lambda: solve_ivp_run(c, protocol, method, tol, tol, reference.t, rest))
        rows[f"solve_ivp {method} rtol {tol:g}"] = {
            "time_s": t, "max_error_mV": free_error(V, reference.V, clamped)}
    ours("neurosim rk4 dt 0.05, given", integrator="rk4", dt=0.05, v0=rest)
    base = rows["neurosim dopri5, given the rest"]["time_s"]
    for row in rows.values():
        row["speedup_of_neurosim"] = row["time_s"] / base
    case = (f"whole worm ({c.n_neurons} neurons, {len(c.synapses):,} synapses, "
            f"{len(c.gap_junctions):,} gap junctions), 1 s, {protocol}, all neurons every "
            "1 ms; speedup = this row's time / neurosim dopri5 rtol 1e-6 given the rest")
    try:
        t_b, V_b = brian2_touch_run(brian2_touch_data(c, protocol, rest), brian2_python, repeats=3)
    except brian2_peer.PeerUnavailable as exc:
        return {"case": case, "skipped": f"Brian2 peer: {exc}", "rows": rows}
    rk4 = rows["neurosim rk4 dt 0.05, given"]["time_s"]
    rows["brian2 cython rk4 dt 0.05"] = {
        "time_s": t_b, "max_error_mV": free_error(V_b, reference.V[:V_b.shape[0]], clamped),
        "speedup_of_neurosim": t_b / base, "speedup_of_neurosim_rk4": t_b / rk4}
    return {"case": case, "rows": rows}


def print_case(case: dict) -> None:
    print(f"\n{case['case']}")
    if "skipped" in case:
        print(f"  skipped: {case['skipped']}")
    for name, row in case.get("rows", {}).items():
        cells = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in row.items())
        print(f"  {name:34s} {cells}")


#: the cases of main, in the order they run
CASES = ("tw", "batch", "batch_output", "own_sigmoids", "brian2", "whole_worm", "recording",
         "large_rest", "cold_start")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases (< 2 minutes)")
    parser.add_argument("--out", help="the JSON written (default bench/results.json, the "
                                      "full run's; with --case only where given)")
    parser.add_argument("--brian2-python", metavar="PYTHON",
                        help="an interpreter with Brian2, if Brian2 does not import here "
                             "(Brian2 2.9 needs NumPy < 2.3)")
    parser.add_argument("--case", action="append", choices=CASES, metavar="NAME",
                        help="run only this case (repeatable): " + ", ".join(CASES))
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "processor": platform.processor(),
                           "python": platform.python_version(), "neurosim": ns.__version__},
               "quick": args.quick, "cases": []}
    cases = {"tw": lambda: bench_tw_vs_scipy(repeats),
             "batch": lambda: bench_batch(2000 if args.quick else 20000),
             "batch_output": lambda: bench_batch_output(2000 if args.quick else 4000,
                                                        3 if args.quick else 5),
             "own_sigmoids": lambda: bench_own_sigmoids(50.0 if args.quick else 200.0),
             "brian2": lambda: bench_brian2(200.0 if args.quick else 1000.0, args.brian2_python),
             "whole_worm": lambda: bench_whole_worm(repeats, args.brian2_python),
             "recording": lambda: bench_recording(5 if args.quick else 15),
             "large_rest": lambda: bench_large_rest(5000 if args.quick else 20000),
             "cold_start": bench_cold_start}
    assert list(cases) == list(CASES)
    for name in args.case or CASES:
        result = cases[name]()
        results["cases"].append(result)
        print_case(result)
    if args.out is None and args.case:
        print("\n(results not written: --case runs leave bench/results.json to full runs; "
              "give --out)")
        return
    out = Path(args.out or "bench/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
