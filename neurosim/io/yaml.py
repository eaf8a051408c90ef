"""Circuit YAML ⇄ model objects.

Structure and units are checked with pydantic models; every error is reported as
``FILE:LINE: key.path: what was found; what is allowed``.  The line comes from the
YAML node of the offending value (or of its closest parent that exists in the file).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import secrets
import stat
import types
import typing
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from neurosim.errors import CircuitError, StorageError
from neurosim.model import (INITIAL_STATES, NEURON_ROLES, QUANTITIES, STIMULUS_KINDS, SYNAPSE_TYPES, Circuit, GapJunction,
                            Neuron, Protocol, Readout, Schedule, Stimulus, Synapse)
from neurosim.units import finite_float, parse_quantity, short_repr


# libyaml's C parser when PyYAML was built with it: much faster on big circuits
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _not_null(value):
    # null is no value in these files: an optional key is left out instead
    if value is None:
        raise ValueError("must be a number, got null")
    return value


def _quantity(dimension: str):
    return Annotated[float, BeforeValidator(lambda value: parse_quantity(_not_null(value), dimension))]


def _whole_number(value):
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got the boolean {value}")
    finite_float(_not_null(value))  # a count beyond the float range cannot be compiled
    return value


Voltage = _quantity("voltage")
Time = _quantity("time")
Conductance = _quantity("conductance")
Capacitance = _quantity("capacitance")
Frequency = _quantity("frequency")
InverseVoltage = _quantity("inverse_voltage")
Number = _quantity("dimensionless")
Name = Annotated[str, Field(min_length=1)]
# converted once the stimulus' quantity (pA or mV) is known
Raw = Annotated[float | str, BeforeValidator(_not_null)]
Count = Annotated[int, BeforeValidator(_whole_number)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value, info):
        # fields default to None for "not given": a null written in the file would
        # otherwise silently take the default
        if value is None:
            field = cls.model_fields[info.field_name]
            what = "must be a number" if _is_number(field.annotation) else "must have a value"
            rest = "" if field.is_required() else "; leave the key out for the default"
            raise ValueError(f"{what}, got null{rest}")
        return value


def _is_number(annotation) -> bool:
    """Whether a field's type is a number, optional or not."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation in (float, int):
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and \
        any(_is_number(arg) for arg in typing.get_args(annotation) if arg is not type(None))


class NeuronDefaults(_Spec):
    C: Capacitance | None = None
    g_L: Conductance | None = None
    E_L: Voltage | None = None
    V0: Voltage | None = None
    clamp: Voltage | None = None


class NeuronSpec(NeuronDefaults):
    name: Name
    role: Literal[NEURON_ROLES] | None = None


class SynapseDefaults(_Spec):
    w: Conductance | None = None
    E: Voltage | None = None
    type: Literal["excitatory", "inhibitory"] | None = None
    mu: Voltage | None = None
    nu: InverseVoltage | None = None
    kappa: Number | None = None


class SynapseSpec(SynapseDefaults):
    pre: Name
    post: Name


class GapDefaults(_Spec):
    g: Conductance | None = None


class GapSpec(GapDefaults):
    a: Name
    b: Name


class DefaultsSpec(_Spec):
    neuron: NeuronDefaults = NeuronDefaults()
    synapse: SynapseDefaults = SynapseDefaults()
    gap_junction: GapDefaults = GapDefaults()


class StimulusSpec(_Spec):
    kind: Literal[tuple(STIMULUS_KINDS)]
    target: Name | list[Name]
    quantity: Literal[QUANTITIES] = "current"
    amplitude: Raw | None = None
    offset: Raw | None = None
    start: Time | None = None
    duration: Time | None = None
    period: Time | None = None
    count: Count | None = None
    frequency: Frequency | None = None
    phase: Number | None = None
    times: list[Time] | None = None
    values: list[Raw] | None = None


