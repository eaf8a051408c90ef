"""NeuroML 2 networks of neurosim's own component types: the names an export writes and
the reader that turns such a network back into a circuit (:func:`import_network`).

Reading a network is input, like reading YAML, so it lives here, where
``load_circuit`` finds it; writing one (with its LEMS files) and cross-checking against
jNeuroML run simulations and live in :mod:`neurosim.neuroml`.  libNeuroML's parser
(lxml) is imported when a file is read: it comes with the ``neuroml`` extra.
"""

from __future__ import annotations

import re
from pathlib import Path

from neurosim.errors import CircuitError, NeurosimError
from neurosim.io.yaml import read_text
from neurosim.model import Circuit, GapJunction, Neuron, Protocol, Stimulus, Synapse
from neurosim.units import parse_quantity, short_repr

#: NeuroML ids (NmlId in the schema): what neuron and stimulus names must look like
NML_ID = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
NEUROML_NS = "{http://www.neuroml.org/schema/neuroml2}"

#: prefixes of the component ids the export writes, one namespace per kind
CELL, STIM, SYN = "cell_", "stim_", "syn_"
SILENT, GAP = "silent", "gap"
#: property tags for what NeuroML has no element for
TAG = "neurosim."

#: (LEMS component type, its parameters and their dimensions) as the import reads them
CELL_PARAMETERS = {"C": "capacitance", "gL": "conductance", "EL": "voltage", "V0": "voltage"}
COMPONENTS = {
    "neurosimCell": CELL_PARAMETERS,
    "neurosimClampedCell": {**CELL_PARAMETERS, "holding": "voltage"},
    "neurosimGradedSynapse": {"conductance": "conductance", "erev": "voltage", "mu": "voltage",
                              "nu": "inverse_voltage", "kappa": "dimensionless"},
    "neurosimVoltagePulse": {"delay": "time", "duration": "time", "amplitude": "voltage",
                             "position": "dimensionless"},
}
#: standard NeuroML elements the network file may hold, with their parameters
STANDARD = {
    "silentSynapse": {},
    "gapJunction": {"conductance": "conductance"},
    "pulseGenerator": {"delay": "time", "duration": "time", "amplitude": "current"},
    "rampGenerator": {"delay": "time", "duration": "time", "startAmplitude": "current",
                      "finishAmplitude": "current", "baselineAmplitude": "current"},
}


def _missing(what: str) -> NeurosimError:
    return NeuroMLToolError(f"{what} is not installed; NeuroML support needs the neuroml extra: "
                            "python -m pip install -e \".[neuroml]\"")


class NeuroMLToolError(NeurosimError, RuntimeError):
    """A tool the NeuroML interchange needs (libNeuroML, pyNeuroML, Java) is missing."""


