"""Circuits from the *C. elegans* connectome.

The package ships two neuron-to-neuron tables (``neurosim/data``, written by
``scripts/make_connectome.py``; their headers name the sources and caveats):

* ``cook2019``: Cook et al. 2019, hermaphrodite, 302 neurons; counts are serial EM
  sections (they grow with synapse size);
* ``varshney2011``: Varshney et al. 2011, 279 neurons (no pharynx); counts are contacts;

and a table of the 302 neurons (class, role, neurotransmitter).  :func:`build_circuit`
turns a choice of neurons into a :class:`~neurosim.model.Circuit`:

* **weights** grow with the counts: ``w = count × chemical_weight`` (nS per count unit)
  for a chemical synapse, ``g = count × gap_weight`` for a gap junction;
* **signs** from the presynaptic neuron's transmitter (:data:`REVERSAL_BY_TRANSMITTER`):
  acetylcholine 0 mV, GABA −90 mV, glutamate by the stated default ``glutamate`` (it can
  act through excitatory or inhibitory, glutamate-gated chloride, receptors), monoamines
  and unknown transmitters by ``unknown`` (or dropped); ``reversal`` overrides any of
  them per neuron or class;
* **classes** (``merge_classes``): one node per class (AVAL, AVAR → AVA; VA1…VA12 → VA),
  counts summed over members, as the class-lumped circuits are drawn;
* **autapses** (a neuron onto itself, or a class onto itself after merging) are left out
  unless ``autapses``; gap junctions of a neuron with itself carry no current and are
  always left out.

A named set (:data:`NAMED_SETS`) adds what a circuit needs to be run and scored: roles,
sensory clamps, motor read-out neurons, stimuli, protocols and a behavioural read-out.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from neurosim._version import __version__
from neurosim.errors import CircuitError
from neurosim.io.yaml import dump_circuit, read_text
from neurosim.model import (Circuit, GapJunction, Neuron, Protocol, Readout, Stimulus,
                            Synapse, unknown_name_message)

DATA = Path(__file__).resolve().parent / "data"

#: shipped tables: name → (file, default nS per count unit for chemical and gap entries).
#: Cook's counts are EM sections, about 2.7× Varshney's contacts for the same connections
#: (the tap-withdrawal pairs of both tables), so its default weight per count is smaller
#: by that factor: 0.05 nS per Varshney contact gives the strongest tap-withdrawal class
#: connection (AVD → AVA, 63 contacts) about the top of the weight range of the
#: class-lumped circuit, 3 nS.
SOURCES = {
    "cook2019": ("connectome_cook2019_herm.csv", 0.018),
    "varshney2011": ("connectome_varshney2011.csv", 0.05),
}
NEURON_TABLE = "neurons_herm.csv"
COLUMNS = ["pre", "post", "count", "kind", "neurotransmitter"]
#: a count as the tables write it (plain digits; not 1_000, ٣ or inf, which float() takes)
COUNT = re.compile(r"[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
KINDS = ("chemical", "gap")

EXCITATORY = 0.0
INHIBITORY = -90.0
#: reversal potential (mV) of a chemical synapse by its presynaptic neuron's transmitter;
#: glutamate and everything else are the arguments ``glutamate`` and ``unknown``
REVERSAL_BY_TRANSMITTER = {"acetylcholine": EXCITATORY, "gaba": INHIBITORY}
#: the default reversal of glutamatergic synapses: excitatory (AMPA/kainate-like GLR
#: receptors, e.g. GLR-1 on the command interneurons); glutamate-gated chloride
#: channels (GLC, AVR) make some of them inhibitory: override those with ``reversal``
GLUTAMATE = EXCITATORY
MONOAMINES = ("dopamine", "serotonin", "octopamine", "tyramine")
#: the roles of the neuron table that pictures know (others are drawn without a role)
ROLES = {"sensory": "sensory", "inter": "inter", "motor": "motor"}


@dataclass(frozen=True)
class NeuronInfo:
    """A row of the neuron table: class, role and transmitter of one neuron."""

    name: str
    cls: str
    role: str
    transmitter: str


@dataclass(frozen=True)
class Connection:
    """One row of a connectome table; a gap junction is written once, ``pre <= post``."""

    pre: str
    post: str
    count: float
    kind: str
    transmitter: str


@dataclass(frozen=True)
class Connectome:
    """A connectome table: its rows, the comment lines of its header (the source and
    caveats), and the neuron table."""

    name: str
    header: tuple[str, ...]
    connections: tuple[Connection, ...]
    neurons: dict[str, NeuronInfo]
    chemical_weight: float = 0.05
    gap_weight: float = 0.05

    @property
    def neuron_names(self) -> list[str]:
        """Neurons with at least one connection, in the neuron table's order (then the
        others in order of appearance)."""
        return list(self._connected)

    @functools.cached_property
    def _connected(self) -> tuple[str, ...]:
        present = dict.fromkeys(name for c in self.connections for name in (c.pre, c.post))
        return tuple([n for n in self.neurons if n in present]
                     + [n for n in present if n not in self.neurons])

    def class_of(self, neuron: str) -> str:
        info = self.neurons.get(neuron)
        return info.cls if info else neuron

    def members(self, cls: str) -> list[str]:
        """Neurons of class ``cls`` that the table connects."""
        return [n for n in self.neuron_names if self.class_of(n) == cls]


def _read_rows(path: Path, what: str, columns: list[str]):
    """(header comment lines, [(line number, row dict)]) of a CSV with ``#`` comments."""
    text = read_text(path, what, "CSV text").removeprefix("\ufeff")  # Excel's "CSV UTF-8"
    header, rows, names = [], [], None
    # lines end at \n only: a CSV field may hold U+2028 and the like, splitlines()'s breaks
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        if line.startswith("#"):
            if names is None:
                header.append(line[1:].strip())
            continue
        fields = next(csv.reader([line]))
        if names is None:
            names = [f.strip() for f in fields]
            repeated = sorted({c for c in names if names.count(c) > 1})
            if repeated:
                raise CircuitError(f"the header names {', '.join(repeated)} more than once",
                                   file=str(path), line=number)
            missing = [c for c in columns if c not in names]
            if missing:
                raise CircuitError(f"the header must name the columns {', '.join(columns)}; "
                                   f"missing {', '.join(missing)}", file=str(path), line=number)
            continue
        if len(fields) != len(names):
            raise CircuitError(f"{len(fields)} fields, the header has {len(names)}",
                               file=str(path), line=number)
        rows.append((number, dict(zip(names, (f.strip() for f in fields)))))
    if names is None:
        raise CircuitError(f"no header line ({','.join(columns)})", file=str(path))
    return header, rows


