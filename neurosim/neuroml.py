"""NeuroML 2 / LEMS interchange, and a cross-check of neurosim against jNeuroML.

:func:`export` writes a circuit under one protocol as three files: a NeuroML 2 network
(written with libNeuroML: populations, projections, ``gapJunction``, ``silentSynapse``,
``pulseGenerator`` and ``rampGenerator`` inputs), a LEMS file with neurosim's component
types and their instances (the leaky nonspiking cell, the clamped cell, the graded
synapse, the clamp command) and a LEMS simulation of the protocol.  :func:`import_network`
reads such a network back into a Circuit; :func:`crosscheck` runs the export in jNeuroML
(through pyNeuroML) at two steps and compares it with neurosim.

The graded synapse is the one of the circuit equation (DESIGN.md §1), written in LEMS as

    i = weight · conductance · σ(ν (V_pre − μ)) · (E − κ V)

with ``weight · conductance = w``; a gap junction is NeuroML's own, weight · conductance = ĝ.
jLEMS integrates with forward Euler, so its difference from neurosim falls in proportion
to its step.  Needs the ``neuroml`` extra (pyNeuroML, libNeuroML) and, for the
cross-check, a Java runtime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from neurosim.compile import scaled_connections
from neurosim.errors import CircuitError, SimulationError, StorageError
# the reader lives with the other readers (io); this module writes and cross-checks, and
# hands on import_network and NeuroMLToolError as part of its API
from neurosim.io.neuroml import (CELL, GAP, NML_ID, SILENT, STIM, SYN,  # noqa: F401
                                 TAG, NeuroMLToolError, _missing, import_network)
from neurosim.io.yaml import write_text_atomically
from neurosim.model import Circuit, Protocol, Stimulus
from neurosim.simulate import rest_state, simulate
from neurosim.units import short_repr

#: how much later (ms) the cross-check puts stimulus edges.  jLEMS decides on which
#: side of an edge a step lies by comparing its accumulated time with the edge; on an edge
#: that falls on its time grid that comparison goes either way with the rounding, and
#: differently at dt and dt/2, so the first-order trend would be lost in a one-step jitter.
#: Moved by this much (a change below 1e-7 mV in the traces), every edge is resolved
#: alike: the step that starts at an edge sees the new value, as in neurosim.  Current
#: generators switch on the time at a step's end, so their edges move later; clamp
#: commands are read at a step's start, so theirs move earlier.
EDGE_SHIFT = 1e-9

#: neurosim's component types, in LEMS; the units are NeuroML's (SI with prefixes)
COMPONENT_TYPES = """\
    <ComponentType name="neurosimCell" extends="baseCellMembPotCap"
                   description="neurosim's nonspiking leaky point neuron: C dv/dt = gL (EL - v) + iSyn, starting at V0">
        <Parameter name="gL" dimension="conductance"/>
        <Parameter name="EL" dimension="voltage"/>
        <Parameter name="V0" dimension="voltage"/>
        <Attachments name="synapses" type="basePointCurrent"/>
        <Dynamics>
            <StateVariable name="v" exposure="v" dimension="voltage"/>
            <DerivedVariable name="iSyn" dimension="current" exposure="iSyn" select="synapses[*]/i" reduce="add"/>
            <DerivedVariable name="iMemb" dimension="current" exposure="iMemb" value="gL * (EL - v) + iSyn"/>
            <TimeDerivative variable="v" value="iMemb / C"/>
            <OnStart>
                <StateAssignment variable="v" value="V0"/>
            </OnStart>
            <!-- never true: jLEMS attaches inputs through an event connection from the cell,
                 which needs an event the cell can send -->
            <OnCondition test="t .lt. 0"><EventOut port="spike"/></OnCondition>
        </Dynamics>
    </ComponentType>
    <ComponentType name="neurosimVoltagePulse"
                   description="A clamp command: amplitude on [delay, delay + duration), 0 otherwise; 'stimulus' and 'position' name the neurosim stimulus and this cell's place among its targets">
        <Parameter name="delay" dimension="time"/>
        <Parameter name="duration" dimension="time"/>
        <Parameter name="amplitude" dimension="voltage"/>
        <Parameter name="position" dimension="none"/>
        <Text name="stimulus"/>
        <Exposure name="vc" dimension="voltage"/>
        <Dynamics>
            <ConditionalDerivedVariable name="vc" dimension="voltage" exposure="vc">
                <Case condition="t .geq. delay .and. t .lt. delay + duration" value="amplitude"/>
                <Case value="0 * amplitude"/>
            </ConditionalDerivedVariable>
        </Dynamics>
    </ComponentType>
    <ComponentType name="neurosimClampCommand"
                   description="The command of a clamped cell: the sum of its voltage pulses">
        <Children name="pulses" type="neurosimVoltagePulse"/>
        <Exposure name="vc" dimension="voltage"/>
        <Dynamics>
            <DerivedVariable name="vc" dimension="voltage" exposure="vc" select="pulses[*]/vc" reduce="add"/>
        </Dynamics>
    </ComponentType>
    <ComponentType name="neurosimClampedCell" extends="baseCellMembPot"
                   description="A voltage-clamped neurosim neuron: v = holding + the sum of its clamp commands (children); C, gL, EL and V0 are kept for the round trip">
        <Parameter name="C" dimension="capacitance"/>
        <Parameter name="gL" dimension="conductance"/>
        <Parameter name="EL" dimension="voltage"/>
        <Parameter name="V0" dimension="voltage"/>
        <Parameter name="holding" dimension="voltage"/>
        <Attachments name="synapses" type="basePointCurrent"/>
        <!-- one child holding the pulses: jLEMS attaches synapses only to a cell with a
             single list of children and attachments -->
        <Child name="command" type="neurosimClampCommand"/>
        <Dynamics>
            <DerivedVariable name="vCommand" dimension="voltage" select="command/vc"/>
            <DerivedVariable name="v" dimension="voltage" exposure="v" value="holding + vCommand"/>
            <OnCondition test="t .lt. 0"><EventOut port="spike"/></OnCondition>
        </Dynamics>
    </ComponentType>
    <ComponentType name="neurosimGradedSynapse" extends="baseGradedSynapse"
                   description="neurosim's graded synapse: i = weight conductance sigma(nu (vpeer - mu)) (erev - kappa v)">
        <Property name="weight" dimension="none" defaultValue="1"/>
        <Parameter name="conductance" dimension="conductance"/>
        <Parameter name="erev" dimension="voltage"/>
        <Parameter name="mu" dimension="voltage"/>
        <Parameter name="nu" dimension="per_voltage"/>
        <Parameter name="kappa" dimension="none"/>
        <Exposure name="i" dimension="current"/>
        <Requirement name="v" dimension="voltage"/>
        <InstanceRequirement name="peer" type="baseGradedSynapse"/>
        <Dynamics>
            <DerivedVariable name="vpeer" dimension="voltage" select="peer/v"/>
            <DerivedVariable name="i" dimension="current" exposure="i"
                             value="weight * conductance / (1 + exp(nu * (mu - vpeer))) * (erev - kappa * v)"/>
        </Dynamics>
    </ComponentType>