class ProtocolSpec(_Spec):
    duration: Time
    stimuli: list[Name] = []
    ablate: list[Name] = []
    scale: dict[Name, Number] = {}
    description: str = ""
    initial: Literal[INITIAL_STATES] | None = None


class ReadoutSpec(_Spec):
    reverse: Name
    forward: Name
    window: Annotated[list[Time], Field(min_length=2, max_length=2)]
    baseline: Annotated[list[Time], Field(min_length=2, max_length=2)] | None = None
    rest: Voltage | None = None
    span: Voltage | None = None
    threshold: Number | None = None
    probability_scale: Number | None = None


class ScheduleSpec(_Spec):
    interval: Time
    values: dict[str, list[Number]]


class CircuitSpec(_Spec):
    name: Name
    description: str = ""
    defaults: DefaultsSpec = DefaultsSpec()
    neurons: list[NeuronSpec] = Field(min_length=1)
    synapses: list[SynapseSpec] = []
    gap_junctions: list[GapSpec] = []
    stimuli: dict[Name, StimulusSpec] = {}
    protocols: dict[Name, ProtocolSpec] = {}
    readouts: dict[Name, ReadoutSpec] = {}
    schedule: ScheduleSpec | None = None
    initial: Literal[INITIAL_STATES] | None = None


# --- reading YAML with line numbers -------------------------------------------------

#: the largest file :func:`read_text` reads: a circuit of the whole C. elegans connectome
#: is about 1 MB, and /dev/zero would otherwise be read until memory runs out
MAX_FILE_BYTES = 64 * 2**20
#: the most nodes (values, keys, lists and mappings) a document may have, each alias
#: counted as every node of its anchor: eleven lines of nested aliases ("billion laughs")
#: stand for 10^9 nodes.  A 20,000-synapse circuit (three times the C. elegans
#: connectome) has 300,000; reading takes about 4 s and 130 MB per million
MAX_NODES = 1_000_000
#: the deepest nesting of lists and mappings (circuit files nest five levels); libyaml's
#: composer overflows the C stack at about 100,000
MAX_DEPTH = 100

_TAG = "tag:yaml.org,2002:"
_SCALAR_CONSTRUCTORS = {_TAG + kind: getattr(yaml.constructor.SafeConstructor, f"construct_yaml_{kind}")
                        for kind in ("null", "bool", "int", "float", "binary", "timestamp", "str")}
_SCALAR_CONSTRUCTORS[_TAG + "value"] = _SCALAR_CONSTRUCTORS[_TAG + "str"]  # a plain '='
_COLLECTION_TAGS = {yaml.SequenceStartEvent: _TAG + "seq", yaml.MappingStartEvent: _TAG + "map"}
_MERGE = object()   # the merge key ``<<``
_NO_KEY = object()  # a mapping waiting for its next key


def _parent(path: str) -> str:
    """'synapses[3].pre' → 'synapses[3]' → 'synapses' → ''."""
    return re.sub(r"(^|\.)[^.\[\]]+$|\[\d+\]$", "", path)


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


@dataclasses.dataclass
class _Node:
    """A list or mapping being read, or a finished value with what it stands for."""

    items: Any
    path: str | None    # None for mapping keys
    line: int
    size: int = 1       # nodes, counting what aliases stand for
    height: int = 0     # levels of lists and mappings inside, itself included
    anchor: str | None = None
    key: Any = _NO_KEY
    key_line: int = 0
    merged: dict | None = None   # key → (value, path it is written at) from merge keys


