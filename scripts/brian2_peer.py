"""The benchmark's Brian2 peer: the same circuit as Brian2 equations (Cython target).

Imports only NumPy and Brian2, so it can run under another interpreter when Brian2 does
not import beside the NumPy neurosim uses
(``python brian2_peer.py IN.json OUT.npz REPEATS``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class PeerUnavailable(RuntimeError):
    """Brian2 cannot be run here; the message says why."""


def circuit_data(circuit, duration_ms: float) -> dict:
    """Plain lists describing a neurosim circuit driven by its 'drive' sine stimulus."""
    drive = circuit.stimuli["drive"]
    return {
        "names": list(circuit.neuron_names), "duration_ms": duration_ms,
        "C": [n.C for n in circuit.neurons], "g_L": [n.g_L for n in circuit.neurons],
        "E_L": [n.E_L for n in circuit.neurons], "V0": [n.initial_V for n in circuit.neurons],
        "synapses": [[s.pre, s.post, s.w, s.E, s.mu, s.nu] for s in circuit.synapses],
        "gaps": [[g.a, g.b, g.g] for g in circuit.gap_junctions],
        "drive": {"targets": list(drive.targets), "amplitude": drive.amplitude,
                  "frequency": drive.frequency}}


def build(data: dict):
    import brian2 as b2
    names = data["names"]
    index = {nm: i for i, nm in enumerate(names)}
    eqs = """
    dv/dt = (gL * (EL - v) + Isyn + Igap + Iext) / Cm : volt
    Iext = amp_ext * target * sin(2 * pi * freq * t) : amp
    Isyn : amp
    Igap : amp
    target : 1 (constant)
    Cm : farad (constant)
    gL : siemens (constant)
    EL : volt (constant)
    """
    group = b2.NeuronGroup(len(names), eqs, method="rk4",
                           namespace={"amp_ext": data["drive"]["amplitude"] * b2.pA,
                                      "freq": data["drive"]["frequency"] * b2.Hz},
                           name="neurons")
    group.Cm = np.array(data["C"]) * b2.pF
    group.gL = np.array(data["g_L"]) * b2.nS
    group.EL = np.array(data["E_L"]) * b2.mV
    group.v = np.array(data["V0"]) * b2.mV
    group.target = np.isin(names, data["drive"]["targets"]).astype(float)
    syn = b2.Synapses(group, group, model="""
        w : siemens (constant)
        E : volt (constant)
        mu : volt (constant)
        nu : 1/volt (constant)
        Isyn_post = w / (1 + exp(-nu * (v_pre - mu))) * (E - v_post) : amp (summed)
        """, name="chemical")
    pre, post, w, E, mu, nu = zip(*data["synapses"])
    syn.connect(i=[index[x] for x in pre], j=[index[x] for x in post])
    syn.w = np.array(w) * b2.nS
    syn.E = np.array(E) * b2.mV
    syn.mu = np.array(mu) * b2.mV
    syn.nu = np.array(nu) / b2.mV
    gap = b2.Synapses(group, group, model="""
        g : siemens (constant)
        Igap_post = g * (v_pre - v_post) : amp (summed)
        """, name="gap")
    a, b, g = zip(*data["gaps"])
    ia, ib = [index[x] for x in a], [index[x] for x in b]
    gap.connect(i=ia + ib, j=ib + ia)       # a junction is two one-way currents
    gap.g = np.concatenate([g, g]) * b2.nS
    # fixed object names: Brian2 embeds them in generated code, and the timed network must
    # hit the Cython cache filled by the warm-up network
    monitor = b2.StateMonitor(group, "v", record=True, dt=1.0 * b2.ms, name="monitor")
    return b2.Network(group, syn, gap, monitor), monitor


def run_here(data: dict, repeats: int = 1):
    """(the shortest wall time of ``repeats`` runs, V (samples x neurons, mV)); Cython
    compiled beforehand."""
    import brian2 as b2
    b2.prefs.codegen.target = "cython"
    b2.prefs.logging.console_log_level = "ERROR"
    b2.defaultclock.dt = 0.05 * b2.ms
    warm, _ = build(data)
    warm.run(1 * b2.ms)  # compiles the Cython code into Brian2's disk cache
    times = []
    for _ in range(repeats):
        net, monitor = build(data)
        start = time.perf_counter()
        net.run(data["duration_ms"] * b2.ms)
        times.append(time.perf_counter() - start)
    return min(times), np.asarray(monitor.v[:, :] / b2.mV).T


def run(data: dict, python: str | None = None, repeats: int = 1):
    """Run in this process if Brian2 imports, else under ``python``; PeerUnavailable if neither."""
    try:
        import brian2  # noqa: F401
    except Exception as exc:  # Brian2 2.9 fails with AttributeError under NumPy >= 2.3
        if python is None:
            raise PeerUnavailable(f"brian2 does not import here ({type(exc).__name__}: {exc}); "
                                  "pass --brian2-python with an interpreter that has it") from None
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.json", Path(tmp) / "out.npz"
            src.write_text(json.dumps(data))
            done = subprocess.run([python, __file__, str(src), str(dst), str(repeats)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise PeerUnavailable(f"brian2 under {python} failed: {done.stderr[-500:]}") from None
            out = np.load(dst)
            return float(out["elapsed"]), out["V"]
    return run_here(data, repeats)


if __name__ == "__main__":
    elapsed, V = run_here(json.loads(Path(sys.argv[1]).read_text()), int(sys.argv[3]))
    np.savez(sys.argv[2], elapsed=elapsed, V=V)
