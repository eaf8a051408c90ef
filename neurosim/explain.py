"""Explain circuits: where each neuron's current comes from, its liquid time constant,
the pathways that carry a response, the motifs a circuit contains, and robustness.

An NRN is "a linear system with state-dependent coefficients" (Grosu): given the
presynaptic sigmoids, C dV/dt = −G(t)·V + N(t).  :func:`decompose` splits C dV/dt into
its leak, synaptic, gap-junction and stimulus currents (they sum to it exactly);
:func:`linear_form` gives a = G/C and b = N/C, and 1/a is the effective ("liquid") time
constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurosim.compile import compile_circuit, resolve_protocol, scaled_connections
from neurosim.errors import CircuitError
from neurosim.model import Circuit, Protocol
from neurosim.record import Result
from neurosim.simulate import rest_state, simulate, simulate_batch

#: a synapse whose reversal potential lies above this counts as excitatory (mV)
EXCITATORY_ABOVE = -50.0


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Decomposition:
    """Currents into one neuron along a run (pA), one column per source.

    Attributes
    ----------
    t : ndarray, shape (n_samples,), ms
    neuron : str
    names : list of str
        ``"leak"``, ``"syn PRE->POST"``, ``"gap A-B"``, ``"stimulus NAME"``.
    currents : ndarray, shape (n_samples, n_sources), pA
        Their sum is C·dV/dt.
    conductance : ndarray, shape (n_samples,), nS
        G(t) = g_L + Σ w σ κ + Σ ĝ; ``tau = C / G`` is the liquid time constant.
    drive : ndarray, shape (n_samples,), pA
        N(t): C dV/dt = N − G·V.
    C : float, pF
    """

    t: np.ndarray
    neuron: str
    names: list
    currents: np.ndarray
    conductance: np.ndarray
    drive: np.ndarray
    C: float

    @property
    def total(self) -> np.ndarray:
        """C·dV/dt (pA)."""
        return self.currents.sum(axis=1)

    @property
    def charges(self) -> np.ndarray:
        """|∫ current dt| of each source over the run (pC)."""
        return np.trapezoid(np.abs(self.currents), self.t, axis=0) * 1e-3

    def evoked_charges(self, control: "Decomposition") -> np.ndarray:
        """∫(current − control current) dt of each source (pC), signed; ``control`` is the
        same neuron's decomposition in the control run (interpolated onto ``t``).  A source
        the control lacks (a stimulus) counts from 0."""
        out = np.empty(len(self.names))
        for k, name in enumerate(self.names):
            base = (np.interp(self.t, control.t, control.currents[:, control.names.index(name)])
                    if name in control.names else 0.0)
            out[k] = np.trapezoid(self.currents[:, k] - base, self.t) * 1e-3
        return out

    @property
    def tau(self) -> np.ndarray:
        """Effective time constant C/G (ms) at every sample."""
        with np.errstate(divide="ignore"):
            return np.where(self.conductance > 0, self.C / self.conductance, np.inf)


def _traces(result: Result, circuit: Circuit) -> dict:
    names = set(result.neuron_names)
    return {n.name: result.v(n.name) for n in circuit.neurons if n.name in names}


def _protocol_stimuli(circuit: Circuit, result: Result, stimuli):
    if stimuli is not None:
        return list(stimuli)
    name = result.metadata.get("protocol")
    if name in circuit.protocols:
        return list(circuit.resolve_stimuli(circuit.protocols[name]))
    raise CircuitError(f"cannot tell which stimuli drove this run: its protocol {name!r} is "
                       "not one of the circuit's (give the stimuli explicitly)")


def clamped_in_run(circuit: Circuit, result: Result) -> set:
    """The neurons whose potential ``result``'s run imposed: those with a holding
    potential, and the targets of its protocol's voltage stimuli."""
    held = {n.name for n in circuit_as_run(circuit, result).neurons if n.clamp is not None}
    name = result.metadata.get("protocol")
    if name in circuit.protocols:
        held |= {t for stim in circuit.resolve_stimuli(circuit.protocols[name])
                 if stim.quantity == "voltage" for t in stim.targets}
    return held


