"""ML models as parameter restrictions of the one neurosim equation.

Grosu (arXiv 2002.12776, eqs. 1–9) shows that ResNets, Neural ODEs and CT-RNNs are
neural regulatory networks (NRNs) with parameters pinned; Lemmel & Grosu (arXiv
2303.04944) measure what the biophysical synapse buys.  Every constructor here returns an
ordinary :class:`~neurosim.model.Circuit` (the same class the YAML loader returns):

==============  ===================================================================
family          restriction (DESIGN.md §1)
==============  ===================================================================
``nrn``         none: κ = 1, g_L > 0 (eq. 9)
``ctrnn``       κ = 0, C = 1, E_L = 0, g_L = decay, signed weight w·E (eq. 8)
``neural_ode``  CT-RNN with g_L = 0 (eq. 5); augmented: extra zero-initialised neurons (eq. 7)
``resnet``      Neural ODE + Euler Δt = 1 + per-step weights (a parameter schedule) (eqs. 2–3)
``dnn``         CT-RNN with g_L = 1, C = 1 + Euler Δt = 1 + per-step weights (eq. 1)
==============  ===================================================================

Matrices follow the ML convention ``W[i, j]``: the weight from neuron j to neuron i.
Neuron-model units are taken as plain numbers (1 "mV" = one unit of state, 1 ms = one
time unit), so ``x(t)`` of the ML model is ``V(t)`` of the circuit.

The LTC cell of the ``ncps`` package maps to an NRN run with the fused ``ltc`` integrator:
:func:`ltc_cell_to_circuit`, :func:`circuit_to_ltc_cell`, :func:`ltc_input_stimuli`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurosim.errors import CircuitError
from neurosim.model import Circuit, Neuron, Schedule, Stimulus, Synapse
from neurosim.record import Result

FAMILIES = ("dnn", "resnet", "neural_ode", "ctrnn", "nrn")


def _names(n: int, names=None, prefix: str = "x") -> list[str]:
    names = [f"{prefix}{i}" for i in range(n)] if names is None else list(names)
    if len(names) != n:
        raise CircuitError(f"expected {n} neuron names, got {len(names)}")
    return names


def _square(W, what: str = "W") -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise CircuitError(f"{what} must be a square matrix (n, n), got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise CircuitError(f"{what} must hold finite numbers")
    return W


def _per_edge(value, n: int, what: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n, n))
    if not np.all(np.isfinite(arr)):
        raise CircuitError(f"{what} must be finite")
    return arr


def _signed_synapses(W, mu, nu, names, edges=None) -> tuple[Synapse, ...]:
    """Current-based synapses (κ = 0) whose w·E is the signed weight W[i, j]."""
    n = W.shape[0]
    mu, nu = _per_edge(mu, n, "mu"), _per_edge(nu, n, "nu")
    edges = np.argwhere(W != 0) if edges is None else edges
    return tuple(Synapse(names[j], names[i], w=float(abs(W[i, j])),
                         E=1.0 if W[i, j] >= 0 else -1.0, mu=float(mu[i, j]),
                         nu=float(nu[i, j]), kappa=0.0) for i, j in edges)


def ctrnn(W, decay, mu=0.0, nu=1.0, x0=None, names=None, name: str = "ctrnn") -> Circuit:
    """CT-RNN (seed eq. 8): dx_i/dt = −decay_i·x_i + Σ_j W[i, j]·σ(ν(x_j − μ)) + I_i(t).

    Parameters
    ----------
    W : ndarray, shape (n, n)
    decay : float or ndarray, shape (n,)
        The CT-RNN decay (1/τ); 0 gives a Neural ODE.
    mu, nu : float or ndarray, shape (n, n)
        Sigmoid midpoint and slope per connection.
    x0 : ndarray, shape (n,), optional
        Initial state (default 0).
    """
    W = _square(W)
    n = W.shape[0]
    decay = np.broadcast_to(np.asarray(decay, dtype=np.float64), (n,))
    if np.any(decay < 0) or not np.all(np.isfinite(decay)):
        raise CircuitError("decay must be finite and >= 0")
    x0 = np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64)
    names = _names(n, names)
    neurons = tuple(Neuron(names[i], C=1.0, g_L=float(decay[i]), E_L=0.0, V0=float(x0[i]))
                    for i in range(n))
    return Circuit(name, neurons, _signed_synapses(W, mu, nu, names))


def neural_ode(W, mu=0.0, nu=1.0, x0=None, names=None, name: str = "neural ODE") -> Circuit:
    """Neural ODE (seed eq. 5): dx_i/dt = Σ_j W[i, j]·σ(ν(x_j − μ)) + I_i(t)."""
    return ctrnn(W, 0.0, mu, nu, x0, names, name)


def augmented_neural_ode(W, mu=0.0, nu=1.0, extra: int = 1, x0=None, names=None,
                         name: str = "augmented neural ODE") -> Circuit:
    """Augmented Neural ODE (seed eq. 7): the state [x, a] with ``extra`` zeros appended.

    ``W`` has shape (n + extra, n + extra); ``x0`` (n,) sets the data dimensions and the
    augmentation neurons ``a0, a1, ...`` start at 0.  A linear read-out of the final state
    (``result.V[-1] @ R.T``) completes the model.
    """
    W = _square(W)
    total = W.shape[0]
    n = total - int(extra)
    if extra < 1 or n < 1:
        raise CircuitError(f"extra must be in 1..{total - 1}, got {extra}")
    x0 = np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64)
    names = _names(n, names) + [f"a{k}" for k in range(int(extra))]
    return ctrnn(W, 0.0, mu, nu, np.concatenate([x0, np.zeros(int(extra))]), names, name)


def _stepwise(weights, g_L: float, mu, nu, x0, names, name: str) -> Circuit:
    """A CT-RNN whose weights change every unit of time (a schedule of w and E)."""
    steps = [_square(W, f"weights[{k}]") for k, W in enumerate(weights)]
    if not steps:
        raise CircuitError("give at least one weight matrix")
    n = steps[0].shape[0]
    if any(W.shape != (n, n) for W in steps):
        raise CircuitError("every step's weight matrix must have the same shape")
    edges = np.argwhere(np.any(np.stack(steps) != 0, axis=0))
    x0 = np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64)
    names = _names(n, names)
    neurons = tuple(Neuron(names[i], C=1.0, g_L=g_L, E_L=0.0, V0=float(x0[i])) for i in range(n))
    synapses = _signed_synapses(steps[0], mu, nu, names, edges)
    values = {}
    for (i, j), syn in zip(edges, synapses):
        values[f"synapses[{syn.key}].w"] = [float(abs(W[i, j])) for W in steps]
        values[f"synapses[{syn.key}].E"] = [1.0 if W[i, j] >= 0 else -1.0 for W in steps]
    schedule = Schedule(1.0, values) if values else None
    return Circuit(name, neurons, synapses, schedule=schedule)


def resnet(weights_per_step, mu=0.0, nu=1.0, x0=None, names=None, name: str = "resnet") -> Circuit:
    """ResNet (seed eqs. 2–3): x^{t+1} = x^t + W^t·σ(ν(x^t − μ)).

    A Neural ODE whose weights follow a schedule (one matrix per unit of time); simulate
    it with ``integrator="euler", dt=1.0`` for ``len(weights_per_step)`` steps.
    """
    return _stepwise(weights_per_step, 0.0, mu, nu, x0, names, name)


def dnn(layers, mu=0.0, nu=1.0, x0=None, name: str = "dnn") -> Circuit:
    """Feed-forward net (seed eq. 1): x^{l+1} = W^l·σ(ν(x^l − μ)), layers of any width.

    The layers are embedded in ``max(width)`` neurons (zero-padded); a CT-RNN with
    g_L = 1, C = 1, unfolded by Euler with Δt = 1, computes exactly this map.  Read layer l
    from the first ``width_l`` neurons after l steps.
    """
    layers = [np.asarray(W, dtype=np.float64) for W in layers]
    if not layers or any(W.ndim != 2 for W in layers):
        raise CircuitError("layers must be a non-empty list of 2-D weight matrices")
    for k in range(1, len(layers)):
        if layers[k].shape[1] != layers[k - 1].shape[0]:
            raise CircuitError(f"layer {k} takes {layers[k].shape[1]} inputs but layer {k - 1} "
                               f"gives {layers[k - 1].shape[0]}")
    width = max(max(W.shape) for W in layers)
    padded = []
    for W in layers:
        P = np.zeros((width, width))
        P[:W.shape[0], :W.shape[1]] = W
        padded.append(P)
    start = np.zeros(width)
    if x0 is not None:
        start[:len(x0)] = x0
    return _stepwise(padded, 1.0, mu, nu, start, None, name)


def nrn(w, E, mu=-40.0, nu=0.1, C=1.0, g_L=1.0, E_L=-70.0, V0=None, names=None,
        name: str = "nrn") -> Circuit:
    """Neural regulatory network (seed eq. 9): conductance-based synapses (κ = 1).

    ``w[i, j] >= 0`` is the maximal conductance from j to i (0: no synapse), ``E[i, j]``
    its reversal potential; the rest broadcast per neuron (C, g_L, E_L, V0) or per
    connection (mu, nu).
    """
    w = _square(w, "w")
    n = w.shape[0]
    if np.any(w < 0):
        raise CircuitError("conductances w must be >= 0; the sign comes from E")
    E, mu, nu = (_per_edge(v, n, k) for v, k in ((E, "E"), (mu, "mu"), (nu, "nu")))
    per_neuron = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
                  for k, v in (("C", C), ("g_L", g_L), ("E_L", E_L))}
    names = _names(n, names)
    V0 = per_neuron["E_L"] if V0 is None else np.broadcast_to(np.asarray(V0, float), (n,))
    neurons = tuple(Neuron(names[i], C=float(per_neuron["C"][i]), g_L=float(per_neuron["g_L"][i]),
                           E_L=float(per_neuron["E_L"][i]), V0=float(V0[i])) for i in range(n))
    synapses = tuple(Synapse(names[j], names[i], w=float(w[i, j]), E=float(E[i, j]),
                             mu=float(mu[i, j]), nu=float(nu[i, j]), kappa=1.0)
                     for i, j in np.argwhere(w > 0))
    return Circuit(name, neurons, synapses)


@dataclass(frozen=True)
class Restriction:
    """Which family a circuit belongs to, and why it is not the others."""

    family: str
    reasons: dict

    def __str__(self):
        lines = [f"{self.family}"] + [f"  not {k}: {v}" for k, v in self.reasons.items()]
        return "\n".join(lines)


def restriction_of(circuit: Circuit) -> Restriction:
    """The most specific family of :data:`FAMILIES` whose restrictions ``circuit`` obeys.

    Integrator choices (Euler with Δt = 1 for ResNets and DNNs) are not part of a circuit;
    a per-step weight schedule with interval 1 is what marks those two.  An augmented
    Neural ODE is a Neural ODE (its augmentation lives in the initial state and read-out).
    """
    neurons, synapses = circuit.neurons, circuit.synapses
    kappas = {s.kappa for s in synapses}
    failed = {}

    def check(family, conditions):
        bad = [why for ok, why in conditions if not ok]
        if bad:
            failed[family] = "; ".join(bad)
        return not bad

    current = (all(s.kappa == 0 for s in synapses), f"synapses are not current-based (κ ∈ {sorted(kappas)})")
    unit_C = (all(n.C == 1 for n in neurons), "C ≠ 1")
    zero_EL = (all(n.E_L == 0 for n in neurons), "E_L ≠ 0")
    no_leak = (all(n.g_L == 0 for n in neurons), "g_L ≠ 0 (a Neural ODE has no decay)")
    leak = (all(n.g_L > 0 for n in neurons), "some g_L = 0")
    stepped = (circuit.schedule is not None and circuit.schedule.interval == 1.0,
               "no per-step weight schedule with interval 1")
    unit_leak = (all(n.g_L == 1 for n in neurons), "g_L ≠ 1")
    verdicts = {
        "dnn": check("dnn", [current, unit_C, zero_EL, unit_leak, stepped]),
        "resnet": check("resnet", [current, unit_C, no_leak, stepped]),
        "neural_ode": check("neural_ode", [current, unit_C, no_leak]),
        "ctrnn": check("ctrnn", [current, unit_C, zero_EL, leak]),
        "nrn": check("nrn", [(all(s.kappa == 1 for s in synapses),
                              "synapses are not conductance-based (κ ≠ 1)"), leak]),
    }
    family = next((f for f in FAMILIES if verdicts[f]), "general")
    return Restriction(family, {k: v for k, v in failed.items() if k != family})


def effective_weights(circuit: Circuit, result: Result) -> tuple[np.ndarray, list[str]]:
    """The state-dependent weight of each synapse along a trajectory.

    An NRN synapse adds w·σ(ν(V_j − μ))·(E − κV_i) to C·dV_i/dt: a sigmoid feature of the
    presynaptic neuron times the weight ``w·(E − κ·V_i(t))``, which moves with the
    postsynaptic state.  Returns that weight at every sample, shape (samples, synapses),
    and the synapse keys.  Unfolded by Euler with step dt, the NRN is a ResNet with
    per-step weights ``dt/C_i · effective_weight`` (tests/test_ml.py).
    """
    V = {name: result.v(name) for name in result.neuron_names}
    missing = {s.post for s in circuit.synapses} - set(V)
    if missing:
        raise CircuitError(f"record the postsynaptic neurons too: {', '.join(sorted(missing))}")
    weights = np.stack([s.w * (s.E - s.kappa * V[s.post]) for s in circuit.synapses], axis=1) \
        if circuit.synapses else np.zeros((result.t.size, 0))
    return weights, [s.key for s in circuit.synapses]


# --- LTC cells (ncps) ------------------------------------------------------------------

LTC_KEYS = ("gleak", "vleak", "cm", "w", "sigma", "mu", "erev", "sensory_w", "sensory_sigma",
            "sensory_mu", "sensory_erev")


def ltc_cell_to_circuit(params: dict, name: str = "ltc cell") -> Circuit:
    """A circuit from the parameters of an ncps ``LTCCell`` (as NumPy arrays).

    Keys: gleak, vleak, cm (units,); w, sigma, mu, erev (units, units) indexed
    [pre, post]; sensory_w, sensory_sigma, sensory_mu, sensory_erev (inputs, units);
    optional sparsity_mask and sensory_sparsity_mask (0 removes a synapse).  Units become
    neurons ``u0..``; inputs become clamped neurons ``in0..`` driven by
    :func:`ltc_input_stimuli`.  The dimensionless state maps to mV one to one.
    Run it with ``integrator="ltc", dt=elapsed / 6`` (the cell's 6 unfolds).
    """
    missing = [k for k in LTC_KEYS if k not in params]
    if missing:
        raise CircuitError(f"LTC parameters lack {', '.join(missing)}; expected {', '.join(LTC_KEYS)}")
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    units, inputs = p["gleak"].shape[0], p["sensory_w"].shape[0]
    mask = p.get("sparsity_mask", np.ones((units, units)))
    sensory_mask = p.get("sensory_sparsity_mask", np.ones((inputs, units)))
    neurons = [Neuron(f"in{k}", C=1.0, g_L=0.0, E_L=0.0, clamp=0.0) for k in range(inputs)]
    neurons += [Neuron(f"u{i}", C=float(p["cm"][i]), g_L=float(p["gleak"][i]),
                       E_L=float(p["vleak"][i]), V0=0.0) for i in range(units)]
    synapses = []
    for prefix, count, key, m in (("in", inputs, "sensory_", sensory_mask), ("u", units, "", mask)):
        for j in range(count):
            for i in range(units):
                if m[j, i] == 0:
                    continue
                synapses.append(Synapse(f"{prefix}{j}", f"u{i}", w=float(p[key + "w"][j, i]),
                                        E=float(p[key + "erev"][j, i]),
                                        mu=float(p[key + "mu"][j, i]),
                                        nu=float(p[key + "sigma"][j, i]), kappa=1.0))
    return Circuit(name, tuple(neurons), tuple(synapses))


def circuit_to_ltc_cell(circuit: Circuit) -> dict:
    """The ncps ``LTCCell`` parameters of a circuit made by :func:`ltc_cell_to_circuit`."""
    units = [n for n in circuit.neurons if n.name.startswith("u")]
    inputs = [n for n in circuit.neurons if n.name.startswith("in")]
    if not units:
        raise CircuitError("no LTC units (neurons named u0, u1, ...) in this circuit")
    u_index = {n.name: i for i, n in enumerate(units)}
    in_index = {n.name: i for i, n in enumerate(inputs)}
    out = {"gleak": np.array([n.g_L for n in units]), "vleak": np.array([n.E_L for n in units]),
           "cm": np.array([n.C for n in units])}
    for key, count in (("", len(units)), ("sensory_", len(inputs))):
        for field in ("w", "sigma", "mu", "erev"):
            out[key + field] = np.zeros((count, len(units)))
        out[("sensory_" if key else "") + "sparsity_mask"] = np.zeros((count, len(units)))
    for s in circuit.synapses:
        key, j = ("sensory_", in_index[s.pre]) if s.pre in in_index else ("", u_index[s.pre])
        i = u_index[s.post]
        for field, value in (("w", s.w), ("sigma", s.nu), ("mu", s.mu), ("erev", s.E)):
            out[key + field][j, i] = value
        out[("sensory_" if key else "") + "sparsity_mask"][j, i] = 1.0
    return out


def ltc_input_stimuli(inputs, elapsed: float = 1.0, input_w=None, input_b=None) -> list[Stimulus]:
    """Voltage stimuli feeding an input sequence (T, n_inputs) to neurons ``in0..``.

    Sample k holds on [k·elapsed, (k+1)·elapsed), mapped by the cell's affine input
    mapping ``x·input_w + input_b``.
    """
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 2:
        raise CircuitError(f"inputs must have shape (time steps, inputs), got {x.shape}")
    w = np.ones(x.shape[1]) if input_w is None else np.asarray(input_w, dtype=np.float64)
    b = np.zeros(x.shape[1]) if input_b is None else np.asarray(input_b, dtype=np.float64)
    mapped = x * w + b
    times = tuple(float(k * elapsed) for k in range(x.shape[0]))
    return [Stimulus("steps", f"in{k}", quantity="voltage", times=times,
                     values=tuple(mapped[:, k])) for k in range(x.shape[1])]