def load_neuron_table(path=None) -> dict[str, NeuronInfo]:
    """The neuron table (``neurons_herm.csv`` by default): name → :class:`NeuronInfo`."""
    path = Path(path) if path is not None else DATA / NEURON_TABLE
    _, rows = _read_rows(path, "neuron table", ["name", "class", "role", "neurotransmitter"])
    return {row["name"]: NeuronInfo(row["name"], row["class"] or row["name"], row["role"],
                                    row["neurotransmitter"]) for _, row in rows}


def load_connectome(source="cook2019") -> Connectome:
    """A shipped table by name (``cook2019``, ``varshney2011``) or a CSV file of the same
    form: ``#`` comment lines (the source), then ``pre,post,count,kind,neurotransmitter``
    with ``kind`` chemical or gap and ``count`` a positive number; neurotransmitter may
    be empty.  Names absent from the neuron table are their own class."""
    if str(source) in SOURCES:
        filename, weight = SOURCES[str(source)]
        path, name = DATA / filename, str(source)
    else:
        path, weight = Path(source), 0.05
        name = path.stem
        if not path.suffix.lower() == ".csv":
            raise CircuitError(f"unknown connectome {str(source)!r}: give one of "
                               f"{', '.join(SOURCES)} or a .csv file")
    header, rows = _read_rows(path, "connectome table", COLUMNS)
    connections, seen = [], {}
    for number, row in rows:
        where = dict(file=str(path), line=number)
        kind = row["kind"]
        if kind not in KINDS:
            raise CircuitError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", **where)
        if not COUNT.fullmatch(row["count"]):
            raise CircuitError(f"count must be a number such as 3 or 2.5, got "
                               f"{row['count']!r}", **where)
        count = float(row["count"])
        if not (math.isfinite(count) and count > 0):
            raise CircuitError(f"count must be a positive number, got {row['count']!r}",
                               **where)
        pre, post = row["pre"], row["post"]
        if not pre or not post:
            raise CircuitError("pre and post must name neurons", **where)
        key = (kind,) + ((pre, post) if kind == "chemical" else tuple(sorted((pre, post))))
        if key in seen:
            link = f"{pre}->{post}" if kind == "chemical" else f"{pre}-{post}"
            raise CircuitError(f"{kind} {link} appears twice (first at line "
                               f"{seen[key]}); give each connection once", **where)
        seen[key] = number
        transmitter = row["neurotransmitter"].lower() if kind == "chemical" else ""
        connections.append(Connection(pre, post, count, kind, transmitter))
    if not connections:
        raise CircuitError("the table has no connections", file=str(path))
    return Connectome(name, tuple(header), tuple(connections), load_neuron_table(),
                      weight, weight)


