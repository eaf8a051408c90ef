"""Neurons, synapses, gap junctions and the circuit that holds them.

All quantities are in the engine units of :mod:`neurosim.units` (mV, ms, nS, pF, pA).
Objects are frozen and validated on construction; a circuit refers to neurons by name.
"""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass, field, replace

from neurosim.errors import CircuitError
from neurosim.model.readout import Readout
from neurosim.model.stimulus import Protocol, Schedule, Stimulus, check_initial
from neurosim.units import finite_float, short_repr

#: reversal potentials that ``type: excitatory|inhibitory`` stands for (mV)
SYNAPSE_TYPES: dict[str, float] = {"excitatory": 0.0, "inhibitory": -90.0}

#: what a neuron does in its circuit, in the order signals flow; connectivity figures draw
#: one row per role, top to bottom
NEURON_ROLES = ("sensory", "inter", "command", "motor")


def _finite(value: float, path: str) -> float:
    try:
        return finite_float(value)
    except ValueError as exc:
        raise CircuitError(str(exc), path=path) from None


def _positive(value: float, path: str) -> float:
    number = _finite(value, path)
    if number <= 0:
        raise CircuitError(f"must be > 0, got {value!r}", path=path)
    return number


def _capacitance(value: float, path: str) -> float:
    number = _positive(value, path)
    # the kernels divide by C: 1/C of a subnormal C overflows to inf
    if number < sys.float_info.min:
        raise CircuitError(f"must be at least {sys.float_info.min:.4g} pF (the smallest normal "
                           f"float; the kernels divide by C), got {value!r}", path=path)
    return number


def _duplicate(names, path: str, what: str) -> None:
    """CircuitError at ``path[k]`` naming the first name in ``names`` given twice
    (items that are not names, such as Stimulus objects, are skipped)."""
    first: dict[str, int] = {}
    for k, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name in first:
            raise CircuitError(f"{what} {short_repr(name)} is named twice (first at {path}[{first[name]}])",
                               path=f"{path}[{k}]")
        first[name] = k


def _non_negative(value: float, path: str) -> float:
    number = _finite(value, path)
    if number < 0:
        raise CircuitError(f"must be >= 0, got {value!r}", path=path)
    return number


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown neuron 'AVX'; known: ALM, AVA, ... Did you mean 'AVA'?'"""
    shown = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "")
    message = f"unknown {kind} {short_repr(name)}; known: {shown or '(none)'}"
    # case does not count (ava → AVA), and a name differing only in case is the best match
    by_case = {k.lower(): k for k in known}
    close = ([by_case[name.lower()]] if isinstance(name, str) and name.lower() in by_case
             else [by_case[c] for c in difflib.get_close_matches(str(name).lower(), by_case, n=1)])
    if close:
        message += f". Did you mean {close[0]!r}?"
    return message


@dataclass(frozen=True)
class Neuron:
    """A nonspiking point neuron.

    Parameters
    ----------
    name : str
        Unique name, e.g. ``"AVA"``.
    C : float, pF
        Membrane capacitance, > 0.
    g_L : float, nS
        Leak conductance, >= 0 (0 gives a Neural-ODE unit).
    E_L : float, mV
        Leak reversal (resting) potential.
    V0 : float, mV, optional
        Initial potential; defaults to ``E_L``.
    clamp : float, mV, optional
        Holding potential: the neuron is voltage-clamped in every protocol (as the
        sensory neurons of the tap-withdrawal model are).  Voltage stimuli add to it.
    role : str, optional
        One of :data:`NEURON_ROLES`; only pictures use it (rows of the connectivity graph).
    """

    name: str
    C: float = 10.0
    g_L: float = 1.0
    E_L: float = -70.0
    V0: float | None = None
    clamp: float | None = None
    role: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise CircuitError(f"a neuron needs a non-empty name, got {short_repr(self.name)}", path="name")
        object.__setattr__(self, "C", _capacitance(self.C, "C"))
        object.__setattr__(self, "g_L", _non_negative(self.g_L, "g_L"))
        object.__setattr__(self, "E_L", _finite(self.E_L, "E_L"))
        if self.V0 is not None:
            object.__setattr__(self, "V0", _finite(self.V0, "V0"))
        if self.clamp is not None:
            object.__setattr__(self, "clamp", _finite(self.clamp, "clamp"))
        if self.role is not None and self.role not in NEURON_ROLES:
            raise CircuitError(f"unknown role {short_repr(self.role)}; allowed: "
                               f"{', '.join(NEURON_ROLES)}", path="role")

    @property
    def initial_V(self) -> float:
        """V0, or E_L where V0 is not given (mV)."""
        return self.E_L if self.V0 is None else self.V0

    @property
    def tau(self) -> float:
        """Membrane time constant C/g_L (ms); inf for g_L = 0."""
        return math.inf if self.g_L == 0 else self.C / self.g_L