class _LineMap:
    """YAML text → (data, {key path: line}).

    The document is read event by event (libyaml's parser keeps no recursion), so that
    nesting and nodes, through aliases too, are counted as they come and refused beyond
    :data:`MAX_DEPTH` and :data:`MAX_NODES` before anything is expanded.  An alias
    is the anchored value itself, shared, not a copy; ``redirects`` maps the key path of
    an alias (or of a merged key) to the path where its content is written, so that an
    error inside it is placed at that line.
    """

    def __init__(self, text: str, source: str):
        self.source = source
        self.lines: dict[str, int] = {}
        self.redirects: dict[str, str] = {}
        self._anchors: dict[str, _Node] = {}
        self._open_anchors: set[str] = set()
        self._nodes = 0
        try:
            loader = _Loader(text)
            try:
                self.data = self._read(loader)
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = exc.problem or str(exc)
            raise CircuitError(f"invalid YAML: {problem}", file=source, line=line) from None
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            raise CircuitError(f"invalid YAML: {exc.reason} (character {exc.character!r})",
                               file=source, line=line) from None
        except yaml.YAMLError as exc:
            raise CircuitError(f"invalid YAML: {' '.join(str(exc).split())}", file=source) from None

    def _error(self, message: str, line: int, path: str | None = None) -> CircuitError:
        return CircuitError(message, path=path or None, file=self.source, line=line)

    def _read(self, loader):
        loader.get_event()  # the stream's start
        if isinstance(loader.get_event(), yaml.StreamEndEvent):
            return None
        stack: list[_Node] = []
        while True:
            event = loader.get_event()
            if isinstance(event, yaml.DocumentEndEvent):
                break
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append(self._open(event, stack))
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                node = self._close(stack.pop())
            elif isinstance(event, yaml.AliasEvent):
                node = self._alias(event, stack)
            else:
                node = self._scalar(event, stack, loader)
            if stack:
                self._add(stack[-1], node)
            else:
                root = node.items
        event = loader.get_event()
        if not isinstance(event, yaml.StreamEndEvent):
            raise self._error("invalid YAML: expected a single document in the stream, found "
                              "another document", event.start_mark.line + 1)
        return root

    def _count(self, nodes: int, line: int, path: str | None, how: str = "") -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise self._error(f"the document has more than {MAX_NODES:,} nodes (the limit){how}",
                              line, path)

    def _place(self, event, stack) -> tuple[str | None, int]:
        """The key path and line of the node that ``event`` starts; a mapping value is
        placed at its key's line: that is where a reader looks."""
        line = event.start_mark.line + 1
        if not stack:
            path = ""
        elif isinstance(stack[-1].items, list):
            path = _join(stack[-1].path, len(stack[-1].items))
        elif stack[-1].key is _NO_KEY:
            return None, line
        else:
            path, line = _join(stack[-1].path, "<<" if stack[-1].key is _MERGE else stack[-1].key), \
                stack[-1].key_line
        self.lines[path] = line
        return path, line

    def _open(self, event, stack) -> _Node:
        if event.tag not in (None, "!", _COLLECTION_TAGS[type(event)]):
            raise self._error(f"invalid YAML: unsupported tag {event.tag!r}; circuit files use "
                              "plain lists and mappings", event.start_mark.line + 1)
        path, line = self._place(event, stack)
        if path is None:
            raise self._error("keys must be names, got a "
                              f"{'list' if isinstance(event, yaml.SequenceStartEvent) else 'mapping'}",
                              line, stack[-1].path)
        if len(stack) >= MAX_DEPTH:
            raise self._error(f"lists and mappings are nested more than {MAX_DEPTH} levels deep "
                              "(the limit)", line, path)
        self._count(1, line, path)
        if event.anchor is not None:
            self._open_anchors.add(event.anchor)
        items = [] if isinstance(event, yaml.SequenceStartEvent) else {}
        return _Node(items, path, line, height=1, anchor=event.anchor)

    def _close(self, node: _Node) -> _Node:
        if node.merged:  # keys of the mapping itself win over merged ones
            for key, (_, written) in node.merged.items():
                if key not in node.items:
                    self.redirects[_join(node.path, key)] = written
            node.items = {**{k: v for k, (v, _) in node.merged.items() if k not in node.items},
                          **node.items}
        if node.anchor is not None:
            self._open_anchors.discard(node.anchor)
            self._anchors[node.anchor] = node
        return node

    def _alias(self, event, stack) -> _Node:
        path, line = self._place(event, stack)
        name = event.anchor
        if name in self._open_anchors:
            raise self._error(f"invalid YAML: alias *{name} is inside its own anchor &{name} "
                              "(a node that contains itself)", line, path)
        if name not in self._anchors:
            raise self._error(f"invalid YAML: found undefined alias *{name}", line, path)
        anchored = self._anchors[name]
        self._count(anchored.size, line, path, f", counting each alias *{name} as the "
                    f"{anchored.size:,} nodes of its anchor")
        if len(stack) + anchored.height > MAX_DEPTH:
            raise self._error(f"lists and mappings are nested more than {MAX_DEPTH} levels deep "
                              f"(the limit) through *{name}", line, path)
        if path is not None and anchored.path is not None:
            self.redirects[path] = anchored.path
        return _Node(anchored.items, path, line, size=anchored.size, height=anchored.height)

    def _scalar(self, event, stack, loader) -> _Node:
        path, line = self._place(event, stack)
        self._count(1, line, path)
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _TAG + "str":  # names and quantities: most values of a circuit
            value = event.value
        elif tag == _TAG + "merge":
            value = _MERGE if path is None else "<<"  # a merge key, or the text '<<'
        elif tag not in _SCALAR_CONSTRUCTORS:
            raise self._error(f"invalid YAML: unsupported tag {tag!r}; circuit files use plain "
                              "numbers and text", line, path)
        else:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                   style=event.style)
            try:
                value = _SCALAR_CONSTRUCTORS[tag](loader, node)
            except (ValueError, OverflowError) as exc:  # a 5,000-digit int, the 30th of February
                reason = str(exc).split(";")[0]  # not Python's advice on its own limits
                raise self._error(f"invalid YAML: cannot read {short_repr(event.value)} as "
                                  f"{tag.removeprefix(_TAG)}: {reason}", line, path) from None
        if event.anchor is not None:  # an alias of an anchored '<<' is the text
            self._anchors[event.anchor] = _Node("<<" if value is _MERGE else value, path, line)
        return _Node(value, path, line)

    def _add(self, parent: _Node, node: _Node) -> None:
        parent.size += node.size
        if parent.key is _MERGE:  # the merged mappings' items become the parent's: a list
            # of mappings is one level above them, a mapping at their level
            parent.height = max(parent.height, node.height - (1 if isinstance(node.items, list) else 0))
        else:
            parent.height = max(parent.height, node.height + 1)
        if isinstance(parent.items, list):
            parent.items.append(node.items)
        elif parent.key is _NO_KEY:
            self._add_key(parent, node)
        else:
            if parent.key is _MERGE:
                self._merge(parent, node)
            else:
                parent.items[parent.key] = node.items
            parent.key = _NO_KEY

    def _add_key(self, parent: _Node, node: _Node) -> None:
        key = node.items
        if key is _MERGE:
            if parent.merged is not None:
                raise self._error("duplicate key '<<'", node.line, _join(parent.path, "<<"))
            parent.merged = {}
        else:
            if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                raise self._error(f"keys must be names, got {short_repr(key)}", node.line,
                                  parent.path)
            key = str(key)
            if key in parent.items:
                raise self._error(f"duplicate key {key!r}", node.line, _join(parent.path, key))
        parent.key, parent.key_line = key, node.line

    def _merge(self, parent: _Node, node: _Node) -> None:
        """YAML 1.1 merge keys: ``<<: *a`` and ``<<: [*a, *b]`` (a mapping earlier in the
        list wins over a later one; the mapping's own keys win over all)."""
        sources = node.items if isinstance(node.items, list) else [node.items]
        if not all(isinstance(source, dict) for source in sources):
            raise self._error(f"the merge key << takes a mapping or a list of mappings, such as "
                              f"*base or [*a, *b]; got {short_repr(node.items)}", node.line,
                              node.path)
        for k, source in enumerate(sources):
            written = node.path if node.items is source else _join(node.path, k)
            for key, value in source.items():
                parent.merged.setdefault(key, (value, _join(written, key)))

    def _find(self, path: str) -> tuple[int | None, bool]:
        """The line of ``path`` and whether the document has that path; a path through
        an alias or a merge key goes on where the content is written."""
        fallback = None
        while True:
            if path in self.lines:
                return self.lines[path], True
            if path in self.redirects:
                path = self.redirects[path]
                continue
            ancestor = path
            while ancestor:
                ancestor = _parent(ancestor)
                if ancestor in self.redirects:
                    if fallback is None:  # the alias' own line, if the rest is not found
                        fallback = self.lines.get(ancestor)
                    path = self.redirects[ancestor] + path[len(ancestor):]
                    break
                if ancestor in self.lines:
                    return fallback or self.lines[ancestor], False
            else:
                return fallback or self.lines.get(""), False

    def line_of(self, path: str) -> int | None:
        return self._find(path)[0]

    def has(self, path: str) -> bool:
        """Whether ``path`` names a value of the document (pydantic adds other names)."""
        return self._find(path)[1]