class _Reader:
    """Errors of one file: 'FILE:LINE: <element id=...>: what; what is supported'."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, element, message: str) -> CircuitError:
        return CircuitError(message, path=_describe(element), file=str(self.path),
                            line=getattr(element, "sourceline", None))

    def parse(self, what: str):
        try:
            from lxml import etree
        except ImportError:
            raise _missing("lxml (with libNeuroML)") from None
        text = read_text(self.path, what, "XML text")
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
        try:
            return etree.fromstring(text.encode("utf-8"), parser)
        except etree.XMLSyntaxError as exc:
            raise CircuitError(f"invalid XML: {exc.msg}", file=str(self.path),
                               line=exc.lineno) from None

    def attribute(self, element, name: str) -> str:
        value = element.get(name)
        if value is None:
            raise self.error(element, f"missing attribute {name!r}")
        return value

    def quantity(self, element, name: str, dimension: str) -> float:
        text = self.attribute(element, name)
        try:  # NeuroML writes 1/mV as per_mV
            return parse_quantity(text.replace("per_", "/"), dimension)
        except ValueError as exc:
            raise self.error(element, f"{name}: {exc}") from None


def _tag(element) -> str:
    return element.tag.rpartition("}")[2] if isinstance(element.tag, str) else str(element.tag)


def _describe(element) -> str:
    ident = element.get("id")
    return f"<{_tag(element)}{f' id={ident!r}' if ident is not None else ''}>"


def _children(reader: _Reader, element, allowed: dict) -> dict:
    """Children by tag; any other tag is an error naming the allowed ones."""
    found: dict = {tag: [] for tag in allowed}
    for child in element:
        tag = _tag(child)
        if tag not in allowed:
            raise reader.error(child, f"element <{tag}> is not supported by neurosim's import; "
                                      f"supported here: {', '.join(f'<{t}>' for t in allowed)}")
        found[tag].append(child)
    return found


def _components(nml: _Reader, network, href: str) -> dict:
    """id -> (type, element, reader) of the LEMS components file ``href`` (relative to
    the network file, in its folder)."""
    if Path(href).name != href:
        raise nml.error(network, f"{TAG}components: {href!r} must be a file name in the "
                                 "network file's folder")
    reader = _Reader(nml.path.parent / href)
    root = reader.parse("LEMS components file")
    if _tag(root) != "Lems":
        raise reader.error(root, "not a LEMS file (its root element is not <Lems>)")
    found = {}
    top = ("neurosimCell", "neurosimClampedCell", "neurosimGradedSynapse")
    for child in _children(reader, root, {"ComponentType": (), "Component": (), "Include": ()})["Component"]:
        ctype = reader.attribute(child, "type")
        if ctype not in top:
            raise reader.error(child, f"component type {ctype!r} is not supported; supported: "
                                      f"{', '.join(top)}")
        if ctype != "neurosimClampedCell" and len(child):
            raise reader.error(child[0], f"a {ctype} has no children")
        found[reader.attribute(child, "id")] = (ctype, child, reader)
    return found


def _properties(reader: _Reader, elements) -> dict:
    return {reader.attribute(p, "tag")[len(TAG):]: reader.attribute(p, "value")
            for p in elements if p.get("tag", "").startswith(TAG)}


def import_network(path) -> Circuit:
    """A Circuit from a NeuroML 2 network of the kind :func:`export` writes.

    Reads the network file and the LEMS components file its ``neurosim.components``
    property names.  Supported: one ``<network>`` of single-cell ``populationList``
    populations of neurosimCell or neurosimClampedCell components (clamp commands:
    neurosimVoltagePulse children), ``continuousProjection`` s from a ``silentSynapse`` to
    a neurosimGradedSynapse, ``electricalProjection`` s through a ``gapJunction``, and
    ``inputList`` s of ``pulseGenerator`` or ``rampGenerator`` (baseline and start 0).
    Anything else is a CircuitError naming the file, line and element.  Names,
    parameters, stimuli and the exported protocol come back as they were written; a
    neuron's V0 comes from its population's ``neurosim.V0`` property (the cells' V0 is
    where the exported run starts, its rest or V0 as given).
    """
    reader = _Reader(Path(path))
    root = reader.parse("NeuroML network file")
    if root.tag != NEUROML_NS + "neuroml":
        raise reader.error(root, "not a NeuroML 2 document (its root is not <neuroml> in the "
                                 "NeuroML 2 namespace)")
    tops = _children(reader, root, {"notes": (), "network": (), **STANDARD})
    if len(tops["network"]) != 1:
        raise reader.error(root, f"expected one <network>, found {len(tops['network'])}")
    net = tops["network"][0]
    parts = _children(reader, net, {"notes": (), "property": (), "population": (),
                                    "continuousProjection": (), "electricalProjection": (),
                                    "inputList": ()})
    props = _properties(reader, parts["property"])
    if "components" not in props:
        raise reader.error(net, f"no <property tag=\"{TAG}components\"> naming the LEMS file "
                                "of the cells and graded synapses; neurosim imports the "
                                "networks it exports")
    components = _components(reader, net, props["components"])
    for tag in STANDARD:
        for element in tops[tag]:
            components[reader.attribute(element, "id")] = (tag, element, reader)

    def params(element, attribute: str, types: tuple) -> tuple[str, dict]:
        """The component an element's ``attribute`` names: its type and parameters."""
        cid = reader.attribute(element, attribute)
        if cid not in components:
            raise reader.error(element, f"{attribute}: no component {cid!r} in the file or the "
                                        "LEMS file it includes")
        ctype, comp, comp_reader = components[cid]
        if ctype not in types:
            raise reader.error(element, f"{attribute}: component {cid!r} is a {ctype}; supported "
                                        f"here: {', '.join(types)}")
        spec = COMPONENTS.get(ctype) or STANDARD[ctype]
        return ctype, {k: comp_reader.quantity(comp, k, dim) for k, dim in spec.items()}

    neurons, clamped = [], {}
    for pop in parts["population"]:
        name = reader.attribute(pop, "id")
        inner = _children(reader, pop, {"notes": (), "property": (), "instance": (), "annotation": ()})
        if pop.get("type") != "populationList" or len(inner["instance"]) != 1:
            raise reader.error(pop, "only single-cell populations (type 'populationList' with one "
                                    "<instance>) are supported")
        ctype, p = params(pop, "component", ("neurosimCell", "neurosimClampedCell"))
        if ctype == "neurosimClampedCell":
            clamped[name] = components[pop.get("component")]
        extra = _properties(reader, inner["property"])
        try:
            v0 = float(extra["V0"]) if "V0" in extra else None
        except ValueError:
            raise reader.error(pop, f"{TAG}V0 must be a number (mV), got "
                                    f"{short_repr(extra['V0'])}") from None
        try:
            neurons.append(Neuron(name, p["C"], p["gL"], p["EL"], v0, p.get("holding"),
                                  extra.get("role")))
        except CircuitError as err:
            raise reader.error(pop, err.message) from None
    synapses, gaps = [], []
    connection_tags = {"continuousProjection": "continuousConnectionInstanceW",
                       "electricalProjection": "electricalConnectionInstanceW"}
    for kind, connection_tag in connection_tags.items():
        for proj in parts[kind]:
            pre = reader.attribute(proj, "presynapticPopulation")
            post = reader.attribute(proj, "postsynapticPopulation")
            for conn in _children(reader, proj, {connection_tag: ()})[connection_tag]:
                weight = reader.quantity(conn, "weight", "dimensionless")
                try:
                    if kind == "continuousProjection":
                        params(conn, "preComponent", ("silentSynapse",))
                        _, p = params(conn, "postComponent", ("neurosimGradedSynapse",))
                        synapses.append(Synapse(pre, post, weight * p["conductance"], p["erev"],
                                                p["mu"], p["nu"], p["kappa"]))
                    else:
                        _, p = params(conn, "synapse", ("gapJunction",))
                        gaps.append(GapJunction(pre, post, weight * p["conductance"]))
                except CircuitError as err:
                    if err.file is not None:
                        raise
                    raise reader.error(conn, f"{err.message} (weight {weight!r} times the "
                                             "component's conductance)") from None
    parts_of: dict = {}  # stimulus name -> [(position, target, kind, quantity, params, element)]
    for inputs in parts["inputList"]:
        cid = reader.attribute(inputs, "component")
        ctype, p = params(inputs, "component", ("pulseGenerator", "rampGenerator"))
        for item in _children(reader, inputs, {"input": ()})["input"]:
            if item.get("destination", "synapses") != "synapses":
                raise reader.error(item, "destination must be 'synapses'")
        if ctype == "rampGenerator":
            if p["startAmplitude"] != 0 or p["baselineAmplitude"] != 0:
                raise reader.error(inputs, f"component {cid!r}: only ramps from 0 "
                                           "(startAmplitude and baselineAmplitude 0) are supported")
            p["amplitude"] = p["finishAmplitude"]
        name = cid[len(STIM):] if cid.startswith(STIM) else cid
        spec = ("ramp" if ctype == "rampGenerator" else "pulse", "current",
                p["amplitude"], p["delay"], p["duration"])
        entries = parts_of.setdefault(name, [])
        entries.append((len(entries), reader.attribute(inputs, "population"), spec, inputs))
    for pop, (_, comp, comp_reader) in clamped.items():
        for command in _children(comp_reader, comp, {"command": ()})["command"]:
            for pulse in _children(comp_reader, command, {"Component": ()})["Component"]:
                if pulse.get("type") != "neurosimVoltagePulse":
                    raise comp_reader.error(pulse, "a clamp command holds neurosimVoltagePulse "
                                                   "components only")
                p = {k: comp_reader.quantity(pulse, k, dim)
                     for k, dim in COMPONENTS["neurosimVoltagePulse"].items()}
                spec = ("pulse", "voltage", p["amplitude"], p["delay"], p["duration"])
                parts_of.setdefault(comp_reader.attribute(pulse, "stimulus"), []).append(
                    (p["position"], pop, spec, pulse))
    order = props.get("stimuli", "").split()
    stimuli = {}
    for name in sorted(parts_of, key=lambda n: order.index(n) if n in order else len(order)):
        entries = sorted(parts_of[name], key=lambda entry: entry[0])
        kind, quantity, amplitude, start, duration = entries[0][2]
        for entry in entries[1:]:
            if entry[2] != entries[0][2]:
                raise reader.error(entry[3], f"stimulus {name!r}: its targets' components differ "
                                             "(a neurosim stimulus is one waveform)")
        try:
            stimuli[name] = Stimulus(kind, tuple(e[1] for e in entries), amplitude, quantity,
                                     start=start, duration=duration)
        except CircuitError as err:
            raise reader.error(entries[0][3], f"stimulus {name!r}: {err}") from None
    protocols = {}
    if "protocol" in props:
        try:
            protocols[props["protocol"]] = Protocol(
                float(props.get("duration", "nan")), tuple(n for n in order if n in stimuli), (),
                props.get("description", ""), {}, props.get("protocol_initial"))
        except (CircuitError, ValueError) as err:
            raise reader.error(net, f"neurosim.protocol: {err}") from None
    try:
        return Circuit(props.get("circuit", reader.attribute(net, "id")), tuple(neurons),
                       tuple(synapses), tuple(gaps), stimuli, protocols,
                       initial=props.get("initial"))
    except CircuitError as err:
        raise reader.error(net, str(err)) from None