@dataclass(frozen=True)
class Synapse:
    """A graded chemical synapse ``w·σ(ν(V_pre − μ))·(E − κ·V_post)``.

    Parameters
    ----------
    pre, post : str
        Presynaptic and postsynaptic neuron names.
    w : float, nS
        Maximal conductance, >= 0.  The sign of the synapse comes from ``E``.
    E : float, mV
        Reversal potential (0 excitatory, −90 inhibitory by convention).
    mu : float, mV
        Sigmoid midpoint.
    nu : float, 1/mV
        Sigmoid slope; negative values make the synapse fire on hyperpolarisation.
    kappa : float in [0, 1]
        Driving-force switch: 1 conductance-based, 0 current-based (``w·σ·E``).
    """

    pre: str
    post: str
    w: float = 1.0
    E: float = 0.0
    mu: float = -40.0
    nu: float = 0.1
    kappa: float = 1.0

    def __post_init__(self):
        for end in ("pre", "post"):
            value = getattr(self, end)
            if not isinstance(value, str) or not value:
                raise CircuitError(f"must be a neuron name, got {short_repr(value)}", path=end)
        object.__setattr__(self, "w", _non_negative(self.w, "w"))
        object.__setattr__(self, "E", _finite(self.E, "E"))
        object.__setattr__(self, "mu", _finite(self.mu, "mu"))
        object.__setattr__(self, "nu", _finite(self.nu, "nu"))
        kappa = _finite(self.kappa, "kappa")
        if not 0.0 <= kappa <= 1.0:
            raise CircuitError(f"must be in [0, 1], got {self.kappa!r}", path="kappa")
        object.__setattr__(self, "kappa", kappa)

    @property
    def key(self) -> str:
        """``"PRE->POST"``, the synapse's name in parameter names."""
        return f"{self.pre}->{self.post}"


@dataclass(frozen=True)
class GapJunction:
    """An ohmic, symmetric electrical synapse ``g·(V_b − V_a)`` into ``a`` and back."""

    a: str
    b: str
    g: float = 0.1

    def __post_init__(self):
        for end in ("a", "b"):
            value = getattr(self, end)
            if not isinstance(value, str) or not value:
                raise CircuitError(f"must be a neuron name, got {short_repr(value)}", path=end)
        if self.a == self.b:
            raise CircuitError(f"a gap junction joins two different neurons, got {short_repr(self.a)} twice",
                               path="b")
        object.__setattr__(self, "g", _non_negative(self.g, "g"))

    @property
    def key(self) -> str:
        """``"A-B"``, the junction's name in parameter names."""
        return f"{self.a}-{self.b}"


def _prefixed(error: CircuitError, prefix: str) -> CircuitError:
    path = f"{prefix}.{error.path}" if error.path else prefix
    return CircuitError(error.message, path=path)