def _allowed_keys(spec_model, loc_path) -> list[str]:
    model = spec_model
    for part in loc_path:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            if not issubclass(model, BaseModel):
                return []
            continue
        model = _submodel(field.annotation)
    return list(model.model_fields) if model is not None else []


def _submodel(annotation):
    """The pydantic model inside list[...] / dict[..., ...] / X | None, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict, lines: _LineMap, model) -> CircuitError:
    loc = [p for p in error["loc"]]
    path = ""
    data_path = []
    for part in loc:
        candidate = _join(path, part)
        if lines.has(candidate) or error["type"] in ("missing", "extra_forbidden"):
            path = candidate
            data_path.append(part)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(data_path[-1])
        allowed = _allowed_keys(model, data_path[:-1])
        message = f"unknown key {key!r}; allowed: {', '.join(allowed)}"
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f". Did you mean {close[0]!r}?"
    elif kind == "missing":
        message = f"missing required key {str(data_path[-1])!r}"
        return CircuitError(message, path=path, file=lines.source,
                            line=lines.line_of(_parent(path)))
    elif kind == "value_error":
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"expected a mapping (key: value, ...), got {short_repr(error['input'])}"
    elif kind == "list_type":
        message = f"expected a list, got {short_repr(error['input'])}"
    elif kind == "literal_error":
        message = f"got {short_repr(error['input'])}; allowed: {error['ctx']['expected']}"
    else:
        message = f"{error['msg'][0].lower()}{error['msg'][1:]}, got {short_repr(error['input'])}"
    return CircuitError(message, path=path or None, file=lines.source, line=lines.line_of(path))


def _first_error(exc: ValidationError, lines: _LineMap, model) -> CircuitError:
    errors = exc.errors(include_url=False)
    # a union (e.g. target: str | list[str]) reports one error per branch: keep the first
    described = _describe(errors[0], lines, model)
    others = len({tuple(e["loc"][:-1]) for e in errors[1:]} - {tuple(errors[0]["loc"][:-1])})
    if others:
        described = CircuitError(f"{described.message} (and {others} more problem"
                                 f"{'s' if others > 1 else ''})", path=described.path,
                                 file=described.file, line=described.line)
    return described


# --- spec → model --------------------------------------------------------------------

def _merge(defaults: BaseModel, spec: BaseModel) -> dict:
    merged = {k: v for k, v in defaults.model_dump().items() if v is not None}
    merged.update({k: v for k, v in spec.model_dump().items() if v is not None})
    return merged


def _synapse(fields: dict) -> Synapse:
    syn_type = fields.pop("type", None)
    if syn_type is not None:
        if "E" in fields and fields["E"] != SYNAPSE_TYPES[syn_type]:
            raise CircuitError(f"type {syn_type!r} means E = {SYNAPSE_TYPES[syn_type]} mV but "
                               f"E = {fields['E']} mV is given; give one of them", path="E")
        fields["E"] = SYNAPSE_TYPES[syn_type]
    return Synapse(**fields)


def _stimulus(spec: StimulusSpec) -> Stimulus:
    dimension = "current" if spec.quantity == "current" else "voltage"
    fields = {k: v for k, v in spec.model_dump().items() if v is not None}
    for key in ("amplitude", "offset"):
        if key in fields:
            try:
                fields[key] = parse_quantity(fields[key], dimension)
            except ValueError as exc:
                raise CircuitError(str(exc), path=key) from None
    if "values" in fields:
        converted = []
        for k, value in enumerate(fields["values"]):
            try:
                converted.append(parse_quantity(value, dimension))
            except ValueError as exc:
                raise CircuitError(str(exc), path=f"values[{k}]") from None
        fields["values"] = tuple(converted)
    if "times" in fields:
        fields["times"] = tuple(fields["times"])
    if isinstance(fields["target"], list):
        fields["target"] = tuple(fields["target"])
    return Stimulus(**fields)


def _build(spec: CircuitSpec, located) -> Circuit:
    d = spec.defaults
    parts: dict[str, Any] = {"neurons": [], "synapses": [], "gap_junctions": [], "stimuli": {},
                             "protocols": {}}
    builders = (("neurons", spec.neurons, lambda s: Neuron(**_merge(d.neuron, s))),
                ("synapses", spec.synapses, lambda s: _synapse(_merge(d.synapse, s))),
                ("gap_junctions", spec.gap_junctions, lambda s: GapJunction(**_merge(d.gap_junction, s))))
    for key, items, build in builders:
        for k, item in enumerate(items):
            try:
                parts[key].append(build(item))
            except CircuitError as err:
                raise located(err, f"{key}[{k}]") from None
    for name, item in spec.stimuli.items():
        try:
            parts["stimuli"][name] = _stimulus(item)
        except CircuitError as err:
            raise located(err, f"stimuli.{name}") from None
    for name, item in spec.protocols.items():
        try:
            parts["protocols"][name] = Protocol(item.duration, tuple(item.stimuli),
                                                tuple(item.ablate), item.description,
                                                item.scale, item.initial)
        except CircuitError as err:
            raise located(err, f"protocols.{name}") from None
    readouts = {}
    for name, item in spec.readouts.items():
        try:
            readouts[name] = Readout(**{k: v for k, v in item.model_dump().items() if v is not None})
        except CircuitError as err:
            raise located(err, f"readouts.{name}") from None
    schedule = None
    if spec.schedule is not None:
        try:
            schedule = Schedule(spec.schedule.interval, spec.schedule.values)
        except CircuitError as err:
            raise located(err, "schedule") from None
    try:
        return Circuit(spec.name, tuple(parts["neurons"]), tuple(parts["synapses"]),
                       tuple(parts["gap_junctions"]), parts["stimuli"], parts["protocols"],
                       readouts, schedule, spec.initial)
    except CircuitError as err:
        raise located(err, "") from None


def parse_spec(text: str, source: str, model, what: str):
    """Validate YAML text against a pydantic ``model``; returns (spec, line locator).

    The locator, ``locate(error, prefix)``, places a model-level CircuitError raised
    while building objects from the spec at the line of its key path.
    """
    lines = _LineMap(text, source)
    if not isinstance(lines.data, dict):
        found = "an empty document" if lines.data is None else type(lines.data).__name__
        raise CircuitError(f"{what} is a mapping with keys {', '.join(list(model.model_fields)[:3])}, "
                           f"...; found {found}", file=source, line=1)
    try:
        spec = model.model_validate(lines.data)
    except ValidationError as exc:
        raise _first_error(exc, lines, model) from None

    def locate(err: CircuitError, prefix: str = "") -> CircuitError:
        path = f"{prefix}.{err.path}" if err.path and prefix else err.path or prefix
        return CircuitError(err.message, path=path, file=source, line=lines.line_of(path))
    return spec, locate


def loads_circuit(text: str, source: str = "<string>") -> Circuit:
    """A Circuit from YAML text; errors name ``source``, the line and the key path."""
    spec, locate = parse_spec(text, source, CircuitSpec, "a circuit file")
    return _build(spec, locate)


def load_circuit(path) -> Circuit:
    """Read a circuit YAML file.

    Examples
    --------
    >>> c = load_circuit("circuits/examples/three_cells.yaml")  # doctest: +SKIP

    A ``.nml`` file is a NeuroML 2 network, read by
    :func:`neurosim.io.neuroml.import_network`.
    """
    if Path(path).suffix.lower() == ".nml":
        from neurosim.io.neuroml import import_network  # reads yaml's read_text: a cycle
        return import_network(path)
    return loads_circuit(read_text(path, "circuit file"), str(path))


def read_text(path, what: str, form: str = "YAML text") -> str:
    """The UTF-8 text of the regular file ``path``, at most :data:`MAX_FILE_BYTES` long,
    or a CircuitError naming the file (and saying that a ``what`` is ``form``)."""
    path = Path(path)
    limit = f"{MAX_FILE_BYTES // 2**20} MiB"
    try:
        # non-blocking: opening a FIFO would otherwise wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise CircuitError(f"cannot read {what}: it is {_file_kind(status.st_mode)}, not a "
                                   f"regular file; a {what} is {form}", file=str(path))
            chunks, size = [], 0
            # st_size is 0 for /proc files and a file may grow: the read is bounded too, in
            # chunks, since read(n) allocates n bytes at once
            while status.st_size <= MAX_FILE_BYTES and size <= MAX_FILE_BYTES:
                chunk = os.read(fd, 2**20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            raw = b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CircuitError(f"cannot read {what}: {exc.strerror}", file=str(path)) from None
    if status.st_size > MAX_FILE_BYTES or len(raw) > MAX_FILE_BYTES:
        raise CircuitError(f"cannot read {what}: it is larger than {limit} (the limit); a {what} "
                           f"is {form}", file=str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CircuitError(f"not a UTF-8 text file (byte {exc.start})", file=str(path)) from None


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe (FIFO)"),
             (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


# --- model → YAML --------------------------------------------------------------------

_STIMULUS_DEFAULTS = {"amplitude": 1.0, "quantity": "current", "offset": 0.0, "start": 0.0,
                      "duration": math.inf, "period": None, "count": None, "frequency": None,
                      "phase": 0.0, "times": None, "values": None}


def circuit_to_dict(circuit: Circuit) -> dict:
    """Plain data with every value in engine units; ``load(dump(c)) == c``."""
    def neuron(n: Neuron):
        out = {"name": n.name, "C": n.C, "g_L": n.g_L, "E_L": n.E_L}
        out.update({k: getattr(n, k) for k in ("V0", "clamp", "role") if getattr(n, k) is not None})
        return out

    def stimulus(s: Stimulus):
        out = {"kind": s.kind, "target": s.targets[0] if len(s.targets) == 1 else list(s.targets)}
        for key, default in _STIMULUS_DEFAULTS.items():
            value = getattr(s, key)
            if value != default:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def protocol(p: Protocol):
        out = {"duration": p.duration}
        for key in ("stimuli", "ablate"):
            if getattr(p, key):
                names = getattr(p, key)
                if not all(isinstance(x, str) for x in names):
                    raise CircuitError("only protocols that name their stimuli can be saved; "
                                       "add the stimuli to circuit.stimuli", path=key)
                out[key] = list(names)
        if p.scale:
            out["scale"] = dict(p.scale)
        if p.description:
            out["description"] = p.description
        if p.initial is not None:
            out["initial"] = p.initial
        return out

    data: dict[str, Any] = {"name": circuit.name}
    if circuit.initial is not None:
        data["initial"] = circuit.initial
    data["neurons"] = [neuron(n) for n in circuit.neurons]
    if circuit.synapses:
        data["synapses"] = [{"pre": s.pre, "post": s.post, "w": s.w, "E": s.E, "mu": s.mu,
                             "nu": s.nu, "kappa": s.kappa} for s in circuit.synapses]
    if circuit.gap_junctions:
        data["gap_junctions"] = [{"a": g.a, "b": g.b, "g": g.g} for g in circuit.gap_junctions]
    if circuit.stimuli:
        data["stimuli"] = {name: stimulus(s) for name, s in circuit.stimuli.items()}
    if circuit.protocols:
        data["protocols"] = {name: protocol(p) for name, p in circuit.protocols.items()}
    if circuit.readouts:
        data["readouts"] = {name: {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in dataclasses.asdict(r).items() if v is not None}
                            for name, r in circuit.readouts.items()}
    if circuit.schedule is not None:
        data["schedule"] = {"interval": circuit.schedule.interval,
                            "values": {k: list(v) for k, v in circuit.schedule.values.items()}}
    return data


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _number(value: float) -> str:
    """A float written exactly (repr) so that YAML reads it back as the same float."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(float(value))
    # YAML 1.1 reads 1e-05 as a string: it wants a dot in the mantissa
    return text.replace("e", ".0e") if "e" in text and "." not in text else text


