"""An independent plain-NumPy implementation of the circuit equation of DESIGN.md §1.

Shares no code with neurosim's compile or kernels: it reads the model objects and
writes the equation out term by term, so a kernel bug cannot hide in both.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

import neurosim as ns


def sigma(z):
    return 1.0 / (1.0 + np.exp(-z))


class ReferenceModel:
    """dV/dt of a Circuit with a list of stimuli, evaluated straight from the equation."""

    def __init__(self, circuit: ns.Circuit, stimuli=()):
        self.circuit = circuit
        self.names = list(circuit.neuron_names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.n = len(self.names)
        self.C = np.array([nr.C for nr in circuit.neurons])
        self.g_L = np.array([nr.g_L for nr in circuit.neurons])
        self.E_L = np.array([nr.E_L for nr in circuit.neurons])
        self.V0 = np.array([nr.E_L if nr.V0 is None else nr.V0 for nr in circuit.neurons])
        self.current = [(self.index[t], s) for s in stimuli if s.quantity == "current"
                        for t in s.targets]
        self.voltage = [(self.index[t], s) for s in stimuli if s.quantity == "voltage"
                        for t in s.targets]
        self.clamped = np.array([nr.clamp is not None for nr in circuit.neurons])
        self.hold = np.array([nr.clamp if nr.clamp is not None else
                              (nr.E_L if nr.V0 is None else nr.V0) for nr in circuit.neurons])
        for i, _ in self.voltage:
            self.clamped[i] = True

    def command(self, t):
        """Clamp command potentials at t (entries of free neurons are unused)."""
        cmd = self.hold.copy()
        for i, stim in self.voltage:
            cmd[i] += float(stim.value(t))
        return cmd

    def effective(self, t, V):
        return np.where(self.clamped, self.command(t), V)

    def dVdt(self, t, V):
        V = self.effective(t, np.asarray(V, dtype=float))
        I = np.zeros(self.n)
        for i, stim in self.current:
            I[i] += float(stim.value(t))
        total = self.g_L * (self.E_L - V) + I
        for syn in self.circuit.synapses:
            i, j = self.index[syn.post], self.index[syn.pre]
            total[i] += syn.w * sigma(syn.nu * (V[j] - syn.mu)) * (syn.E - syn.kappa * V[i])
        for gap in self.circuit.gap_junctions:
            a, b = self.index[gap.a], self.index[gap.b]
            total[a] += gap.g * (V[b] - V[a])
            total[b] += gap.g * (V[a] - V[b])
        out = total / self.C
        out[self.clamped] = 0.0
        return out

    def solve(self, t_eval, breakpoints=(), rtol=1e-11, atol=1e-11, method="DOP853"):
        """Trajectory at t_eval (ms), integrated piecewise between input breakpoints."""
        t_end = float(t_eval[-1])
        edges = [0.0] + sorted(b for b in set(breakpoints) if 0 < b < t_end) + [t_end]
        V = self.effective(0.0, self.V0)
        out = np.empty((len(t_eval), self.n))
        for a, b in zip(edges, edges[1:]):
            inside = (t_eval >= a) & (t_eval <= b)
            sol = solve_ivp(self.dVdt, (a, b), V, method=method, rtol=rtol, atol=atol,
                            dense_output=True)
            assert sol.success, sol.message
            out[inside] = sol.sol(t_eval[inside]).T
            V = sol.y[:, -1]
        for k, t in enumerate(t_eval):
            out[k] = self.effective(t, out[k])
        return out


def random_circuit(seed: int, n: int, *, p_syn=0.3, p_gap=0.1, n_clamped=0, kappa=None,
                   with_stimuli=True, smooth=False) -> tuple[ns.Circuit, list]:
    """A random circuit with synapses, gaps, optional clamps and stimuli (seeded)."""
    rng = np.random.default_rng(seed)
    neurons = []
    for i in range(n):
        clamp = float(rng.uniform(-70, -30)) if i < n_clamped else None
        neurons.append(ns.Neuron(f"N{i}", C=float(rng.uniform(1, 10)),
                                 g_L=float(rng.uniform(0.1, 2)), E_L=float(rng.uniform(-75, -55)),
                                 V0=float(rng.uniform(-80, -20)), clamp=clamp))
    synapses = []
    for i in range(n):
        for j in range(n):
            if rng.random() < p_syn:
                k = float(rng.integers(0, 2)) if kappa is None else kappa
                synapses.append(ns.Synapse(f"N{j}", f"N{i}", w=float(rng.uniform(0, 2)),
                                           E=float(rng.choice([0.0, -90.0])),
                                           mu=float(rng.uniform(-60, -30)),
                                           nu=float(rng.uniform(0.05, 0.3)), kappa=k))
    gaps = []
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < p_gap:
                gaps.append(ns.GapJunction(f"N{i}", f"N{j}", g=float(rng.uniform(0, 0.5))))
    stimuli = []
    if with_stimuli:
        target = f"N{n - 1}"
        if smooth:
            stimuli.append(ns.Stimulus("sine", target, amplitude=float(rng.uniform(5, 20)),
                                       frequency=50.0, phase=0.3))
            if n_clamped:
                stimuli.append(ns.Stimulus("sine", "N0", quantity="voltage", amplitude=10.0,
                                           frequency=30.0))
        else:
            stimuli.append(ns.Stimulus("pulse", target, amplitude=float(rng.uniform(5, 20)),
                                       start=2.0, duration=3.0))
            stimuli.append(ns.Stimulus("ramp", f"N{n // 2}", amplitude=10.0, start=1.0,
                                       duration=4.0))
            if n_clamped:
                stimuli.append(ns.Stimulus("pulse", "N0", quantity="voltage", amplitude=30.0,
                                           start=3.0, duration=2.5))
    return ns.Circuit(f"random{seed}", tuple(neurons), tuple(synapses), tuple(gaps)), stimuli