@dataclass(frozen=True)
class Circuit:
    """A named circuit: neurons, chemical synapses, gap junctions, stimuli and protocols.

    Construction checks every cross-reference (a synapse's neurons, a protocol's stimuli
    and ablations), duplicate names and duplicate connections, and raises
    :class:`~neurosim.errors.CircuitError` with the key path of the offending value.

    Examples
    --------
    >>> c = Circuit("pair", neurons=(Neuron("A"), Neuron("B")),
    ...             synapses=(Synapse("A", "B", w=0.5, E=0.0),))
    >>> c.neuron_names
    ('A', 'B')
    """

    name: str
    neurons: tuple[Neuron, ...]
    synapses: tuple[Synapse, ...] = ()
    gap_junctions: tuple[GapJunction, ...] = ()
    stimuli: dict[str, Stimulus] = field(default_factory=dict)
    protocols: dict[str, Protocol] = field(default_factory=dict)
    readouts: dict[str, Readout] = field(default_factory=dict)
    schedule: Schedule | None = None
    initial: str | None = None

    __hash__ = None  # holds dicts; equality is by value

    def __post_init__(self):
        check_initial(self.initial)
        for attr in ("neurons", "synapses", "gap_junctions"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        object.__setattr__(self, "stimuli", dict(self.stimuli))
        object.__setattr__(self, "protocols", dict(self.protocols))
        object.__setattr__(self, "readouts", dict(self.readouts))
        if not self.neurons:
            raise CircuitError("a circuit needs at least one neuron", path="neurons")
        names: dict[str, int] = {}
        for i, neuron in enumerate(self.neurons):
            if not isinstance(neuron, Neuron):
                raise CircuitError(f"expected a Neuron, got {type(neuron).__name__}",
                                   path=f"neurons[{i}]")
            if neuron.name in names:
                raise CircuitError(
                    f"duplicate neuron name {short_repr(neuron.name)} "
                    f"(first at neurons[{names[neuron.name]}])",
                    path=f"neurons[{i}].name")
            names[neuron.name] = i
        known = list(names)
        seen: dict[str, int] = {}
        for k, syn in enumerate(self.synapses):
            for end in ("pre", "post"):
                if getattr(syn, end) not in names:
                    raise CircuitError(unknown_name_message("neuron", getattr(syn, end), known),
                                       path=f"synapses[{k}].{end}")
            if syn.key in seen:
                raise CircuitError(
                    f"duplicate synapse {syn.key} (first at synapses[{seen[syn.key]}]); "
                    "merge them into one synapse", path=f"synapses[{k}]")
            seen[syn.key] = k
        pairs: dict[frozenset, int] = {}
        for k, gap in enumerate(self.gap_junctions):
            for end in ("a", "b"):
                if getattr(gap, end) not in names:
                    raise CircuitError(unknown_name_message("neuron", getattr(gap, end), known),
                                       path=f"gap_junctions[{k}].{end}")
            pair = frozenset((gap.a, gap.b))
            if pair in pairs:
                raise CircuitError(
                    f"duplicate gap junction {gap.key} (first at gap_junctions[{pairs[pair]}])",
                    path=f"gap_junctions[{k}]")
            pairs[pair] = k
        for stim_name, stim in self.stimuli.items():
            for target in stim.targets:
                if target not in names:
                    raise CircuitError(unknown_name_message("neuron", target, known),
                                       path=f"stimuli.{stim_name}.target")
            _duplicate(stim.targets, f"stimuli.{stim_name}.target", "target neuron")
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise CircuitError(f"expected a Schedule, got {type(self.schedule).__name__}",
                               path="schedule")
        for readout_name, readout in self.readouts.items():
            if not isinstance(readout, Readout):
                raise CircuitError(f"expected a Readout, got {type(readout).__name__}",
                                   path=f"readouts.{readout_name}")
            for end in ("reverse", "forward"):
                if getattr(readout, end) not in names:
                    raise CircuitError(unknown_name_message("neuron", getattr(readout, end), known),
                                       path=f"readouts.{readout_name}.{end}")
        for proto_name, proto in self.protocols.items():
            try:
                _duplicate(proto.stimuli, "stimuli", "stimulus")
                self.resolve_stimuli(proto)
                # only protocols as written: Circuit.without takes a set of neurons
                _duplicate(proto.ablate, "ablate", "neuron")
                self._check_ablation(proto.ablate)
                for name in proto.scale:
                    if name not in names:
                        raise CircuitError(unknown_name_message("neuron", name, known),
                                           path=f"scale.{name}")
            except CircuitError as err:
                raise _prefixed(err, f"protocols.{proto_name}") from None

    # --- lookup ---------------------------------------------------------------------
    @property
    def neuron_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.neurons)

    @property
    def n_neurons(self) -> int:
        return len(self.neurons)

    def neuron(self, name: str) -> Neuron:
        """The neuron called ``name``."""
        for neuron in self.neurons:
            if neuron.name == name:
                return neuron
        raise CircuitError(unknown_name_message("neuron", name, list(self.neuron_names)))

    def protocol(self, name: str) -> Protocol:
        """The protocol called ``name``."""
        if name not in self.protocols:
            raise CircuitError(unknown_name_message("protocol", name, list(self.protocols)))
        return self.protocols[name]

    def resolve_stimuli(self, protocol: Protocol) -> tuple[Stimulus, ...]:
        """The protocol's stimuli as objects (names are looked up in ``self.stimuli``)."""
        resolved = []
        for k, stim in enumerate(protocol.stimuli):
            if isinstance(stim, str):
                if stim not in self.stimuli:
                    raise CircuitError(unknown_name_message("stimulus", stim, list(self.stimuli)),
                                       path=f"stimuli[{k}]")
                stim = self.stimuli[stim]
            else:  # stimuli of the circuit were checked when it was built
                _duplicate(stim.targets, f"stimuli[{k}].target", "target neuron")
            for target in stim.targets:
                if target not in self.neuron_names:
                    raise CircuitError(unknown_name_message("neuron", target,
                                                            list(self.neuron_names)),
                                       path=f"stimuli[{k}].target")
            resolved.append(stim)
        return tuple(resolved)

    def _check_ablation(self, ablate: tuple[str, ...]) -> None:
        for k, name in enumerate(ablate):
            if name not in self.neuron_names:
                raise CircuitError(unknown_name_message("neuron", name, list(self.neuron_names)),
                                   path=f"ablate[{k}]")
        if len(set(ablate)) == self.n_neurons:
            raise CircuitError("ablation would remove every neuron", path="ablate")

    # --- derived circuits -----------------------------------------------------------
    def without(self, ablate) -> "Circuit":
        """A copy with the neurons in ``ablate`` removed with all their connections.

        Stimuli aimed only at removed neurons are dropped; protocols keep their names
        and lose the stimuli and ablations that no longer apply.
        """
        gone = set(ablate)
        self._check_ablation(tuple(ablate))
        keep = lambda *names: not gone.intersection(names)  # noqa: E731
        stimuli = {}
        for name, stim in self.stimuli.items():
            targets = tuple(t for t in stim.targets if t not in gone)
            if targets:
                stimuli[name] = replace(stim, target=targets)
        protocols = {
            name: replace(p, stimuli=tuple(s for s in p.stimuli
                                           if not isinstance(s, str) or s in stimuli),
                          ablate=tuple(a for a in p.ablate if a not in gone),
                          scale={k: v for k, v in p.scale.items() if k not in gone})
            for name, p in self.protocols.items()}
        return Circuit(
            name=self.name,
            neurons=tuple(n for n in self.neurons if n.name not in gone),
            synapses=tuple(s for s in self.synapses if keep(s.pre, s.post)),
            gap_junctions=tuple(g for g in self.gap_junctions if keep(g.a, g.b)),
            stimuli=stimuli, protocols=protocols,
            readouts={k: r for k, r in self.readouts.items() if not gone & set(r.neurons)},
            schedule=self.schedule, initial=self.initial)

    def initial_state(self, protocol: Protocol | None = None) -> str:
        """How runs of ``protocol`` start: its ``initial``, else the circuit's, else
        ``as_given`` if any neuron gives V0 explicitly and ``rest`` otherwise."""
        if protocol is not None and protocol.initial is not None:
            return protocol.initial
        if self.initial is not None:
            return self.initial
        return "as_given" if any(n.V0 is not None for n in self.neurons) else "rest"

    def readout(self, name: str = "behaviour") -> Readout:
        """The read-out called ``name``."""
        if name not in self.readouts:
            raise CircuitError(unknown_name_message("readout", name, list(self.readouts)))
        return self.readouts[name]

    def __getstate__(self):
        # memos (e.g. the compiled arrays neurosim.compile keeps) are not part of the circuit
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def replace(self, **changes) -> "Circuit":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