"""

SUPPORTED_STIMULI = ("current pulse (pulseGenerator), current ramp (rampGenerator), voltage "
                     "pulse on a clamped neuron (neurosimVoltagePulse), each without offset")


# --- export ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Export:
    """What :func:`export` wrote.

    Attributes
    ----------
    circuit : Circuit
        The circuit the files describe: the protocol's circuit (its ablations removed,
        its scalings applied) with that protocol and its stimuli only.
    network, components : Path
        The NeuroML network and the LEMS file of component types and instances.
    simulation : Path or None
        The LEMS simulation of the protocol (None for a circuit without protocols).
    protocol : str or None
    left_out : tuple of str
        Parts of the circuit with no NeuroML counterpart, not exported.
    """

    circuit: Circuit
    network: Path
    components: Path
    simulation: Path | None
    protocol: str | None
    left_out: tuple[str, ...]

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.network, self.components, self.simulation) if p is not None]


def _number(value: float) -> str:
    return repr(float(value))


def _exact(cls):
    """``cls`` (a libNeuroML element with float attributes) writing them as ``repr`` does:
    libNeuroML writes a float with 15 decimals (1e-17 becomes 0.0, 0.0068150546240290
    94 loses its last digits), and a weight must come back as it went out."""
    if cls not in _EXACT:
        _EXACT[cls] = type(cls.__name__, (cls,), {
            "gds_format_float": lambda self, value, input_name="": repr(float(value))})
    return _EXACT[cls]


_EXACT: dict = {}


def _nml_id(name: str, what: str, path: str) -> str:
    if not NML_ID.match(name):
        raise CircuitError(f"{what} {short_repr(name)} cannot be a NeuroML id (letters, digits "
                           "and '_', not starting with a digit); rename it to export", path=path)
    return name


def _choose_protocol(circuit: Circuit, protocol) -> str | None:
    if protocol is not None:
        circuit.protocol(protocol)  # an unknown name fails here, with the known ones
        return protocol
    if len(circuit.protocols) > 1:
        raise CircuitError(f"choose a protocol to export (one of: {', '.join(circuit.protocols)})")
    return next(iter(circuit.protocols), None)


def exported_circuit(circuit: Circuit, protocol=None) -> tuple[Circuit, tuple[str, ...]]:
    """The circuit :func:`export` writes for ``protocol``, and what it leaves out.

    That is the protocol's circuit (ablated neurons removed with their connections, the
    scalings applied to the weights) with that protocol alone and its stimuli; readouts
    and the other protocols and stimuli have no NeuroML counterpart.  Raises CircuitError
    for what cannot be exported at all (a schedule, a stimulus kind NeuroML lacks, a name
    that is no NeuroML id).
    """
    name = _choose_protocol(circuit, protocol)
    if circuit.schedule is not None:
        raise CircuitError("time-varying parameters have no NeuroML counterpart; export a "
                           "circuit without a schedule", path="schedule")
    left_out = [f"readout {r}" for r in circuit.readouts]
    if name is None:
        run, protocols, stimuli = circuit, {}, {}
        left_out += [f"stimulus {s} (no protocol uses it)" for s in circuit.stimuli]
    else:
        proto = circuit.protocol(name)
        run = circuit.without(proto.ablate) if proto.ablate else circuit
        if proto.scale:
            run = scaled_connections(run, proto.scale)
        names = []
        for k, stim in enumerate(run.protocol(name).stimuli):
            if not isinstance(stim, str):
                raise CircuitError("only protocols that name their stimuli can be exported; add "
                                   "the stimuli to circuit.stimuli", path=f"protocols.{name}.stimuli[{k}]")
            names.append(stim)
        stimuli = {s: run.stimuli[s] for s in names}
        protocols = {name: Protocol(proto.duration, tuple(names), (), proto.description, {},
                                    proto.initial)}
        left_out += [f"protocol {p}" for p in circuit.protocols if p != name]
        left_out += [f"stimulus {s} (not in {name})" for s in circuit.stimuli if s not in stimuli]
        if proto.ablate:
            left_out.append(f"neurons {', '.join(proto.ablate)} (ablated in {name})")
        if proto.scale:
            left_out.append(f"the scale of {name} as such (its factors are applied to the "
                            "exported weights)")
    exported = Circuit(circuit.name, run.neurons, run.synapses, run.gap_junctions, stimuli,
                       protocols, initial=circuit.initial)
    for k, neuron in enumerate(exported.neurons):
        _nml_id(neuron.name, "neuron name", f"neurons[{k}].name")
    for stim_name, stim in stimuli.items():
        _nml_id(stim_name, "stimulus name", f"stimuli.{stim_name}")
        _check_stimulus(exported, stim_name, stim)
    return exported, tuple(left_out)


def _check_stimulus(circuit: Circuit, name: str, stim: Stimulus) -> None:
    path = f"stimuli.{name}"
    supported = ((stim.quantity == "current" and stim.kind in ("pulse", "ramp"))
                 or (stim.quantity == "voltage" and stim.kind == "pulse"))
    if not supported or stim.offset != 0.0:
        what = f"a {stim.quantity} {stim.kind} stimulus{' with an offset' if stim.offset else ''}"
        hint = (" (write a step as a pulse lasting to the end of the protocol)"
                if stim.kind == "step" else "")
        raise CircuitError(f"{what} has no NeuroML counterpart; supported: {SUPPORTED_STIMULI}"
                           f"{hint}", path=path)
    if stim.quantity == "voltage":
        for target in stim.targets:
            if circuit.neuron(target).clamp is None:
                raise CircuitError(f"a voltage stimulus on {target!r}, which has no clamp, has no "
                                   "NeuroML counterpart; give the neuron a clamp (its holding "
                                   "potential)", path=path)


def _initial_potentials(circuit: Circuit, protocol: str | None) -> dict:
    """Where the run of ``protocol`` starts (mV): its rest or V0 as given."""
    proto = circuit.protocols.get(protocol) if protocol else None
    if circuit.initial_state(proto) == "rest":
        return rest_state(circuit, proto).V
    return {n.name: n.clamp if n.clamp is not None else n.initial_V for n in circuit.neurons}


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_]+", "_", name).strip("_") or "circuit"
    return slug if NML_ID.match(slug) else f"c_{slug}"


def _synapse_kinds(circuit: Circuit) -> dict:
    """(E, mu, nu, kappa) -> component id: synapses with equal parameters share one."""
    kinds: dict = {}
    for s in circuit.synapses:
        kinds.setdefault((s.E, s.mu, s.nu, s.kappa), f"{SYN}{len(kinds)}")
    return kinds


def _network_document(circuit: Circuit, slug: str, components_file: str, shift: float):
    try:
        import neuroml
    except ImportError:
        raise _missing("libNeuroML") from None
    doc = neuroml.NeuroMLDocument(id=slug, notes=(
        f"Exported by neurosim. The cells and graded synapses are LEMS components defined in "
        f"{components_file}; LEMS_{slug}.xml runs the network in jNeuroML."))
    protocol = next(iter(circuit.protocols), None)
    # the LEMS file is named in a property, not an <include>: NeuroML readers would parse
    # an included file as NeuroML, and the component types are LEMS
    net_props = [("circuit", circuit.name), ("components", components_file)]
    if circuit.initial is not None:
        net_props.append(("initial", circuit.initial))
    if protocol is not None:
        proto = circuit.protocols[protocol]
        net_props += [("protocol", protocol), ("duration", _number(proto.duration)),
                      ("stimuli", " ".join(proto.stimuli))]
        if proto.description:
            net_props.append(("description", proto.description))
        if proto.initial is not None:
            net_props.append(("protocol_initial", proto.initial))
    net = neuroml.Network(id=f"net_{slug}", properties=[neuroml.Property(tag=TAG + t, value=v)
                                                          for t, v in net_props])
    doc.networks.append(net)
    for n in circuit.neurons:
        props = [neuroml.Property(tag=TAG + "V0", value=_number(n.V0))] if n.V0 is not None else []
        if n.role is not None:
            props.append(neuroml.Property(tag=TAG + "role", value=n.role))
        net.populations.append(neuroml.Population(
            id=n.name, component=CELL + n.name, size=1, type="populationList", properties=props,
            instances=[neuroml.Instance(id=0, location=neuroml.Location(x=0, y=0, z=0))]))
    cell = lambda name: f"../{name}/0/{CELL}{name}"  # noqa: E731
    kinds = _synapse_kinds(circuit)
    if circuit.synapses:
        doc.silent_synapses.append(neuroml.SilentSynapse(id=SILENT))
    for k, s in enumerate(circuit.synapses):
        net.continuous_projections.append(neuroml.ContinuousProjection(
            id=f"synapse_{k}", presynaptic_population=s.pre, postsynaptic_population=s.post,
            continuous_connection_instance_ws=[_exact(neuroml.ContinuousConnectionInstanceW)(
                id=0, pre_cell=cell(s.pre), post_cell=cell(s.post), pre_component=SILENT,
                post_component=kinds[(s.E, s.mu, s.nu, s.kappa)], weight=_number(s.w))]))
    if circuit.gap_junctions:
        doc.gap_junctions.append(neuroml.GapJunction(id=GAP, conductance="1.0nS"))
    for k, g in enumerate(circuit.gap_junctions):
        net.electrical_projections.append(neuroml.ElectricalProjection(
            id=f"gap_{k}", presynaptic_population=g.a, postsynaptic_population=g.b,
            electrical_connection_instance_ws=[_exact(neuroml.ElectricalConnectionInstanceW)(
                id=0, pre_cell=cell(g.a), post_cell=cell(g.b), synapse=GAP,
                weight=_number(g.g))]))
    for name, stim in circuit.stimuli.items():
        timing = dict(id=STIM + name, delay=f"{_number(stim.start + shift)}ms",
                      duration=f"{_number(stim.duration)}ms")
        if stim.quantity == "current" and stim.kind == "pulse":
            doc.pulse_generators.append(neuroml.PulseGenerator(
                amplitude=f"{_number(stim.amplitude)}pA", **timing))
        elif stim.quantity == "current":
            doc.ramp_generators.append(neuroml.RampGenerator(
                start_amplitude="0.0pA", finish_amplitude=f"{_number(stim.amplitude)}pA",
                baseline_amplitude="0.0pA", **timing))
        else:  # a clamp command: a child of each clamped cell in the LEMS file
            continue
        for target in stim.targets:
            net.input_lists.append(neuroml.InputList(
                id=f"input_{len(net.input_lists)}", populations=target, component=STIM + name,
                input=[neuroml.Input(id=0, target=cell(target), destination="synapses")]))
    return doc


def _components_text(circuit: Circuit, initial: dict, shift: float) -> str:
    lines = ["<Lems>", "    <!-- neurosim component types and instances; units mV, ms, nS, pF, pA -->",
             COMPONENT_TYPES.rstrip("\n")]

    def component(cid: str, ctype: str, children=None, **params: str):
        attrs = " ".join(f"{k}={quoteattr(v)}" for k, v in params.items())
        start = f"    <Component id={quoteattr(cid)} type={quoteattr(ctype)} {attrs}"
        if children is None:
            lines.append(start + "/>")
            return
        lines.append(start + ">")
        lines.append('        <command type="neurosimClampCommand">')
        lines.extend(children)
        lines.extend(["        </command>", "    </Component>"])

    commands: dict = {n.name: [] for n in circuit.neurons}
    for name, stim in circuit.stimuli.items():
        # a command is read at the start of a step, so it switches at the step that starts
        # at its edge when the edge comes a shade early (see EDGE_SHIFT)
        delay = stim.start - shift
        for position, target in enumerate(stim.targets if stim.quantity == "voltage" else ()):
            commands[target].append(
                f"            <Component id={quoteattr(f'{STIM}{name}_{target}')} "
                f"type=\"neurosimVoltagePulse\" stimulus={quoteattr(name)} "
                f"position=\"{position}\" delay=\"{_number(delay)}ms\" "
                f"duration=\"{_number(stim.duration)}ms\" amplitude=\"{_number(stim.amplitude)}mV\"/>")
    for n in circuit.neurons:
        params = dict(C=f"{_number(n.C)}pF", gL=f"{_number(n.g_L)}nS", EL=f"{_number(n.E_L)}mV",
                      V0=f"{_number(initial[n.name])}mV")
        if n.clamp is None:
            component(CELL + n.name, "neurosimCell", **params)
        else:
            component(CELL + n.name, "neurosimClampedCell", commands[n.name],
                      holding=f"{_number(n.clamp)}mV", **params)
    for (E, mu, nu, kappa), cid in _synapse_kinds(circuit).items():
        component(cid, "neurosimGradedSynapse", conductance="1.0nS", erev=f"{_number(E)}mV",
                  mu=f"{_number(mu)}mV", nu=f"{_number(nu)}per_mV", kappa=_number(kappa))
    lines.append("</Lems>")
    return "\n".join(lines) + "\n"


def _simulation_text(circuit: Circuit, slug: str, files: tuple[str, str], dt: float,
                     outputs: str) -> str:
    """A LEMS simulation of the circuit's protocol at step ``dt`` (ms), every neuron's v
    into the file ``outputs``."""
    protocol = next(iter(circuit.protocols))
    sim_id = f"sim_{slug}"
    columns = "\n".join(
        f"            <OutputColumn id={quoteattr(n.name)} quantity={quoteattr(f'{n.name}/0/{CELL}{n.name}/v')}/>"
        for n in circuit.neurons)
    return f"""<Lems>
    <!-- protocol {quoteattr(protocol)} of {quoteattr(circuit.name)}, written by neurosim -->
    <Target component={quoteattr(sim_id)}/>
    <Include file="Cells.xml"/>
    <Include file="Networks.xml"/>
    <Include file="Simulation.xml"/>
    <Include file={quoteattr(files[0])}/>
    <Include file={quoteattr(files[1])}/>
    <Simulation id={quoteattr(sim_id)} length="{_number(circuit.protocols[protocol].duration)}ms" step="{_number(dt)}ms" target="net_{slug}">
        <OutputFile id="voltages" fileName={quoteattr(outputs)}>
{columns}
        </OutputFile>
    </Simulation>