def circuit_as_run(circuit: Circuit, result: Result) -> Circuit:
    """The circuit that ``result`` ran: without the neurons it ablated and with its
    lesions (``scale``), as its metadata records them."""
    gone = [n for n in result.metadata.get("ablated", ()) if n in circuit.neuron_names]
    run = circuit.without(gone) if gone else circuit
    scale = {k: v for k, v in result.metadata.get("scaled", {}).items() if k in run.neuron_names}
    return scaled_connections(run, scale) if scale else run


def decompose(circuit: Circuit, result: Result, neuron: str, stimuli=None) -> Decomposition:
    """Split C·dV/dt of ``neuron`` into its currents along ``result``.

    Every neuron presynaptic to ``neuron`` (or joined to it by a gap) must be recorded.
    ``stimuli`` defaults to those of the result's protocol in ``circuit``.  The currents
    are those of the circuit as run (:func:`circuit_as_run`: ablations and lesions).  For
    a clamped neuron they do not sum to C·dV/dt: the clamp supplies the rest.
    """
    stimuli = _protocol_stimuli(circuit, result, stimuli)
    circuit = circuit_as_run(circuit, result)
    target = circuit.neuron(neuron)
    V = _traces(result, circuit)
    if neuron not in V:
        raise CircuitError(f"neuron {neuron!r} was not recorded")
    needed = {s.pre for s in circuit.synapses if s.post == neuron}
    needed |= {g.b if g.a == neuron else g.a for g in circuit.gap_junctions if neuron in (g.a, g.b)}
    missing = sorted(needed - set(V))
    if missing:
        raise CircuitError(f"record the inputs of {neuron!r} too: {', '.join(missing)}")
    v = V[neuron]
    names, columns = ["leak"], [target.g_L * (target.E_L - v)]
    G = np.full_like(v, target.g_L)
    N = np.full_like(v, target.g_L * target.E_L)
    for syn in circuit.synapses:
        if syn.post != neuron:
            continue
        ws = syn.w * _sigmoid(syn.nu * (V[syn.pre] - syn.mu))
        names.append(f"syn {syn.key}")
        columns.append(ws * (syn.E - syn.kappa * v))
        G, N = G + ws * syn.kappa, N + ws * syn.E
    for gap in circuit.gap_junctions:
        if neuron not in (gap.a, gap.b):
            continue
        other = gap.b if gap.a == neuron else gap.a
        names.append(f"gap {gap.key}")
        columns.append(gap.g * (V[other] - v))
        G, N = G + gap.g, N + gap.g * V[other]
    for k, stim in enumerate(stimuli):
        if neuron in stim.targets and stim.quantity == "current":
            current = stim.value(result.t)
            names.append(f"stimulus {k} ({stim.kind})")
            columns.append(current)
            N = N + current
    return Decomposition(result.t, neuron, names, np.stack(columns, axis=1), G, N, target.C)


