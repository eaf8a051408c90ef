"""Circuit + protocol → flat float64/int64 arrays for the kernels.

Parameters live in one vector ``theta`` so that fitting and batching swap numbers
without recompiling anything; :class:`~neurosim.compile.layout.ParameterLayout` says where
each lives (``compiled.layout``).  Synapses are sorted by postsynaptic neuron (CSR) and
each gap junction is stored once in ``theta`` but listed under both of its neurons.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from neurosim.compile.layout import NEURON_FIELDS, SYNAPSE_FIELDS, ParameterLayout
from neurosim.errors import CircuitError
from neurosim.compile import tables as kc
from neurosim.model import STIMULUS_KINDS, Circuit, Protocol, Stimulus, unknown_name_message


@dataclass(frozen=True, eq=False)
class CompiledCircuit:
    """A circuit as arrays.  Build it with :func:`compile_circuit`.

    Attributes
    ----------
    circuit : Circuit
        The circuit after ablation.
    neuron_names : tuple of str
        Names in state-vector order.
    theta : ndarray, shape (n_params,)
        Parameter vector; never mutated by neurosim.
    layout : ParameterLayout
        Where each parameter lives in ``theta``, by name (``layout.index(
        "synapses[PVD->AVA].w")``, ``layout.block("neurons.C")``, ``layout.names``).
    syn_ptr, syn_pre : ndarray of int64
        CSR of chemical synapses by postsynaptic neuron.
    pre_rep : ndarray of int64
        For each neuron, its first outgoing synapse in θ order (−1 if none): the
        synapse whose (μ, ν) the kernel uses for the neuron's shared sigmoid (see
        :meth:`net_for`).
    gap_ptr, gap_nbr, gap_idx : ndarray of int64
        CSR of gap-junction half-edges by neuron; ``gap_idx`` indexes the junction in theta.
    hold : ndarray, shape (n_neurons,), mV
        Clamp holding potential (NaN for free neurons).
    synapses_csr : tuple of Synapse
        The synapses in θ order.
    schedule : CompiledSchedule or None
        θ per interval of a parameter schedule.
    """

    circuit: Circuit
    neuron_names: tuple[str, ...]
    theta: np.ndarray
    layout: ParameterLayout
    syn_ptr: np.ndarray
    syn_pre: np.ndarray
    pre_rep: np.ndarray
    gap_ptr: np.ndarray
    gap_nbr: np.ndarray
    gap_idx: np.ndarray
    hold: np.ndarray
    synapses_csr: tuple
    schedule: "CompiledSchedule | None" = None

    @property
    def n_neurons(self) -> int:
        return len(self.neuron_names)

    @property
    def n_synapses(self) -> int:
        return int(self.syn_pre.shape[0])

    @property
    def n_gap(self) -> int:
        return self.layout.n_gap

    @functools.cached_property
    def net(self) -> tuple:
        """The integer structure the kernels take, for runs with ``self.theta``."""
        return self.net_for(self.theta[None, :])

    def net_for(self, thetas: np.ndarray) -> tuple:
        """The kernels' structure for runs with the parameter vectors ``thetas`` (rows).

        The last three entries flag the synapses that need a sigmoid of their own in some
        row (those whose (μ, ν) differ from their presynaptic neuron's first synapse), the
        neurons that receive any such synapse, and the neurons whose incoming synapses all
        have κ = 1 in every row.  The other synapses reuse their presynaptic neuron's
        sigmoid, computed once per evaluation.  Deciding it here, not per synapse in the
        kernel, halves the synapse loop of a large circuit; the per-neuron flags keep the
        per-synapse test and the multiplication by κ = 1 (exact, so results do not change)
        out of the rows that need neither.
        """
        block = self.layout.block
        mu, nu = thetas[:, block("synapses.mu")], thetas[:, block("synapses.nu")]
        rep = self.pre_rep[self.syn_pre]
        own = ((mu != mu[:, rep]) | (nu != nu[:, rep])).any(axis=0)
        kappa = thetas[:, block("synapses.kappa")]
        return (self.syn_ptr, self.syn_pre, self.gap_ptr, self.gap_nbr, self.gap_idx,
                self.pre_rep, own, self._any_in_row(own),
                ~self._any_in_row((kappa != 1.0).any(axis=0)))

    def _any_in_row(self, flags: np.ndarray) -> np.ndarray:
        """For each neuron, whether any of its incoming synapses is flagged."""
        before = np.concatenate(([0], np.cumsum(flags)))
        return before[self.syn_ptr[1:]] > before[self.syn_ptr[:-1]]

    def index(self, name: str) -> int:
        """State-vector index of neuron ``name``."""
        try:
            return self.neuron_names.index(name)
        except ValueError:
            raise CircuitError(unknown_name_message("neuron", name, list(self.neuron_names))) from None

    def with_theta(self, theta) -> "CompiledCircuit":
        """The same structure with another parameter vector (validated)."""
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        if theta.shape != self.theta.shape:
            raise CircuitError(f"theta must have shape {self.theta.shape}, got {theta.shape}")
        check_theta(theta, self)
        return dataclasses.replace(self, theta=theta)


def check_theta(theta: np.ndarray, compiled: CompiledCircuit) -> None:
    """Raise CircuitError naming the first parameter that is non-finite or out of range.

    ``theta`` is one vector or a matrix with one parameter set per row.
    """
    rows = np.atleast_2d(theta)
    block = compiled.layout.block
    rules = [(slice(None), lambda x: ~np.isfinite(x), "must be a finite number"),
             (block("neurons.C"), lambda x: x <= 0, "must be > 0"),
             (block("neurons.g_L"), lambda x: x < 0, "must be >= 0"),
             (block("synapses.w"), lambda x: x < 0, "must be >= 0"),
             (block("synapses.kappa"), lambda x: (x < 0) | (x > 1), "must be in [0, 1]"),
             (block("gap_junctions.g"), lambda x: x < 0, "must be >= 0")]
    for where, test, rule in rules:
        hits = np.argwhere(test(rows[:, where]))
        if hits.size:
            row, col = hits[0]
            k = (where.start or 0) + col
            at = f" (parameter set {row})" if theta.ndim == 2 else ""
            raise CircuitError(f"{rule}, got {float(rows[row, k])!r}{at}",
                               path=compiled.layout.names[k])


def compile_cached(circuit: Circuit, ablate=(), scale=None) -> CompiledCircuit:
    """:func:`compile_circuit`, remembered on the circuit object (treat it as read-only).

    Circuits are frozen, so repeated runs of one circuit (protocol tables, sweeps) compile
    it once; the memo lives and dies with the circuit and is not pickled.
    """
    memo = circuit.__dict__.get("_compiled")
    if memo is None:
        memo = {}
        object.__setattr__(circuit, "_compiled", memo)
    variant = (tuple(ablate), tuple(sorted((scale or {}).items())))
    if variant not in memo:
        memo[variant] = compile_circuit(circuit, ablate, scale)
    return memo[variant]


def compile_circuit(circuit: Circuit, ablate=(), scale=None) -> CompiledCircuit:
    """Flatten ``circuit`` (with the neurons in ``ablate`` removed) into arrays.

    ``scale`` maps neuron names to factors applied to the weight of every synapse and
    gap junction touching that neuron (partial lesions; see :class:`Protocol`).

    Examples
    --------
    >>> from neurosim.model import Circuit, Neuron, Synapse
    >>> c = Circuit("pair", (Neuron("A"), Neuron("B")), (Synapse("A", "B", w=0.5),))
    >>> compile_circuit(c).layout.names[8]
    'synapses[A->B].w'
    """
    original = circuit
    if ablate:
        circuit = circuit.without(tuple(ablate))
    if scale:
        circuit = scaled_connections(circuit, scale)
    names = circuit.neuron_names
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    synapses = sorted(circuit.synapses, key=lambda s: index[s.post])  # stable: file order kept
    syn_ptr = np.zeros(n + 1, dtype=np.int64)
    for syn in synapses:
        syn_ptr[index[syn.post] + 1] += 1
    syn_ptr = np.cumsum(syn_ptr)
    syn_pre = np.array([index[s.pre] for s in synapses], dtype=np.int64)
    pre_rep = np.full(n, -1, dtype=np.int64)
    for k in range(syn_pre.shape[0] - 1, -1, -1):
        pre_rep[syn_pre[k]] = k

    halves = [[] for _ in range(n)]
    for q, gap in enumerate(circuit.gap_junctions):
        halves[index[gap.a]].append((index[gap.b], q))
        halves[index[gap.b]].append((index[gap.a], q))
    gap_ptr = np.cumsum([0] + [len(h) for h in halves]).astype(np.int64)
    gap_nbr = np.array([nbr for h in halves for nbr, _ in h], dtype=np.int64)
    gap_idx = np.array([q for h in halves for _, q in h], dtype=np.int64)

    neuron_values = {
        "C": [nr.C for nr in circuit.neurons], "g_L": [nr.g_L for nr in circuit.neurons],
        "E_L": [nr.E_L for nr in circuit.neurons],
        "V0": [nr.initial_V for nr in circuit.neurons]}
    theta = np.concatenate(
        [np.array(neuron_values[f], dtype=np.float64) for f in NEURON_FIELDS]
        + [np.array([getattr(s, f) for s in synapses], dtype=np.float64) for f in SYNAPSE_FIELDS]
        + [np.array([g.g for g in circuit.gap_junctions], dtype=np.float64)])
    layout = ParameterLayout(tuple(names), tuple(s.key for s in synapses),
                             tuple(g.key for g in circuit.gap_junctions))
    hold = np.array([math.nan if nr.clamp is None else nr.clamp for nr in circuit.neurons])
    compiled = CompiledCircuit(circuit, names, theta, layout, syn_ptr, syn_pre, pre_rep,
                               gap_ptr, gap_nbr, gap_idx, hold, tuple(synapses))
    if circuit.schedule is None:
        return compiled
    dropped = set(parameter_names(original)) - set(layout.names)
    return dataclasses.replace(compiled, schedule=compile_schedule(compiled, circuit.schedule,
                                                                   dropped))


def parameter_names(circuit: Circuit) -> list[str]:
    """Every parameter name of ``circuit`` (in model order, not θ order)."""
    return ([f"neurons[{n.name}].{f}" for n in circuit.neurons for f in NEURON_FIELDS]
            + [f"synapses[{s.key}].{f}" for s in circuit.synapses for f in SYNAPSE_FIELDS]
            + [f"gap_junctions[{g.key}].g" for g in circuit.gap_junctions])


@dataclass(frozen=True, eq=False)
class CompiledSchedule:
    """θ for each interval of a :class:`~neurosim.model.Schedule` (rows: intervals)."""

    thetas: np.ndarray
    interval: float


def compile_schedule(compiled: CompiledCircuit, schedule, dropped=frozenset()) -> CompiledSchedule:
    """One θ row per interval; series of parameters in ``dropped`` (ablated) are skipped."""
    thetas = np.repeat(compiled.theta[None, :], schedule.n_intervals, axis=0)
    for name, series in schedule.values.items():
        if name not in compiled.layout.names:
            if name in dropped:
                continue
            raise CircuitError(unknown_name_message("parameter", name, list(compiled.layout.names)),
                               path=f"schedule.values.{name}")
        k = compiled.layout.index(name)
        values = np.array(series)
        thetas[:, k] = values[np.minimum(np.arange(schedule.n_intervals), values.size - 1)]
    check_theta(thetas, compiled)
    return CompiledSchedule(thetas, schedule.interval)


def scaled_connections(circuit: Circuit, scale: dict) -> Circuit:
    """A copy with synapse and gap weights multiplied by the factors of their neurons."""
    for name in scale:
        circuit.neuron(name)  # raises on an unknown name
    factor = lambda *names: math.prod(scale.get(n, 1.0) for n in names)  # noqa: E731
    return circuit.replace(
        synapses=tuple(dataclasses.replace(s, w=s.w * factor(*{s.pre, s.post}))
                       for s in circuit.synapses),
        gap_junctions=tuple(dataclasses.replace(g, g=g.g * factor(g.a, g.b))
                            for g in circuit.gap_junctions))


@dataclass(frozen=True, eq=False)
class CompiledDrive:
    """Stimuli and clamps of one protocol as kernel arrays.

    Attributes
    ----------
    arrays : tuple
        (kind, target, is_voltage, params, table_ptr, table_t, table_v, clamped, hold),
        the ``drive`` argument of the kernels.
    breakpoints : ndarray, ms
        Sorted times where an input jumps; adaptive steps land on them.
    duration : float, ms
    """

    arrays: tuple
    breakpoints: np.ndarray
    duration: float

    @property
    def clamped(self) -> np.ndarray:
        return self.arrays[7]


#: most input edges a run may hold: each costs at least one step, and an adaptive run
#: stops at its max_steps (10^7 by default) anyway
MAX_BREAKPOINTS = 10_000_000


def drive_breakpoints(stimuli, duration: float) -> np.ndarray:
    """Sorted distinct times in (0, duration) where some stimulus jumps (ms).

    Refuses a drive with more than :data:`MAX_BREAKPOINTS` edges before building any.
    """
    total = 0
    for stim in stimuli:
        count = stim.edge_count(duration)
        total += count
        if total > MAX_BREAKPOINTS:
            others = f", {total:,} with the drive's other stimuli" if total != count else ""
            raise CircuitError(
                f"a {stim.kind} stimulus on {', '.join(stim.targets)} has {count:,} edges in "
                f"{duration:g} ms{others}, more than the limit of {MAX_BREAKPOINTS:,} (each "
                "edge costs at least one step); use fewer pulses or a shorter run")
    parts = [stim.breakpoints(duration) for stim in stimuli]
    return np.unique(np.concatenate([np.empty(0), *parts]))


def compile_drive(compiled: CompiledCircuit, stimuli, duration: float) -> CompiledDrive:
    """Stimulus rows (one per stimulus target; the rows of a stimulus's later targets
    repeat the first row's value, so the waveform is computed once), clamp mask and
    breakpoints (see :func:`drive_breakpoints`).

    A voltage stimulus clamps its target for the whole run, around the neuron's holding
    potential (``clamp``) or, for an unclamped neuron, its V0.
    """
    kind, target, is_voltage, params, ptr, tab_t, tab_v = [], [], [], [], [0], [], []
    V0 = compiled.theta[compiled.layout.block("neurons.V0")]
    hold = np.where(np.isnan(compiled.hold), V0, compiled.hold)
    clamped = ~np.isnan(compiled.hold)
    stimuli = list(stimuli)
    for stim in stimuli:
        if not isinstance(stim, Stimulus):
            raise CircuitError(f"expected a Stimulus, got {type(stim).__name__}")
    breakpoints = drive_breakpoints(stimuli, duration)
    for stim in stimuli:
        row = np.zeros(kc.N_STIM_PARAMS)
        row[kc.P_OFFSET] = stim.offset
        row[kc.P_AMPLITUDE] = stim.amplitude
        row[kc.P_START] = stim.start
        row[kc.P_DURATION] = stim.duration
        row[kc.P_END] = stim.end
        row[kc.P_PERIOD] = stim.period or math.inf
        row[kc.P_COUNT] = math.inf if stim.count is None else stim.count
        row[kc.P_OMEGA] = 2 * math.pi * (stim.frequency or 0.0) * 1e-3  # Hz → rad/ms
        row[kc.P_PHASE] = stim.phase
        for position, name in enumerate(stim.targets):
            i = compiled.index(name)
            first = position == 0
            kind.append(list(STIMULUS_KINDS).index(stim.kind) if first else kc.REPEAT_ROW)
            target.append(i)
            is_voltage.append(stim.quantity == "voltage")
            params.append(row)
            if first and stim.kind in ("table", "steps"):
                tab_t.extend(stim.times)
                tab_v.extend(stim.values)
            ptr.append(len(tab_t))
            if stim.quantity == "voltage":
                clamped[i] = True
    arrays = (np.array(kind, dtype=np.int64), np.array(target, dtype=np.int64),
              np.array(is_voltage, dtype=np.bool_),
              np.array(params, dtype=np.float64).reshape(len(kind), kc.N_STIM_PARAMS),
              np.array(ptr, dtype=np.int64), np.array(tab_t, dtype=np.float64),
              np.array(tab_v, dtype=np.float64), clamped.astype(np.bool_),
              hold.astype(np.float64))
    return CompiledDrive(arrays, breakpoints, float(duration))


@dataclass(frozen=True, eq=False)
class CompiledBatch:
    """Several protocols on one (unablated) circuit structure, for the batch kernel.

    Ablation becomes data: the synapses and gap junctions of an ablated neuron get
    factor 0 in ``factors`` and the neuron is held still (clamped, excluded from error
    control), which leaves every other neuron's arithmetic exactly as in a run of the
    circuit with the neuron deleted.

    Attributes
    ----------
    arrays : tuple
        (kind, target, is_voltage, params, stim_ptr, table_ptr, table_t, table_v,
        clamped (n_protocols, n), hold (n_protocols, n)).
    breakpoints, bp_ptr : ndarray
        Breakpoints of protocol p are ``breakpoints[bp_ptr[p]:bp_ptr[p + 1]]``.
    factors : ndarray, shape (n_protocols, n_params)
        Multipliers of θ (0 for ablated connections, lesion factors, 1 elsewhere).
    durations : ndarray, shape (n_protocols,), ms
    ablated : ndarray of bool, shape (n_protocols, n)
    """

    arrays: tuple
    breakpoints: np.ndarray
    bp_ptr: np.ndarray
    factors: np.ndarray
    durations: np.ndarray
    ablated: np.ndarray

    def drive(self, p: int) -> CompiledDrive:
        """Protocol p alone, as the drive of a single run."""
        kind, target, is_voltage, par, stim_ptr, tab_ptr, tab_t, tab_v, clamped, hold = self.arrays
        s0, s1 = stim_ptr[p], stim_ptr[p + 1]
        arrays = (kind[s0:s1], target[s0:s1], is_voltage[s0:s1], par[s0:s1], tab_ptr[s0:s1 + 1],
                  tab_t, tab_v, clamped[p], hold[p])
        return CompiledDrive(arrays, self.breakpoints[self.bp_ptr[p]:self.bp_ptr[p + 1]],
                             float(self.durations[p]))


def surviving_stimuli(circuit: Circuit, protocol: Protocol, ablated) -> list[Stimulus]:
    """The protocol's stimuli as objects, without targets among the ``ablated`` neurons."""
    gone = set(ablated)
    out = []
    for stim in circuit.resolve_stimuli(protocol):
        targets = tuple(t for t in stim.targets if t not in gone)
        if targets:
            out.append(dataclasses.replace(stim, target=targets))
    return out


def connection_factors(compiled: CompiledCircuit, scale: dict) -> np.ndarray:
    """What ``scale`` (neuron name -> factor, as a protocol's lesions give it) multiplies
    θ by over ``compiled``'s layout: every synapse weight and gap conductance by the
    factors of the neurons it touches (once each, an autapse too), 1 elsewhere."""
    layout = compiled.layout
    w0 = layout.block("synapses.w").start
    g0 = layout.block("gap_junctions.g").start
    factor = np.ones(compiled.theta.shape[0])
    for k, syn in enumerate(compiled.synapses_csr):
        factor[w0 + k] = math.prod(scale.get(x, 1.0) for x in {syn.pre, syn.post})
    for q, gap in enumerate(compiled.circuit.gap_junctions):
        factor[g0 + q] = scale.get(gap.a, 1.0) * scale.get(gap.b, 1.0)
    return factor


def compile_batch(compiled: CompiledCircuit, protocols) -> CompiledBatch:
    """Pack ``protocols`` (Protocol objects) for :func:`neurosim.kernels.batch.run_batch`."""
    circuit = compiled.circuit
    parts, factors, ablated, bps = [], [], [], []
    for proto in protocols:
        gone = set(proto.ablate)
        circuit._check_ablation(tuple(gone))
        weight = {name: 0.0 for name in gone}
        for name, value in proto.scale.items():
            circuit.neuron(name)
            weight.setdefault(name, value)
        factor = connection_factors(compiled, weight)
        drive = compile_drive(compiled, surviving_stimuli(circuit, proto, gone), proto.duration)
        mask = np.array([name in gone for name in compiled.neuron_names])
        drive.clamped[mask] = True
        parts.append(drive.arrays)
        factors.append(factor)
        ablated.append(mask)
        bps.append(drive.breakpoints)
    kind, target, is_voltage, par, tab_ptr, tab_t, tab_v, clamped, hold = zip(*parts)
    stim_ptr = np.cumsum([0] + [k.shape[0] for k in kind]).astype(np.int64)
    table_offsets = np.cumsum([0] + [t.shape[0] for t in tab_t])
    # each protocol's table pointers start at 0: shift them and drop the duplicate ends
    all_tab_ptr = np.concatenate([[0]] + [p[1:] + off for p, off in zip(tab_ptr, table_offsets)])
    arrays = (np.concatenate(kind), np.concatenate(target), np.concatenate(is_voltage),
              np.concatenate(par).reshape(-1, kc.N_STIM_PARAMS), stim_ptr,
              all_tab_ptr.astype(np.int64), np.concatenate(tab_t), np.concatenate(tab_v),
              np.stack(clamped), np.stack(hold))
    bp_ptr = np.cumsum([0] + [b.shape[0] for b in bps]).astype(np.int64)
    return CompiledBatch(arrays, np.concatenate(bps), bp_ptr, np.stack(factors),
                         np.array([p.duration for p in protocols]), np.stack(ablated))


def circuit_with_theta(compiled: CompiledCircuit, theta) -> Circuit:
    """The compiled circuit's model objects with the values of ``theta`` written back."""
    circuit = compiled.circuit
    theta = np.asarray(theta, dtype=np.float64)
    check_theta(theta, compiled)
    block = compiled.layout.block
    neurons = []
    for i, nr in enumerate(circuit.neurons):
        C, g_L, E_L, V0 = (float(theta[block(f"neurons.{f}")][i]) for f in NEURON_FIELDS)
        # V0 is written wherever it differs from the (new) E_L, so that a run started as
        # given starts where θ's runs did; that the file now gives V0 must not switch a
        # circuit that started at rest to "as given" (see ``initial`` below)
        keep_V0 = nr.V0 is not None or V0 != E_L
        neurons.append(dataclasses.replace(nr, C=C, g_L=g_L, E_L=E_L, V0=V0 if keep_V0 else None))
    by_key = {}
    for k, syn in enumerate(compiled.synapses_csr):
        by_key[syn.key] = {f: float(theta[block(f"synapses.{f}")][k]) for f in SYNAPSE_FIELDS}
    synapses = tuple(dataclasses.replace(syn, **by_key[syn.key]) for syn in circuit.synapses)
    gaps = tuple(dataclasses.replace(g, g=float(theta[block("gap_junctions.g")][q]))
                 for q, g in enumerate(circuit.gap_junctions))
    initial = circuit.initial
    if initial is None and not any(nr.V0 is not None for nr in circuit.neurons):
        initial = "rest"  # the start the circuit had, whatever V0 values now say
    return circuit.replace(neurons=tuple(neurons), synapses=synapses, gap_junctions=gaps,
                           initial=initial)


def resolve_protocol(circuit: Circuit, protocol) -> tuple[str, Protocol]:
    """(name, Protocol) from a protocol name, a Protocol, or None (the only one, if any)."""
    if protocol is None:
        if len(circuit.protocols) == 1:
            return next(iter(circuit.protocols.items()))
        choices = ", ".join(circuit.protocols) or "(the circuit defines none)"
        raise CircuitError(f"give protocol= (one of: {choices}) or duration=")
    if isinstance(protocol, str):
        return protocol, circuit.protocol(protocol)
    if isinstance(protocol, Protocol):
        return "(inline)", protocol
    raise CircuitError(f"protocol must be a name or a Protocol, got {type(protocol).__name__}")