def _flow(value) -> str:
    """One value in YAML flow style, floats written exactly (repr) and read back as floats."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        plain = _PLAIN.match(value) and value.lower() not in _YAML_WORDS
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    raise CircuitError(f"cannot write {type(value).__name__} {value!r} to YAML")


#: id(circuit) -> (weak reference, text): a circuit is frozen, so its text is too, and a
#: sweep recording many runs of one circuit dumps it once
_DUMPED: dict[int, tuple[weakref.ref, str]] = {}


def dump_circuit(circuit: Circuit) -> str:
    """YAML text of ``circuit`` (units: mV, ms, nS, pF, pA, Hz, 1/mV), one entry per line.

    Written by a small flow-style emitter: PyYAML's representer took 0.4 s for a
    4,000-synapse circuit, which every recorded run pays (scripts/bench.py).
    """
    key = id(circuit)
    cached = _DUMPED.get(key)
    if cached is not None and cached[0]() is circuit:
        return cached[1]
    text = _emit(circuit)
    _DUMPED[key] = (weakref.ref(circuit, lambda _, key=key: _DUMPED.pop(key, None)), text)
    return text


def _emit(circuit: Circuit) -> str:
    lines = ["# neurosim circuit; units: mV, ms, nS, pF, pA, Hz, 1/mV"]
    name = {nm: _flow(nm) for nm in circuit.neuron_names}
    for key, value in circuit_to_dict(circuit).items():
        if key == "synapses":  # the bulk of a large circuit: one f-string per entry
            lines.append("synapses:")
            lines.extend(f"  - {{pre: {name[s.pre]}, post: {name[s.post]}, w: {_number(s.w)}, "
                         f"E: {_number(s.E)}, mu: {_number(s.mu)}, nu: {_number(s.nu)}, "
                         f"kappa: {_number(s.kappa)}}}" for s in circuit.synapses)
        elif isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {_flow(item)}" for item in value)
        elif isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {_flow(str(k))}: {_flow(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def save_circuit(circuit: Circuit, path, header: str = "") -> None:
    """Write ``circuit`` as YAML to ``path``, under ``header`` (``#`` comment lines), whole
    or not at all (:func:`write_text_atomically`)."""
    write_text_atomically(path, header + dump_circuit(circuit))


def write_text_atomically(path, text: str | bytes) -> None:
    """Write ``text`` (str as UTF-8, or bytes) to ``path`` whole or not at all: into a new
    file beside it, flushed to the disk, then renamed over it, so that a full disk, an
    error or a crash leaves the previous file (or none), never a truncated one."""
    path = Path(path)
    # a name of its own (mode "x": never another's file), with the umask's permissions
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        binary = isinstance(text, bytes)
        with open(tmp, "xb" if binary else "x", encoding=None if binary else "utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}; the previous file, "
                               "if any, is unchanged") from None
        raise