</Lems>
"""


def _network_text(doc) -> str:
    import io

    from neuroml.writers import NeuroMLWriter
    stream = io.StringIO()
    NeuroMLWriter.write(doc, stream, close=False)
    return stream.getvalue()


def _check_dt(dt: float) -> float:
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise CircuitError(f"dt must be a finite number of ms > 0, got {short_repr(dt)}")
    return float(dt)


def export(circuit: Circuit, out_dir, protocol: str | None = None, *, dt: float = 0.01,
           overwrite: bool = False) -> Export:
    """Write ``circuit`` under ``protocol`` as NeuroML 2 and LEMS files into ``out_dir``.

    Parameters
    ----------
    circuit : Circuit
    out_dir : path
        Folder for the files (made if missing): ``<name>.net.nml`` (the network),
        ``<name>.components.xml`` (component types and instances) and
        ``LEMS_<name>.xml`` (the simulation), ``<name>`` the circuit's name as an id.
    protocol : str, optional
        Needed when the circuit has several protocols.
    dt : float, ms
        Step of the LEMS simulation (jLEMS: forward Euler).
    overwrite : bool
        Replace existing files (otherwise an existing one is an error, before anything is
        written).

    Returns
    -------
    Export
    """
    dt = _check_dt(dt)
    exported, left_out = exported_circuit(circuit, protocol)
    return _write(exported, left_out, Path(out_dir), dt, overwrite)


def _write(exported: Circuit, left_out: tuple, out: Path, dt: float, overwrite: bool,
           shift: float = 0.0) -> Export:
    """:func:`export`'s files for an :func:`exported_circuit`, stimulus edges moved by
    ``shift`` ms (see :data:`EDGE_SHIFT`)."""
    name = next(iter(exported.protocols), None)
    slug = _slug(exported.name)
    if out.exists() and not out.is_dir():
        raise CircuitError(f"cannot write into {out}: it is not a folder")
    paths = (out / f"{slug}.net.nml", out / f"{slug}.components.xml",
             out / f"LEMS_{slug}.xml" if name is not None else None)
    existing = [str(p) for p in paths if p is not None and p.exists()]
    if existing and not overwrite:
        raise CircuitError(f"{', '.join(existing)} exist; pass overwrite=True (--overwrite) to "
                           "replace them")
    initial = _initial_potentials(exported, name)
    texts = [_network_text(_network_document(exported, slug, paths[1].name, shift)),
             _components_text(exported, initial, shift)]
    if name is not None:
        texts.append(_simulation_text(exported, slug, (paths[1].name, paths[0].name), dt,
                                      f"{slug}.v.dat"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot make folder {out}: {exc.strerror}") from None
    for path, text in zip(paths, texts):
        write_text_atomically(path, text)
    return Export(exported, *paths, name, left_out)


# --- cross-check against jNeuroML ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CrossCheck:
    """neurosim against jNeuroML at two jNeuroML steps.

    Attributes
    ----------
    circuit, protocol : str
    steps : tuple of float, ms
        jNeuroML's steps, dt and dt/2.
    neurons : tuple of str
        The neurons compared (clamped ones, which follow their command, are not).
    max_difference : ndarray, shape (2, n_neurons), mV
        max |V_jNeuroML − V_neurosim| over the run, per step and neuron.
    jneuroml_s : tuple of float
        Wall time of each jNeuroML run (Java start included).
    neurosim_s : float
        Wall time of the neurosim run (dopri5, rtol = atol = ``rtol``).
    rtol : float
    """

    circuit: str
    protocol: str
    duration: float
    steps: tuple[float, float]
    neurons: tuple[str, ...]
    max_difference: np.ndarray
    jneuroml_s: tuple[float, float]
    neurosim_s: float
    rtol: float

    @property
    def ratio(self) -> np.ndarray:
        """Difference at dt over difference at dt/2, per neuron: 2 for first order."""
        return self.max_difference[0] / self.max_difference[1]

    def lines(self) -> list[str]:
        dt, half = self.steps
        width = max([6] + [len(n) for n in self.neurons])
        out = [f"{self.circuit}, protocol {self.protocol} ({self.duration:g} ms): max |V_jNeuroML "
               f"- V_neurosim| per neuron (neurosim: dopri5, rtol {self.rtol:g})",
               f"  {'neuron':<{width}} {f'dt {dt:g} ms':>14} {f'dt {half:g} ms':>14} {'ratio':>6}"]
        for k, name in enumerate(self.neurons):
            out.append(f"  {name:<{width}} {self.max_difference[0, k]:11.3g} mV "
                       f"{self.max_difference[1, k]:11.3g} mV {self.ratio[k]:6.2f}")
        out.append(f"  jNeuroML {self.jneuroml_s[0]:.1f} s and {self.jneuroml_s[1]:.1f} s, "
                   f"neurosim {self.neurosim_s:.2f} s")
        return out


def java_available() -> bool:
    """Whether a ``java`` executable is on the PATH (jNeuroML needs one)."""
    return shutil.which("java") is not None


@contextlib.contextmanager
def _quiet():
    """pyNeuroML's and numexpr's INFO lines (the command it runs, the threads numexpr
    uses) held back while it is imported and runs; warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("pyneuroml", "numexpr")]
    loggers += [logger for name, logger in list(logging.root.manager.loggerDict.items())
                if name.startswith(("pyneuroml.", "numexpr.")) and isinstance(logger, logging.Logger)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


#: seconds between the lines that say a jNeuroML run is still going
PROGRESS_EVERY_S = 5.0


def _run_jneuroml(simulation: Path, outputs: Path, n_neurons: int,
                  say) -> tuple[np.ndarray, float]:
    """V (samples × neurons, mV) of a jNeuroML run, and its wall time (s); ``say``
    hears every few seconds that it is still running."""
    with _quiet():
        try:
            from pyneuroml import pynml
        except ImportError:
            raise _missing("pyNeuroML") from None
    started = time.perf_counter()
    done = threading.Event()

    def heartbeat():
        while not done.wait(PROGRESS_EVERY_S):
            say(f"jNeuroML: still running ({time.perf_counter() - started:.0f} s)")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        with _quiet():
            ok = pynml.run_lems_with_jneuroml(simulation.name, nogui=True, load_saved_data=False,
                                              plot=False, exec_in_dir=str(simulation.parent),
                                              verbose=False, exit_on_fail=False)
    finally:
        done.set()
        beat.join()
    seconds = time.perf_counter() - started
    if not ok or not outputs.is_file():
        raise SimulationError(f"jNeuroML failed on {simulation} (run 'pynml {simulation.name}' "
                              f"in {simulation.parent} to see its output)")
    data = np.loadtxt(outputs, ndmin=2)
    if data.shape[1] != n_neurons + 1:
        raise SimulationError(f"{outputs}: expected {n_neurons + 1} columns (t and V), "
                              f"found {data.shape[1]}")
    return data[:, 1:] * 1e3, seconds  # V -> mV


def crosscheck(circuit: Circuit, protocol: str | None = None, *, dt: float = 0.01,
               rtol: float = 1e-10, workdir=None, progress=None) -> CrossCheck:
    """Run ``protocol`` in jNeuroML at steps dt and dt/2 and in neurosim, and compare.

    jLEMS integrates with forward Euler, so the differences shrink in proportion to its
    step (a ratio near 2 between dt and dt/2) toward neurosim's dopri5 run at ``rtol``.

    Parameters
    ----------
    circuit : Circuit
    protocol : str, optional
        Needed when the circuit has several protocols.
    dt : float, ms
    rtol : float
        neurosim's tolerance (relative, and absolute in mV).
    workdir : path, optional
        Where the exported files and jNeuroML's outputs go (default: a temporary folder,
        removed afterwards).
    progress : callable, optional
        Receives a line of text as each run starts and ends.

    Returns
    -------
    CrossCheck
    """
    dt = _check_dt(dt)
    exported, _ = exported_circuit(circuit, protocol)
    if not exported.protocols:
        raise CircuitError("the circuit has no protocol to cross-check; add one (duration and "
                           "stimuli)")
    if not java_available():
        raise NeuroMLToolError("java not found: the cross-check runs jNeuroML, which needs a Java "
                               "runtime (e.g. apt-get install openjdk-17-jre-headless)")
    say = progress or (lambda line: None)
    name = next(iter(exported.protocols))
    with tempfile.TemporaryDirectory(prefix="neurosim-neuroml-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        files = _write(exported, (), folder, dt, True, EDGE_SHIFT)
        slug = files.simulation.name[len("LEMS_"):-len(".xml")]
        names = exported.neuron_names
        traces, seconds = [], []
        for step in (dt, dt / 2):
            simulation = folder / f"LEMS_{slug}_dt{step:g}.xml"
            outputs = folder / f"{slug}_dt{step:g}.v.dat"
            write_text_atomically(simulation, _simulation_text(
                exported, slug, (files.components.name, files.network.name), step, outputs.name))
            say(f"jNeuroML: {name} at dt = {step:g} ms ({exported.protocols[name].duration:g} ms "
                f"of model time, Java) ...")
            V, wall = _run_jneuroml(simulation, outputs, len(names), say)
            say(f"jNeuroML: dt = {step:g} ms done in {wall:.1f} s")
            traces.append(V[::2 if step != dt else 1])
            seconds.append(wall)
    say("neurosim: dopri5 ...")
    started = time.perf_counter()
    result = simulate(exported, name, integrator="dopri5", rtol=rtol, atol=rtol, dt_out=dt)
    neurosim_s = time.perf_counter() - started
    free = [k for k, n in enumerate(exported.neurons) if n.clamp is None]
    n = min(result.t.size, *(V.shape[0] for V in traces))
    reference = result.V[:n, free]
    difference = np.array([np.max(np.abs(V[:n, free] - reference), axis=0) for V in traces])
    return CrossCheck(circuit.name, name, exported.protocols[name].duration, (dt, dt / 2),
                      tuple(names[k] for k in free), difference, tuple(seconds), neurosim_s, rtol)