def linear_form(decomposition: Decomposition) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with dV/dt = −a·V + b: a = G/C (1/ms), b = N/C (mV/ms)."""
    return decomposition.conductance / decomposition.C, decomposition.drive / decomposition.C


@dataclass(frozen=True)
class Pathway:
    """A chain of connections from a source to a target and the evoked charge it carried.

    Attributes
    ----------
    neurons : tuple of str
    charge : float, pC
        Signed: the bottleneck (smallest |evoked charge| along the chain) times the sign of
        the chain's effect on the target (+ depolarising, − hyperpolarising).
    per_edge : tuple of float, pC
        Evoked charge of each connection into its postsynaptic neuron (signed).
    """

    neurons: tuple
    charge: float
    per_edge: tuple

    @property
    def effect(self) -> str:
        return "depolarising" if self.charge > 0 else "hyperpolarising"


def _transmitted_currents(circuit: Circuit, V: dict, V_control: dict) -> dict:
    """(pre, post) -> the part of the current into post that pre's change carried (pA):
    for a synapse w·(σ(now) − σ(control))·(E − κ·V_post), the presynaptic activation's
    change at the actual driving force; for a gap junction ĝ·(V_pre − V_pre,control).
    What is left of a connection's change, the postsynaptic neuron's own change of
    driving force, is not a signal from pre.  A neuron missing from the control (ablated
    there) had no connections: its connections count in full."""
    out = {}
    for syn in circuit.synapses:
        if syn.pre in V and syn.post in V:
            now = _sigmoid(syn.nu * (V[syn.pre] - syn.mu))
            before = (_sigmoid(syn.nu * (V_control[syn.pre] - syn.mu))
                      if syn.pre in V_control and syn.post in V_control else 0.0)
            current = syn.w * (now - before) * (syn.E - syn.kappa * V[syn.post])
            out[(syn.pre, syn.post)] = out.get((syn.pre, syn.post), 0.0) + current
    for gap in circuit.gap_junctions:
        if gap.a in V and gap.b in V:
            for a, b in ((gap.a, gap.b), (gap.b, gap.a)):
                present = a in V_control and b in V_control
                change = V[a] - V_control[a] if present else V[a] - V[b]
                out[(a, b)] = out.get((a, b), 0.0) + gap.g * change
    return out


def _edge_signs(circuit: Circuit, V: dict, V_fallback: dict) -> dict:
    """(pre, post) -> +1, −1 (or 0 for a zero weight): the sign of ∂(current into
    post)/∂V_pre at the potentials V (those of ``V_fallback`` for neurons V lacks, e.g.
    ablated in the control).  For a synapse that is sign(ν·(E − κ·V_post)) however flat
    its sigmoid (a saturated synapse keeps its direction); a gap junction is +1; a synapse
    and a gap on one pair add their gains."""
    def mean(name):
        return float(np.mean(V[name] if name in V else V_fallback[name]))

    gain: dict = {}
    for syn in circuit.synapses:
        if syn.pre in V_fallback and syn.post in V_fallback:
            s = _sigmoid(syn.nu * (mean(syn.pre) - syn.mu))
            slope = max(s * (1 - s), 1e-12)  # a saturated sigmoid keeps its direction
            g = syn.w * slope * syn.nu * (syn.E - syn.kappa * mean(syn.post))
            gain[(syn.pre, syn.post)] = gain.get((syn.pre, syn.post), 0.0) + g
    for gap in circuit.gap_junctions:
        for a, b in ((gap.a, gap.b), (gap.b, gap.a)):
            if a in V_fallback and b in V_fallback:
                gain[(a, b)] = gain.get((a, b), 0.0) + gap.g
    return {k: float(np.sign(v)) for k, v in gain.items()}


def control_result(circuit: Circuit, result: Result, control=None) -> Result:
    """The run that a response is measured against.

    ``control`` is a :class:`Result`, the name of a protocol of ``circuit`` (simulated on
    the result's output grid; it must last as long as the result), or None: the
    stimulus-free rest of the result's own circuit (its ablations, lesions and clamps),
    held for the whole run.
    """
    end = float(result.t[-1]) if result.t.size else 0.0
    if isinstance(control, Result):
        if control.t.size == 0 or control.t[-1] < end - 1e-9 * max(1.0, end):
            raise CircuitError(f"the control run ends at {control.t[-1] if control.t.size else 0:g} "
                               f"ms but the run lasts {end:g} ms: the control must cover it")
        return control
    dt_out = float(result.t[1] - result.t[0]) if result.t.size > 1 else None
    if control is not None:
        proto = circuit.protocol(control)
        if proto.duration < end - 1e-9 * max(1.0, end):
            raise CircuitError(f"control protocol {control!r} lasts {proto.duration:g} ms but "
                               f"the run {end:g} ms: the control must cover the run")
        return simulate(circuit, control, dt_out=dt_out)
    name = result.metadata.get("protocol")
    ablated = tuple(result.metadata.get("ablated", ()))
    scaled = dict(result.metadata.get("scaled", {}))
    if name in circuit.protocols:
        extra = tuple(a for a in ablated if a not in circuit.protocols[name].ablate)
        rest = rest_state(circuit, name, ablate=extra)
    else:
        rest = rest_state(circuit, Protocol(end or 1.0, ablate=ablated, scale=scaled))
    V = np.array([[rest.V[n] for n in result.neuron_names]] * 2)
    return Result(result.t[[0, -1]], V, result.neuron_names,
                  metadata={"protocol": "rest", "ablated": list(ablated), "scaled": scaled})


def edge_charges(circuit: Circuit, result: Result, control=None) -> dict:
    """Charge (pC) that each synapse and gap junction carried from pre to post, beyond
    the control run (:func:`control_result`; default the rest), keyed (pre, post), signed
    (+ depolarising post): the integral of the current that pre's change drove through
    the connection (see :func:`_transmitted_currents`)."""
    reference = control_result(circuit, result, control)
    run = circuit_as_run(circuit, result)
    t = result.t
    V = _traces(result, run)
    before = {n: np.interp(t, reference.t, reference.v(n)) for n in reference.neuron_names
              if n in V}
    return {key: float(np.trapezoid(np.broadcast_to(current, t.shape), t)) * 1e-3
            for key, current in _transmitted_currents(run, V, before).items()}


def dominant_pathways(circuit: Circuit, result: Result, source: str, target: str,
                      max_length: int = 4, top: int = 5, control=None) -> list[Pathway]:
    """Simple paths from ``source`` to ``target`` that carried the evoked response,
    strongest first.

    Each connection's transmitted charge (:func:`edge_charges`: the current that its
    presynaptic neuron's change drove, beyond the control, default the rest) is signed.
    Along a path, a connection passes the signal on when its charge has the sign the
    previous one implies through the sign of the connection's gain in the control (an
    inhibitory link inverts it: a depolarised presynaptic neuron sends a hyperpolarising
    current).  Paths where every link passes the signal on are ranked by their bottleneck
    |charge|; the sign of the pathway is that of its effect on the target.
    Paths whose links contradict each other carried no consistent signal and are left out,
    as are paths through a clamped neuron (its potential does not follow its inputs).
    """
    circuit.neuron(source)
    circuit.neuron(target)
    run = circuit_as_run(circuit, result)
    for end in (source, target):
        if end not in run.neuron_names:
            raise CircuitError(f"neuron {end!r} was ablated in this run")
    held = clamped_in_run(circuit, result)
    reference = control_result(circuit, result, control)
    charge = edge_charges(circuit, result, reference)
    sign = _edge_signs(run, _traces(reference, run), _traces(result, run))
    out_edges: dict = {}
    for (a, b), q in charge.items():
        out_edges.setdefault(a, []).append((b, q))
    paths = []

    def coherent(path, qs):
        for k in range(1, len(qs)):
            expected = np.sign(qs[k - 1]) * sign.get((path[k], path[k + 1]), 0.0)
            if expected == 0 or np.sign(qs[k]) != expected:
                return False
        return qs[0] != 0

    def walk(node, path, qs):
        if node == target and qs:
            if coherent(path, qs):
                bottleneck = min(abs(q) for q in qs)
                paths.append(Pathway(tuple(path), float(np.sign(qs[-1]) * bottleneck), tuple(qs)))
            return
        if len(path) > max_length:
            return
        for nxt, q in out_edges.get(node, []):
            if nxt not in path and (nxt == target or nxt not in held):
                walk(nxt, path + [nxt], qs + [q])

    walk(source, [source], [])
    return sorted(paths, key=lambda p: -abs(p.charge))[:top]


# --- motifs ------------------------------------------------------------------------------

MOTIFS = ("activation", "inhibition", "sequentialization", "mutual_exclusion", "synchronization")


def _signed_edges(circuit: Circuit) -> dict:
    """(pre, post) -> '+' or '-' for chemical synapses with w > 0 (self-loops left out)."""
    return {(s.pre, s.post): "+" if s.E > EXCITATORY_ABOVE else "-"
            for s in circuit.synapses if s.w > 0 and s.pre != s.post}


def find_motifs(circuit: Circuit) -> dict:
    """Instances of each gene-regulatory-style motif, by signed connectivity.

    * activation: A → B excitatory; inhibition: A ⊣ B inhibitory;
    * sequentialization: A → B → C, both excitatory, A ≠ C;
    * mutual exclusion: A ⊣ B and B ⊣ A;
    * synchronization: A and B joined by a gap junction, or exciting each other.

    Returns motif -> sorted list of neuron tuples.
    """
    edges = _signed_edges(circuit)
    found = {m: set() for m in MOTIFS}
    for (a, b), sign in edges.items():
        found["activation" if sign == "+" else "inhibition"].add((a, b))
        back = edges.get((b, a))
        if back is not None and back == sign:
            found["mutual_exclusion" if sign == "-" else "synchronization"].add(tuple(sorted((a, b))))
    for (a, b), s1 in edges.items():
        if s1 != "+":
            continue
        for (b2, c), s2 in edges.items():
            if b2 == b and s2 == "+" and c != a:
                found["sequentialization"].add((a, b, c))
    for gap in circuit.gap_junctions:
        if gap.g > 0:
            found["synchronization"].add(tuple(sorted((gap.a, gap.b))))
    return {m: sorted(v) for m, v in found.items()}


# --- robustness -------------------------------------------------------------------------

def lipschitz_estimate(circuit: Circuit, protocol=None, *, inputs, output: str,
                       epsilon: float = 1e-3, n_directions: int = 32, seed: int = 0,
                       **simulate_options) -> float:
    """Local Lipschitz constant of the final ``output`` potential w.r.t. initial states.

    Perturbs the initial potentials of the ``inputs`` neurons by ``epsilon`` (mV) along
    ``n_directions`` random unit directions — all in one batched call — and returns
    max |ΔV_out(t_end)| / epsilon.  Comparable across NRN, CT-RNN and Neural ODE circuits
    of the same task.
    """
    compiled = compile_circuit(circuit)
    n = compiled.n_neurons
    idx = [compiled.index(name) for name in inputs]
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_directions, len(idx)))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    params = np.tile(compiled.theta, (n_directions + 1, 1))
    for k, i in enumerate(idx):
        params[1:, 3 * n + i] += epsilon * directions[:, k]
    _, proto = resolve_protocol(circuit, protocol)
    batch = simulate_batch(circuit, params, proto, record=[output], **simulate_options)
    if batch.failed.any():
        raise CircuitError("a perturbed run failed: " + next(iter(batch.messages.values())))
    final = batch.V[0, :, -1, 0]
    return float(np.max(np.abs(final[1:] - final[0])) / epsilon)


def motif_table(circuit: Circuit) -> str:
    """Counts and instances of every motif, as text."""
    found = find_motifs(circuit)
    lines = [f"{'motif':<18} {'count':>5}  instances"]
    for motif in MOTIFS:
        shown = ", ".join("-".join(x) for x in found[motif][:8])
        more = f", ... (+{len(found[motif]) - 8})" if len(found[motif]) > 8 else ""
        lines.append(f"{motif:<18} {len(found[motif]):>5}  {shown}{more}")
    return "\n".join(lines)


__all__ = ["Decomposition", "MOTIFS", "Pathway", "circuit_as_run", "clamped_in_run",
           "control_result", "decompose",
           "dominant_pathways",
           "edge_charges",
           "find_motifs", "linear_form", "lipschitz_estimate", "motif_table"]
