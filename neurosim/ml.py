"""ML models as parameter restrictions of the one neurosim equation.

Grosu (arXiv 2002.12776, eqs. 1–9) shows that ResNets, Neural ODEs and CT-RNNs are
neural regulatory networks (NRNs) with parameters pinned; Lemmel & Grosu (arXiv
2303.04944) measure what the biophysical synapse buys.  Every constructor here returns an
ordinary :class:`~neurosim.model.Circuit` (the same class the YAML loader returns):

==============  ===================================================================
family          restriction (DESIGN.md §1)
==============  ===================================================================
``nrn``         none: κ = 1 on every synapse, any g_L ≥ 0 (eq. 9)
``ctrnn``       κ = 0, C = 1, E_L = 0, g_L = decay, signed weight w·E (eq. 8)
``neural_ode``  CT-RNN with g_L = 0 (eq. 5); augmented: extra zero-initialised neurons (eq. 7)
``resnet``      Neural ODE + Euler Δt = 1 + per-step weights and thresholds μ^t (eqs. 2–3)
``dnn``         CT-RNN with g_L = C = 1 + Euler Δt = 1 + per-step weights; input through
                gap junctions in step 0, output σ through unit self-synapses (eqs. 1–2)
==============  ===================================================================

Matrices follow the ML convention ``W[i, j]``: the weight from neuron j to neuron i.
Neuron-model units are taken as plain numbers (1 "mV" = one unit of state, 1 ms = one
time unit), so ``x(t)`` of the ML model is ``V(t)`` of the circuit.  Sign conventions
against the seed (docs/ml_restrictions.md): σ is the increasing logistic
σ(z) = 1/(1 + e^{−z}) of ν(V_pre − μ) (the seed's 1/(1 + e^{ν(x−μ)}) with ν → −ν), and the
synaptic term is w·σ·(E − κV_post): the seed's weight times driving force with the sign
carried by E.

The LTC cell of the ``ncps`` package maps to an NRN run with the fused ``ltc`` integrator:
:func:`ltc_cell_to_circuit`, :func:`circuit_to_ltc_cell`, :func:`ltc_input_stimuli`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurosim.errors import CircuitError
from neurosim.model import Circuit, GapJunction, Neuron, Schedule, Stimulus, Synapse
from neurosim.record import Result
from neurosim.units import short_repr

FAMILIES = ("dnn", "resnet", "neural_ode", "ctrnn", "nrn")


def _names(n: int, names=None, prefix: str = "x") -> list[str]:
    names = [f"{prefix}{i}" for i in range(n)] if names is None else list(names)
    if len(names) != n:
        raise CircuitError(f"expected {n} neuron names, got {len(names)}")
    return names


def _numbers(value, what: str) -> np.ndarray:
    """``value`` as a float array, or a one-line CircuitError naming ``what``."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CircuitError(f"{what} must be numbers, got {short_repr(value)}") from None


def _shaped(value, shape: tuple, what: str, lowest: float = -np.inf) -> np.ndarray:
    """``value`` (a float, or an array broadcastable to ``shape``) as a finite array of
    that shape, each entry >= ``lowest``; else a one-line CircuitError."""
    arr = _numbers(value, what)
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise CircuitError(f"{what} must be a float or an array of shape {shape}, got shape "
                           f"{arr.shape}") from None
    if not np.all(np.isfinite(arr)):
        raise CircuitError(f"{what} must be finite")
    if np.any(arr < lowest):
        raise CircuitError(f"{what} must be >= {lowest:g}")
    return arr