@dataclass(frozen=True)
class NamedSet:
    """Neurons (classes) that make a circuit with a purpose, and how to run and score it.

    ``stimuli`` and ``protocols`` name classes; a class stands for all its members in
    a left/right-resolved circuit.  ``protocols`` entries are (stimuli, ablated classes or
    neurons, description); ``merged_only``/``resolved_only`` hold the protocols that make
    sense only with classes merged or resolved.  ``signs`` maps classes to reversal
    potentials that replace the transmitter's (a model's fitted polarity)."""

    description: str
    classes: tuple[str, ...] | None  # None: every neuron
    roles: dict[str, str] | None     # None: the neuron table's
    clamped: dict[str, float]
    signs: dict[str, float] = field(default_factory=dict)
    signs_source: str = ""
    # motor read-out neuron → (presynaptic class, total weight in nS)
    motor: dict[str, tuple[str, float]] = field(default_factory=dict)
    stimuli: dict[str, dict] = field(default_factory=dict)
    protocols: dict[str, tuple] = field(default_factory=dict)
    merged_only: dict[str, dict] = field(default_factory=dict)
    resolved_only: tuple[str, ...] = ()
    readout: dict | None = None
    duration: float = 1500.0  # ms, of every protocol


def _touch(targets) -> dict:
    """A full stimulus of the tap-withdrawal circuits: the clamp command rises by 50 mV
    for 200 ms from t = 200 ms."""
    return dict(kind="pulse", quantity="voltage", target=tuple(targets), amplitude=50.0,
                start=200.0, duration=200.0)


TAP_WITHDRAWAL = NamedSet(
    description="the tap-withdrawal circuit (Wicks, Roehrig & Rankin 1996; Lechner et al. "
                "2018): touch receptors, the interneurons AVD, PVC, DVA, the command "
                "interneurons AVA (backward) and AVB (forward), and motor read-outs",
    classes=("PVD", "PLM", "AVM", "ALM", "AVD", "PVC", "DVA", "AVA", "AVB"),
    roles={"PVD": "sensory", "PLM": "sensory", "AVM": "sensory", "ALM": "sensory",
           "AVD": "inter", "PVC": "inter", "DVA": "inter", "AVA": "command",
           "AVB": "command"},
    clamped={"PVD": -70.0, "PLM": -70.0, "AVM": -70.0, "ALM": -70.0},
    signs={"AVD": EXCITATORY, "PVC": EXCITATORY, "PVD": INHIBITORY, "PLM": INHIBITORY,
           "AVM": INHIBITORY, "ALM": INHIBITORY, "DVA": INHIBITORY, "AVA": INHIBITORY,
           "AVB": INHIBITORY},
    signs_source="the polarity of each class in the class-lumped circuit "
                 "(Wicks, Roehrig & Rankin 1996; Lechner et al. 2018): AVD and PVC "
                 "excitatory, every other class inhibitory",
    motor={"FWD": ("AVB", 2.0), "REV": ("AVA", 2.0)},
    stimuli={"tap_touch": _touch(["ALM", "AVM", "PLM", "PVD"]),
             "anterior_touch": _touch(["ALM", "AVM"]),
             "posterior_gentle_touch": _touch(["PLM"]),
             "posterior_harsh_touch": _touch(["PLM", "PVD"])},
    protocols={
        "rest": ((), (), "no stimulus"),
        "tap": (("tap_touch",), (), "plate tap, intact animal"),
        "anterior": (("anterior_touch",), (), "anterior gentle touch (ALM, AVM)"),
        "posterior_gentle": (("posterior_gentle_touch",), (), "posterior gentle touch (PLM)"),
        "posterior_harsh": (("posterior_harsh_touch",), (),
                            "posterior harsh touch (PLM and PVD)"),
        "anterior_no_AVD": (("anterior_touch",), ("AVD",),
                            "anterior gentle touch after ablating AVD"),
        "posterior_gentle_no_PVC": (("posterior_gentle_touch",), ("PVC",),
                                    "posterior gentle touch after ablating PVC"),
        "tap_no_PLM": (("tap_touch",), ("PLM",), "tap after ablating both PLM"),
        "tap_no_PLML": (("tap_touch",), ("PLML",), "tap after ablating PLML alone"),
        "tap_no_PLMR": (("tap_touch",), ("PLMR",), "tap after ablating PLMR alone"),
        "tap_no_anterior": (("tap_touch",), ("ALM", "AVM"),
                            "tap after ablating the anterior touch cells"),
        "tap_no_AVD": (("tap_touch",), ("AVD",), "tap after ablating AVD"),
        "tap_no_PVC": (("tap_touch",), ("PVC",), "tap after ablating PVC"),
        "tap_no_AVA": (("tap_touch",), ("AVA",), "tap after ablating AVA"),
        "tap_no_AVB": (("tap_touch",), ("AVB",), "tap after ablating AVB"),
        "tap_no_DVA": (("tap_touch",), ("DVA",), "tap after ablating DVA")},
    merged_only={"tap_half_PLM": dict(stimuli=("tap_touch",), scale={"PLM": 0.5},
                                      description="tap after ablating one PLM (half of the "
                                                  "PLM class connections)")},
    resolved_only=("tap_no_PLML", "tap_no_PLMR"),
    readout=dict(reverse="REV", forward="FWD", window=(200.0, 900.0), baseline=(0.0, 200.0),
                 rest=-70.0, span=50.0, threshold=0.05, probability_scale=0.1))

def _current_pulse(targets) -> dict:
    """30 pA for 200 ms from t = 200 ms: 30 mV above rest in a lone neuron (g_L = 1 nS)."""
    return dict(kind="pulse", quantity="current", target=tuple(targets), amplitude=30.0,
                start=200.0, duration=200.0)


WHOLE_WORM = NamedSet(
    description="every neuron the table connects, signs from transmitters, and touch "
                "protocols (current into the touch receptor neurons)",
    classes=None, roles=None, clamped={},
    stimuli={"anterior_touch": _current_pulse(["ALM", "AVM"]),
             "posterior_touch": _current_pulse(["PLM"])},
    protocols={"rest": ((), (), "no stimulus"),
               "anterior_touch": (("anterior_touch",), (),
                                  "30 pA into ALML, ALMR and AVM for 200 ms"),
               "posterior_touch": (("posterior_touch",), (),
                                   "30 pA into PLML and PLMR for 200 ms")},
    duration=1000.0)

#: named sets of neurons for :func:`build_circuit` (besides ``all``)
NAMED_SETS = {"tap_withdrawal": TAP_WITHDRAWAL, "whole_worm": WHOLE_WORM}