def _initial(x0, n: int, what: str = "x0") -> np.ndarray:
    """An initial state of exactly n entries (default 0)."""
    if x0 is None:
        return np.zeros(n)
    arr = _numbers(x0, what)
    if arr.shape != (n,):
        raise CircuitError(f"{what} must have shape ({n},), one value per neuron, got shape "
                           f"{arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CircuitError(f"{what} must be finite")
    return arr


def _square(W, what: str = "W") -> np.ndarray:
    W = _numbers(W, what)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise CircuitError(f"{what} must be a square matrix (n, n), got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise CircuitError(f"{what} must hold finite numbers")
    return W


def _per_edge(value, n: int, what: str) -> np.ndarray:
    return _shaped(value, (n, n), what)


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
    decay = _shaped(decay, (n,), "decay", lowest=0.0)
    x0 = _initial(x0, n)
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
    x0 = _initial(x0, n, "x0 (the data dimensions; augmentation neurons start at 0)")
    names = _names(n, names) + [f"a{k}" for k in range(int(extra))]
    return ctrnn(W, 0.0, mu, nu, np.concatenate([x0, np.zeros(int(extra))]), names, name)


def _per_step(value, n_steps: int, n: int, what: str) -> list[np.ndarray]:
    """A per-connection (n, n) array for every step.

    ``value`` is a float or an array broadcastable to (n, n) shared by all steps, or a
    list/tuple of ``n_steps`` such entries (one per step; an entry of shape (n,) gives the
    threshold or slope of each presynaptic neuron, as the seed's per-layer μ^t).
    """
    if isinstance(value, (list, tuple)):
        if len(value) != n_steps:
            raise CircuitError(f"{what} has {len(value)} per-step entries, expected {n_steps} "
                               "(one per layer); a shared value is a float or an array")
        return [_per_edge(np.asarray(v, dtype=np.float64)[..., None, :]
                          if np.ndim(v) == 1 else v, n, f"{what}[{k}]")
                for k, v in enumerate(value)]
    shared = _per_edge(value, n, what)
    return [shared] * n_steps


def _step_series(synapses, edges, steps, mus, nus) -> dict:
    """Schedule series (w, E, μ, ν per step) of current-based synapses at ``edges``."""
    values = {}
    for (i, j), syn in zip(edges, synapses):
        key = f"synapses[{syn.key}]"
        values[key + ".w"] = [float(abs(W[i, j])) for W in steps]
        values[key + ".E"] = [1.0 if W[i, j] >= 0 else -1.0 for W in steps]
        values[key + ".mu"] = [float(m[i, j]) for m in mus]
        values[key + ".nu"] = [float(v[i, j]) for v in nus]
    return values


def _square_steps(weights) -> list[np.ndarray]:
    steps = [_square(W, f"weights[{k}]") for k, W in enumerate(weights)]
    if not steps:
        raise CircuitError("give at least one weight matrix")
    if any(W.shape != steps[0].shape for W in steps):
        raise CircuitError("every step's weight matrix must have the same shape")
    return steps


def resnet(weights_per_step, mu=0.0, nu=1.0, x0=None, names=None, name: str = "resnet") -> Circuit:
    """ResNet (seed eqs. 2–3): x^{t+1} = x^t + W^t·σ(ν^t(x^t − μ^t)).

    A Neural ODE whose weights follow a schedule (one matrix per unit of time); simulate
    it with ``integrator="euler", dt=1.0`` for ``len(weights_per_step)`` steps.

    Parameters
    ----------
    weights_per_step : sequence of ndarray, shape (n, n)
        W^t[i, j], the weight from neuron j to neuron i in layer t.
    mu, nu : float, ndarray or list
        Sigmoid thresholds and slopes: a float or an array broadcastable to (n, n) shared
        by every layer, or a list with one entry per layer (float, (n,) per presynaptic
        neuron, or (n, n)): the per-layer thresholds μ^t.
    """
    steps = _square_steps(weights_per_step)
    n = steps[0].shape[0]
    mus, nus = (_per_step(v, len(steps), n, k) for v, k in ((mu, "mu"), (nu, "nu")))
    x0 = _initial(x0, n)
    names = _names(n, names)
    neurons = tuple(Neuron(names[i], C=1.0, g_L=0.0, E_L=0.0, V0=float(x0[i])) for i in range(n))
    edges = np.argwhere(np.any(np.stack(steps) != 0, axis=0))
    synapses = _signed_synapses(steps[0], mus[0], nus[0], names, edges)
    values = _step_series(synapses, edges, steps, mus, nus)
    return Circuit(name, neurons, synapses, schedule=Schedule(1.0, values) if values else None)


def _per_layer(value, widths, what: str) -> list[np.ndarray]:
    """Per-neuron vectors, one per layer: a float for all, or a list of floats/(width,)."""
    values = value if isinstance(value, (list, tuple)) else [value] * len(widths)
    if len(values) != len(widths):
        raise CircuitError(f"{what} has {len(values)} per-layer entries, expected {len(widths)}")
    out = []
    for k, (v, width) in enumerate(zip(values, widths)):
        arr = _numbers(v, f"{what}[{k}]")
        if arr.ndim > 1 or (arr.ndim == 1 and arr.size != width):
            raise CircuitError(f"{what}[{k}] must be a float or {width} values "
                               f"(one per neuron of layer {k}), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise CircuitError(f"{what}[{k}] must be finite")
        out.append(np.broadcast_to(arr, (width,)))
    return out


def dnn(layers, mu=0.0, nu=1.0, x=None, name: str = "dnn") -> Circuit:
    """Feed-forward net (seed eq. 1, per-layer thresholds as eq. 2), post-activation:

        y^0 = x,   y^{l+1}_i = σ(ν^l_i·(Σ_j W^l[i, j]·y^l_j − μ^l_i)),   output y^L.

    The circuit holds the input in clamped neurons ``in0..`` (potential x_j) and ``neg0..``
    (potential −x_j) and the layers in ``max(width)`` neurons ``x0..`` with g_L = C = 1.
    Run it with ``integrator="euler", dt=1.0`` for ``len(layers) + 1`` steps:

    * step 0 is the input layer: gap junctions of conductance max(±W^0[i, j], 0) from
      ``in_j``/``neg_j`` (on for this step only; the leak cancels V = 0) give
      V^1 = W^0·x, the first pre-activation;
    * step l (1 ≤ l < L) applies layer l: V^{l+1} = W^l·σ(ν^{l−1}(V^l − μ^{l−1}));
    * the last step applies the output σ through a unit self-synapse:
      V^{L+1}_i = σ(ν^{L−1}_i(V^L_i − μ^{L−1}_i)) = y^L_i.

    Read y^L from the first ``width_L`` neurons at t = L + 1; y^l (1 ≤ l < L) is
    σ(ν^{l−1}(V^l − μ^{l−1})).  A bias b^l is the threshold μ^l = −b^l/ν^l.

    Parameters
    ----------
    layers : sequence of ndarray, shape (width_{l+1}, width_l)
    mu, nu : float or list
        Thresholds and slopes of each layer's outputs: a float for all, or one entry per
        layer (a float, or one value per output neuron of that layer).
    x : ndarray, shape (width_0,), optional
        The input (default 0).
    """
    layers = [_numbers(W, f"layers[{k}]") for k, W in enumerate(layers)]
    if not layers or any(W.ndim != 2 for W in layers):
        raise CircuitError("layers must be a non-empty list of 2-D weight matrices")
    if not all(np.all(np.isfinite(W)) for W in layers):
        raise CircuitError("layers must hold finite numbers")
    for k in range(1, len(layers)):
        if layers[k].shape[1] != layers[k - 1].shape[0]:
            raise CircuitError(f"layer {k} takes {layers[k].shape[1]} inputs but layer {k - 1} "
                               f"gives {layers[k - 1].shape[0]}")
    widths = [W.shape[0] for W in layers]
    n_in, width, L = layers[0].shape[1], max(widths), len(layers)
    mus, nus = _per_layer(mu, widths, "mu"), _per_layer(nu, widths, "nu")
    x = _initial(x, n_in, "x (the input)")
    names = _names(width)
    neurons = [Neuron(f"in{j}", C=1.0, g_L=0.0, E_L=0.0, clamp=float(x[j])) for j in range(n_in)]
    neurons += [Neuron(f"neg{j}", C=1.0, g_L=0.0, E_L=0.0, clamp=float(-x[j])) for j in range(n_in)]
    neurons += [Neuron(nm, C=1.0, g_L=1.0, E_L=0.0, V0=0.0) for nm in names]
    W0 = layers[0]
    # the junctions' conductance lives in the schedule (on in step 0 only), their base
    # value is 0: the run's stability check then sees the layers as they are after step 0
    input_gaps = {f"{prefix}{j}-{names[i]}": float(part[i, j])
                  for prefix, part in (("in", np.maximum(W0, 0.0)), ("neg", np.maximum(-W0, 0.0)))
                  for i, j in np.argwhere(part > 0)}
    gaps = [GapJunction(*key.split("-"), g=0.0) for key in input_gaps]
    # per-step (width, width) matrices of steps 0..L: none, layers 1..L-1, the identity
    steps, step_mu, step_nu = [np.zeros((width, width))], [np.zeros((width, width))], \
        [np.ones((width, width))]
    for k in range(1, L + 1):
        W = np.zeros((width, width))
        if k < L:
            W[:widths[k], :widths[k - 1]] = layers[k]
        else:
            W[np.arange(widths[-1]), np.arange(widths[-1])] = 1.0
        m, v = np.zeros(width), np.ones(width)
        m[:widths[k - 1]], v[:widths[k - 1]] = mus[k - 1], nus[k - 1]
        steps.append(W)
        step_mu.append(np.broadcast_to(m, (width, width)))   # σ of presynaptic neuron j
        step_nu.append(np.broadcast_to(v, (width, width)))
    edges = np.argwhere(np.any(np.stack(steps) != 0, axis=0))
    synapses = _signed_synapses(steps[0], step_mu[0], step_nu[0], names, edges)
    values = _step_series(synapses, edges, steps, step_mu, step_nu)
    values.update({f"gap_junctions[{key}].g": [g, 0.0] for key, g in input_gaps.items()})
    return Circuit(name, tuple(neurons), synapses, tuple(gaps),
                   schedule=Schedule(1.0, values) if values else None)


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
    per_neuron = {k: _shaped(v, (n,), k) for k, v in (("C", C), ("g_L", g_L), ("E_L", E_L))}
    names = _names(n, names)
    V0 = per_neuron["E_L"] if V0 is None else _shaped(V0, (n,), "V0")
    neurons = tuple(Neuron(names[i], C=float(per_neuron["C"][i]), g_L=float(per_neuron["g_L"][i]),
                           E_L=float(per_neuron["E_L"][i]), V0=float(V0[i])) for i in range(n))
    synapses = tuple(Synapse(names[j], names[i], w=float(w[i, j]), E=float(E[i, j]),
                             mu=float(mu[i, j]), nu=float(nu[i, j]), kappa=1.0)
                     for i, j in np.argwhere(w > 0))
    return Circuit(name, neurons, synapses)


#: the terms of the neurosim equation (seed eq. 9 with gap junctions and inputs) that
#: :func:`restriction_of` looks for
TERMS = ("leak", "driving force", "synapses", "gap junctions", "input current",
         "clamped inputs", "per-step parameters")


@dataclass(frozen=True)
class Restriction:
    """Which family a circuit belongs to, the terms it has, and why it is not the others."""

    family: str
    reasons: dict
    terms: tuple = ()

    def __str__(self):
        lines = [f"{self.family} (terms: {', '.join(self.terms) or 'none'})"]
        return "\n".join(lines + [f"  not {k}: {v}" for k, v in self.reasons.items()])


def _series(circuit: Circuit):
    """value(name, base) -> that parameter in every interval of the schedule."""
    schedule = circuit.schedule
    n = schedule.n_intervals if schedule is not None else 1
    values = schedule.values if schedule is not None else {}

    def value(name: str, base: float) -> np.ndarray:
        series = values.get(name)
        if series is None:
            return np.full(n, base)
        return np.asarray(series)[np.minimum(np.arange(n), len(series) - 1)]
    return value


def restriction_of(circuit: Circuit) -> Restriction:
    """The most specific family of :data:`FAMILIES` whose equation ``circuit`` computes.

    Decided by the terms present, not by how the circuit was written.  With the state
    neurons (those not clamped) dividing by C, every current-based circuit (κ = 0) without
    gap junctions is a CT-RNN dx/dt = −(g_L/C)x + Σ (wE/C)·σ(ν(x_j − μ)) + (g_L E_L + I)/C:
    C ≠ 1 rescales its weights, E_L ≠ 0 and current stimuli are biases, a decay of 0 in
    some neurons is allowed.  All decays 0 makes a Neural ODE.  A schedule of interval 1
    (per-step parameters) with Euler Δt = 1 makes a Neural ODE a ResNet and a CT-RNN with
    g_L/C = 1 a DNN (whose input layer may be gap junctions on in the first step only,
    as :func:`dnn` builds it).  κ = 1 on every synapse is an NRN.  Synapses of zero
    weight in every step, synapses onto clamped neurons and junctions between clamped
    neurons act on nothing and are ignored; clamped neurons and their synapses are inputs,
    and a gap junction from a clamped neuron to a state neuron is a bias and a decay
    (ĝ·V_in − ĝ·V_i), which a CT-RNN has and a Neural ODE or ResNet has not.
    An augmented Neural ODE is a Neural ODE (its augmentation lives in the initial state
    and read-out).  Integrator choices are not part of a circuit.
    """
    value = _series(circuit)
    clamped = {n.name for n in circuit.neurons if n.clamp is not None}
    state = [n for n in circuit.neurons if n.name not in clamped]
    active = [s for s in circuit.synapses if s.post not in clamped
              and np.any(value(f"synapses[{s.key}].w", s.w) > 0)]
    kappas = np.concatenate([value(f"synapses[{s.key}].kappa", s.kappa)[
        value(f"synapses[{s.key}].w", s.w) > 0] for s in active]) if active else np.zeros(0)
    gaps = [value(f"gap_junctions[{g.key}].g", g.g) for g in circuit.gap_junctions
            if not {g.a, g.b} <= clamped]
    # between two state neurons a junction couples them; from a clamped (input) neuron
    # j it adds ĝ·V_j, a bias, and −ĝ·V_i, a decay of its own
    coupling = [value(f"gap_junctions[{g.key}].g", g.g) for g in circuit.gap_junctions
                if g.a not in clamped and g.b not in clamped]
    from_inputs = {n.name: 0.0 for n in state}
    for g in circuit.gap_junctions:
        if (g.a in clamped) != (g.b in clamped):
            free = g.b if g.a in clamped else g.a
            from_inputs[free] = from_inputs[free] + value(f"gap_junctions[{g.key}].g", g.g)
    decays = [value(f"neurons[{n.name}].g_L", n.g_L) / value(f"neurons[{n.name}].C", n.C)
              for n in state]
    leaks = [(value(f"neurons[{n.name}].g_L", n.g_L) + from_inputs[n.name])
             / value(f"neurons[{n.name}].C", n.C) for n in state]
    schedule = circuit.schedule
    stepped = schedule is not None and schedule.interval == 1.0
    current = any(st.quantity == "current" and set(st.targets) - clamped
                  for st in circuit.stimuli.values())
    terms = tuple(t for t, present in zip(TERMS, (
        any(np.any(d > 0) for d in leaks), bool(np.any(kappas > 0)), bool(active),
        any(np.any(g > 0) for g in gaps), current, bool(clamped), schedule is not None)) if present)

    current_based = (bool(np.all(kappas == 0)),
                     f"synapses are not all current-based (κ ∈ {sorted(set(kappas.tolist()))})")
    no_gaps = (not any(np.any(g > 0) for g in coupling),
               "gap junctions add a linear coupling ĝ(V_j − V_i)")
    input_gaps = (not any(np.any(g[1:] > 0) for g in gaps),
                  "gap junctions stay on after the first (input) step")
    constant = (schedule is None, "parameters change in time (a schedule)")
    no_leak = (all(np.all(d == 0) for d in leaks),
               "some neuron has a leak (g_L > 0, or a gap junction to an input): a decay")
    unit_decay = (all(np.all(d == 1) for d in decays),
                  "g_L/C ≠ 1 (Euler Δt = 1 must replace the state)")
    steps = (stepped, "no per-step parameter schedule with interval 1")
    failed = {}

    def check(family, conditions):
        bad = [why for ok, why in conditions if not ok]
        if bad:
            failed[family] = "; ".join(bad)
        return not bad

    verdicts = {
        "dnn": check("dnn", [current_based, input_gaps, unit_decay, steps]),
        "resnet": check("resnet", [current_based, no_gaps, no_leak, steps]),
        "neural_ode": check("neural_ode", [current_based, no_gaps, no_leak, constant]),
        "ctrnn": check("ctrnn", [current_based, no_gaps, constant]),
        "nrn": check("nrn", [(bool(np.all(kappas == 1)), "synapses are not all conductance-based "
                              f"(κ ∈ {sorted(set(kappas.tolist()))})"), constant]),
    }
    family = next((f for f in FAMILIES if verdicts[f]), "general")
    return Restriction(family, {k: v for k, v in failed.items() if k != family}, terms)


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


#: the ncps LTCCell parameters it passes through ``make_positive_fn`` (softplus when the
#: cell has implicit_param_constraints=True, else the identity, clipped at 0 only by
#: ``apply_weight_constraints()``)
LTC_POSITIVE = ("gleak", "cm", "w", "sensory_w")


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def ltc_cell_to_circuit(params: dict, implicit_param_constraints: bool = False,
                        name: str = "ltc cell") -> Circuit:
    """A circuit from the parameters of an ncps ``LTCCell`` (as NumPy arrays).

    Keys: gleak, vleak, cm (units,); w, sigma, mu, erev (units, units) indexed
    [pre, post]; sensory_w, sensory_sigma, sensory_mu, sensory_erev (inputs, units);
    optional sparsity_mask and sensory_sparsity_mask (0 removes a synapse).  Units become
    neurons ``u0..``; inputs become clamped neurons ``in0..`` driven by
    :func:`ltc_input_stimuli`.  The dimensionless state maps to mV one to one.
    Run it with ``integrator="ltc", dt=elapsed / 6`` (the cell's 6 unfolds).

    ``implicit_param_constraints`` must be the cell's own setting: with True the cell
    applies softplus to gleak, cm, w and sensory_w at every step, and so does this map;
    with False it uses them as stored, and a negative value (which the cell's
    ``apply_weight_constraints()`` would clip to 0) is refused.
    """
    missing = [k for k in LTC_KEYS if k not in params]
    if missing:
        raise CircuitError(f"LTC parameters lack {', '.join(missing)}; expected {', '.join(LTC_KEYS)}")
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    for key in LTC_POSITIVE:
        if implicit_param_constraints:
            p[key] = _softplus(p[key])
        elif np.any(p[key] < 0):
            raise CircuitError(f"LTC parameter {key} has negative entries (min {p[key].min():.3g}): "
                               "call the cell's apply_weight_constraints() first, or pass "
                               "implicit_param_constraints=True if the cell was built with it")
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


def circuit_to_ltc_cell(circuit: Circuit, implicit_param_constraints: bool = False) -> dict:
    """The ncps ``LTCCell`` parameters of a circuit made by :func:`ltc_cell_to_circuit`.

    With ``implicit_param_constraints=True`` gleak, cm, w and sensory_w are returned as
    the cell stores them, softplus⁻¹ of the circuit's values (which must then be > 0;
    entries of absent synapses are 0, as the mask removes them).
    """
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
    if implicit_param_constraints:
        for key in LTC_POSITIVE:
            present = out[key] > 0 if key in ("w", "sensory_w") else np.ones(out[key].shape, bool)
            if np.any(out[key][present] <= 0):
                raise CircuitError(f"{key} must be > 0 to be a softplus output; got "
                                   f"{out[key][present].min():.3g}")
            out[key] = np.where(present, np.log(np.expm1(np.where(present, out[key], 1.0))), 0.0)
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