@dataclass
class BuildReport:
    """What :func:`build_circuit` decided, for the provenance header and the user."""

    source: str
    header: tuple[str, ...]
    options: dict
    neurons: int = 0
    synapses: int = 0
    gap_junctions: int = 0
    autapses_dropped: int = 0
    self_gaps_dropped: int = 0
    # transmitter (or "" for none) → presynaptic nodes whose synapses got the unknown rule
    unknown: dict = field(default_factory=dict)
    unknown_dropped: int = 0
    notes: list = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as sentences, one per line."""
        out = [f"{_amount(self.neurons, 'neuron')}, "
               f"{_amount(self.synapses, 'chemical synapse')}, "
               f"{_amount(self.gap_junctions, 'gap junction')} from {self.source}"]
        if self.autapses_dropped:
            out.append(f"{_amount(self.autapses_dropped, 'chemical autapse')} left out "
                       "(autapses=True keeps them)")
        if self.self_gaps_dropped:
            out.append(f"{_amount(self.self_gaps_dropped, 'gap junction')} of a node with itself "
                       "left out (they carry no current)")
        for transmitter, nodes in sorted(self.unknown.items()):
            what = transmitter or "no known transmitter"
            rule = self.options["unknown"]
            fate = "left out" if rule == "drop" else f"E = {rule:g} mV"
            out.append(f"{what}: synapses of {_amount(len(nodes), 'presynaptic neuron')} {fate} "
                       f"({', '.join(sorted(nodes)[:8])}{', ...' if len(nodes) > 8 else ''})")
        out.extend(self.notes)
        return out


def _amount(count: int, thing: str) -> str:
    """'1 neuron', '2 neurons'."""
    return f"{count} {thing}{'' if count == 1 else 's'}"


def _node_names(connectome: Connectome, neurons) -> list[str]:
    """The neurons chosen by ``neurons``: 'all', a named set, or names of neurons and
    classes (a class stands for its members)."""
    known = connectome.neuron_names
    if isinstance(neurons, str):
        if neurons == "all":
            return known
        if neurons in NAMED_SETS:
            neurons = NAMED_SETS[neurons].classes
            if neurons is None:
                return known
        else:
            neurons = [neurons]
    if not isinstance(neurons, (list, tuple)) or not all(isinstance(n, str) for n in neurons):
        raise CircuitError(f"neurons must be 'all', a named set ({', '.join(NAMED_SETS)}) or "
                           f"a list of neuron and class names, got {neurons!r}")
    chosen = []
    classes = {connectome.class_of(n) for n in known}
    for name in neurons:
        if name in known:
            chosen.append(name)
        elif name in classes:
            chosen.extend(connectome.members(name))
        elif name in connectome.neurons or name in {i.cls for i in connectome.neurons.values()}:
            raise CircuitError(f"{name!r} has no connection in {connectome.name}")
        elif name in NAMED_SETS or name == "all":
            raise CircuitError(f"{name!r} is a set of neurons: give it alone, not in a list "
                               "of names")
        else:
            raise CircuitError(unknown_name_message("neuron or class", name,
                                                    sorted(set(known) | classes)))
    return list(dict.fromkeys(chosen))


def _check_reversal(connectome: Connectome, reversal: dict) -> None:
    """Every name of ``reversal`` a neuron or class of the table, every value finite."""
    known = set(connectome.neuron_names) | {connectome.class_of(n) for n in connectome.neuron_names}
    for name, value in reversal.items():
        if name not in known:
            raise CircuitError(unknown_name_message("neuron or class", name, sorted(known))
                               + " (in reversal=)")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CircuitError(f"reversal={{{name!r}: ...}} must be a finite potential in mV, "
                               f"got {value!r}")


def _reversal_of(connectome, neuron, node, transmitter, glutamate, reversal):
    """(E in mV or None for the unknown rule, why) of a synapse from ``neuron``."""
    for key in (neuron, node, connectome.class_of(neuron)):
        if key in reversal:
            return reversal[key], "given"
    if transmitter in REVERSAL_BY_TRANSMITTER:
        return REVERSAL_BY_TRANSMITTER[transmitter], transmitter
    if transmitter == "glutamate":
        return glutamate, "glutamate"
    return None, transmitter


def _weight(count: float, per_count: float, what: str) -> float:
    """count × per_count to 12 significant digits (0.018 × 29 is 0.522, not
    0.5219999999999999, in the YAML written)."""
    weight = float(f"{count * per_count:.12g}")
    if not math.isfinite(weight):
        raise CircuitError(f"{what}: {count:g} counts × {per_count:g} nS overflow; give a "
                           "smaller weight per count")
    return weight


def build_circuit(connectome, neurons="all", *, merge_classes: bool = False,
                  chemical_weight: float | None = None, gap_weight: float | None = None,
                  glutamate: float = GLUTAMATE, unknown="drop", reversal=None,
                  autapses: bool = False, name: str | None = None,
                  neuron_defaults: dict | None = None,
                  synapse_defaults: dict | None = None) -> tuple[Circuit, BuildReport]:
    """A circuit of the chosen neurons of ``connectome`` and what was decided building it.

    Parameters
    ----------
    connectome : Connectome or str
        A table from :func:`load_connectome`, or its name or path.
    neurons : str or sequence of str
        ``"all"``, a named set (:data:`NAMED_SETS`: adds roles, clamps, motor read-outs,
        stimuli, protocols and the read-out), or names of neurons and classes.
    merge_classes : bool
        One node per class, counts summed over its members.
    chemical_weight, gap_weight : float, optional
        nS per count unit; default: the table's (:data:`SOURCES`).
    glutamate : float
        Reversal potential (mV) of glutamatergic synapses.
    unknown : float or "drop"
        Reversal potential (mV) of synapses whose presynaptic neuron has a monoamine or no
        known transmitter, or ``"drop"`` (default) to leave them out; reported either way.
    reversal : dict, optional
        Neuron or class → reversal potential (mV), before all other rules.  A named set's
        signs (the polarity of its model) come after these and before the transmitters.
    autapses : bool
        Keep chemical synapses of a node onto itself.
    neuron_defaults, synapse_defaults : dict, optional
        Fields of every neuron (default C 50 pF, g_L 1 nS, E_L −70 mV: τ = 50 ms) and
        every synapse (default μ −40 mV, ν 0.1 /mV, κ 1), as in the tap-withdrawal circuit.
    """
    if not isinstance(connectome, Connectome):
        connectome = load_connectome(connectome)
    chemical_weight = connectome.chemical_weight if chemical_weight is None else chemical_weight
    gap_weight = connectome.gap_weight if gap_weight is None else gap_weight
    for label, value in (("chemical_weight", chemical_weight), ("gap_weight", gap_weight),
                         ("glutamate", glutamate)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or (
                label != "glutamate" and value <= 0):
            raise CircuitError(f"{label} must be a {'' if label == 'glutamate' else 'positive '}"
                               f"number, got {value!r}")
    if unknown != "drop" and not (isinstance(unknown, (int, float)) and math.isfinite(unknown)):
        raise CircuitError(f"unknown must be a reversal potential in mV or 'drop', got "
                           f"{unknown!r}")
    named = NAMED_SETS.get(neurons) if isinstance(neurons, str) else None
    chosen = _node_names(connectome, neurons)
    _check_reversal(connectome, reversal or {})
    node = {n: (connectome.class_of(n) if merge_classes else n) for n in chosen}
    given = dict(reversal or {})
    signs = dict(named.signs) if named else {}
    signs.update(given)
    report = BuildReport(connectome.name, connectome.header, dict(
        neurons=neurons if isinstance(neurons, str) else list(neurons),
        merge_classes=merge_classes, chemical_weight=chemical_weight, gap_weight=gap_weight,
        glutamate=glutamate, unknown=unknown, reversal=given, autapses=autapses))
    if named and named.signs:
        report.notes.append(f"signs of {', '.join(named.signs)}: {named.signs_source}")

    chemical, gap = defaultdict(float), defaultdict(float)
    reversal_of_node, unknown_nodes = {}, defaultdict(set)
    for c in connectome.connections:
        if c.pre not in node or c.post not in node:
            continue
        a, b = node[c.pre], node[c.post]
        if c.kind == "gap":
            if a == b:
                report.self_gaps_dropped += 1
            else:
                gap[tuple(sorted((a, b)))] += c.count
            continue
        if a == b and not autapses:
            report.autapses_dropped += 1
            continue
        E, why = _reversal_of(connectome, c.pre, a, c.transmitter, glutamate, signs)
        if E is None:
            unknown_nodes[why].add(a)
            if unknown == "drop":
                report.unknown_dropped += 1
                continue
            E = float(unknown)
        if reversal_of_node.setdefault(a, E) != E:
            raise CircuitError(f"the members of {a} have different transmitters (reversal "
                               f"potentials {reversal_of_node[a]:g} and {E:g} mV); give its "
                               f"reversal potential (reversal={{{a!r}: ...}})")
        chemical[(a, b)] += c.count
    report.unknown = {k: sorted(v) for k, v in unknown_nodes.items()}

    nodes = list(dict.fromkeys(node[n] for n in chosen))
    defaults = dict(C=50.0, g_L=1.0, E_L=-70.0) | dict(neuron_defaults or {})
    syn_defaults = dict(mu=-40.0, nu=0.1, kappa=1.0) | dict(synapse_defaults or {})
    table = connectome.neurons

    def role(n):
        cls = n if merge_classes else connectome.class_of(n)
        if named and named.roles is not None:
            return named.roles.get(cls)
        info = table.get(n) or next((i for i in table.values() if i.cls == n), None)
        return ROLES.get(info.role) if info else None

    def clamp(n):
        cls = n if merge_classes else connectome.class_of(n)
        return named.clamped.get(cls) if named else None

    circuit_neurons = [Neuron(n, clamp=clamp(n), role=role(n), **defaults) for n in nodes]
    synapses = [Synapse(a, b, w=_weight(count, chemical_weight, f"synapse {a}->{b}"),
                        E=reversal_of_node[a], **syn_defaults) for (a, b), count in chemical.items()]
    gaps = [GapJunction(a, b, g=_weight(count, gap_weight, f"gap junction {a}-{b}"))
            for (a, b), count in gap.items()]
    stimuli, protocols, readouts = {}, {}, {}
    if named:
        members = defaultdict(list)
        for n in nodes:
            members[n if merge_classes else connectome.class_of(n)].append(n)
        for motor, (cls, total) in named.motor.items():
            circuit_neurons.append(Neuron(motor, role="motor", **defaults))
            synapses += [Synapse(pre, motor, w=total / len(members[cls]), E=EXCITATORY,
                                 **syn_defaults) for pre in members[cls]]
        expand = (lambda names: tuple(m for n in names for m in members.get(n) or [n]))
        for key, spec in named.stimuli.items():
            stimuli[key] = Stimulus(**dict(spec, target=expand(spec["target"])))
        for key, (stims, ablate, description) in named.protocols.items():
            if merge_classes and key in named.resolved_only:
                continue
            protocols[key] = Protocol(named.duration, stimuli=stims, ablate=expand(ablate),
                                      description=description)
        if merge_classes:
            for key, spec in named.merged_only.items():
                protocols[key] = Protocol(named.duration, **spec)
        if named.readout:
            readouts["behaviour"] = Readout(**named.readout)
    label = name or (f"{neurons} from {connectome.name}" if isinstance(neurons, str)
                     else f"{len(nodes)} neurons from {connectome.name}")
    circuit = Circuit(label, tuple(circuit_neurons), tuple(synapses), tuple(gaps), stimuli,
                      protocols, readouts)
    report.neurons, report.synapses = len(circuit.neurons), len(synapses)
    report.gap_junctions = len(gaps)
    return circuit, report


def circuit_yaml(circuit: Circuit, report: BuildReport, command: str = "") -> str:
    """The circuit as YAML, under a header that says where it came from and how it was
    built (the source table's header, the options, the report)."""
    lines = [f"Built by neurosim {__version__} from the connectome table "
             f"'{report.source}'" + (f" with: {command}" if command else ".")]
    lines += [f"  {line}" for line in report.header]
    lines.append("Options: " + ", ".join(f"{k}={v!r}" for k, v in report.options.items()))
    lines += report.lines()
    # a line break in a name or an argument must not end the comment
    return "".join(f"# {_one_line(line)}\n" for line in lines) + dump_circuit(circuit)


#: what YAML reads as a line break, and how a header line shows it instead
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r", "\x85": "\\x85",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _one_line(text: str) -> str:
    return text.translate(_LINE_BREAKS)

