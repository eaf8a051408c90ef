"""Which parameters a fit changes: selection by pattern, bounds, transforms, ties.

A :class:`Parameterization` maps an unconstrained-ish vector ``x`` (what optimisers see)
to the circuit's full parameter vector θ and back.  It never mutates a circuit:
``apply(x)`` returns a new one.

Patterns (``select``)::

    neurons[AVA].g_L        one neuron's parameter        neurons[*].C      every neuron
    synapses[*].w           every chemical synapse        synapses[PVD->AVA].w
    synapses[pre=AVD].nu    synapses from AVD             synapses[post=AVA,pre=PVC].mu
    gap_junctions[*].g      every gap junction            gap_junctions[AVM-AVD].g
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

import numpy as np

from neurosim.compile import circuit_with_theta, compile_circuit
from neurosim.compile.layout import SECTIONS
from neurosim.errors import CircuitError
from neurosim.model import Circuit

TRANSFORMS = ("none", "log")
_PATTERN = re.compile(r"^(neurons|synapses|gap_junctions)\[([^\]]*)\]\.(\w+)$")


@dataclass(frozen=True)
class FreeParameter:
    """One entry of a fit specification.

    Parameters
    ----------
    select : str
        A pattern (see the module docstring).
    bounds : (float, float), optional
        Bounds in the parameter's own units; default (0, inf) for conductances and
        capacitances, unbounded otherwise.
    transform : {"none", "log"}
        ``log`` fits log θ (for positive parameters spanning decades).
    tie : bool
        All selected parameters share one value.
    """

    select: str
    bounds: tuple[float, float] | None = None
    transform: str = "none"
    tie: bool = False

    def __post_init__(self):
        if not isinstance(self.select, str) or not _PATTERN.match(self.select.replace(" ", "")):
            raise CircuitError(
                f"cannot read selector {self.select!r}; write e.g. 'synapses[*].w', "
                "'synapses[pre=AVD].nu', 'neurons[AVA].g_L' or 'gap_junctions[*].g'", path="select")
        if self.transform not in TRANSFORMS:
            raise CircuitError(f"unknown transform {self.transform!r}; allowed: "
                               f"{', '.join(TRANSFORMS)}", path="transform")
        if self.bounds is not None:
            lo, hi = (float(b) for b in self.bounds)
            if not lo < hi or math.isnan(lo) or math.isnan(hi):
                raise CircuitError(f"bounds must be [low, high] with low < high, got {self.bounds!r}",
                                   path="bounds")
            if self.transform == "log" and lo <= 0:
                raise CircuitError(f"a log transform needs a positive lower bound, got {lo}",
                                   path="bounds")
            object.__setattr__(self, "bounds", (lo, hi))


def _catalogue(compiled):
    """(θ index, section, attributes for matching, field) of every parameter."""
    attributes = {
        "neurons": [{"name": name} for name in compiled.neuron_names],
        "synapses": [{"pre": syn.pre, "post": syn.post, "name": syn.key}
                     for syn in compiled.synapses_csr],
        "gap_junctions": [{"a": gap.a, "b": gap.b, "name": gap.key, "alt": f"{gap.b}-{gap.a}"}
                          for gap in compiled.circuit.gap_junctions]}
    return [(compiled.layout.block(f"{section}.{field}").start + j, section, attrs, field)
            for section, fields in SECTIONS.items() for field in fields
            for j, attrs in enumerate(attributes[section])]


def _matches(selector: str, attrs: dict) -> bool:
    if selector == "*":
        return True
    for part in selector.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            if attrs.get(key) != value:
                return False
        elif part not in (attrs.get("name"), attrs.get("alt")):
            return False
    return True


def select(compiled, pattern: str) -> list[int]:
    """θ indices matched by ``pattern`` (CircuitError if it matches nothing)."""
    match = _PATTERN.match(pattern.replace(" ", ""))
    if match is None:
        raise CircuitError(f"cannot read selector {pattern!r}")
    section, selector, field = match.groups()
    if field not in SECTIONS[section]:
        raise CircuitError(f"{section} have no parameter {field!r}; allowed: "
                           f"{', '.join(SECTIONS[section])}", path="select")
    for part in selector.split(","):
        if "=" in part and part.split("=")[0] not in ("pre", "post", "a", "b", "name"):
            raise CircuitError(f"unknown condition {part!r}; use pre=, post= or a name",
                               path="select")
    hits = [idx for idx, sec, attrs, fld in _catalogue(compiled)
            if sec == section and fld == field and _matches(selector, attrs)]
    if not hits:
        names = sorted({attrs["name"] for _, sec, attrs, _ in _catalogue(compiled) if sec == section})
        close = difflib.get_close_matches(selector, names, n=1)
        hint = f". Did you mean {close[0]!r}?" if close else ""
        raise CircuitError(f"selector {pattern!r} matches no parameter; {section}: "
                           f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}{hint}",
                           path="select")
    return hits


def _default_bounds(name: str) -> tuple[float, float]:
    field = name.rsplit(".", 1)[1]
    if field in ("w", "g", "g_L"):
        return (0.0, math.inf)
    if field == "C":
        return (1e-6, math.inf)
    if field == "kappa":
        return (0.0, 1.0)
    return (-math.inf, math.inf)


class Parameterization:
    """Free parameters of a fit, as groups of θ entries sharing one value.

    Parameters
    ----------
    circuit : Circuit
    free : sequence of FreeParameter (or dicts with the same keys)

    Attributes
    ----------
    groups : list of ndarray of int
        θ indices of each free variable (one index, or several when tied).
    names : list of str
    lower, upper : ndarray
        Bounds of ``x`` (already transformed).
    x0 : ndarray
        The circuit's own values, transformed.
    """

    def __init__(self, circuit: Circuit, free):
        self.circuit = circuit
        self.compiled = compile_circuit(circuit)
        names = self.compiled.layout.names
        self.entries = [f if isinstance(f, FreeParameter) else FreeParameter(**f) for f in free]
        if not self.entries:
            raise CircuitError("a fit needs at least one free parameter", path="free")
        self.groups, self.names, self.log, lower, upper = [], [], [], [], []
        taken: dict[int, str] = {}
        for k, entry in enumerate(self.entries):
            try:
                hits = select(self.compiled, entry.select)
            except CircuitError as err:
                raise CircuitError(err.message, path=f"free[{k}].select") from None
            for idx in hits:
                if idx in taken:
                    raise CircuitError(f"{names[idx]} is selected twice (also by {taken[idx]!r})",
                                       path=f"free[{k}].select")
                taken[idx] = entry.select
            parts = [hits] if entry.tie else [[idx] for idx in hits]
            for part in parts:
                lo, hi = entry.bounds or _default_bounds(names[part[0]])
                self.groups.append(np.array(part, dtype=np.int64))
                self.names.append(entry.select if entry.tie else names[part[0]])
                self.log.append(entry.transform == "log")
                lower.append(math.log(lo) if entry.transform == "log" else lo)
                upper.append(math.log(hi) if entry.transform == "log" else hi)
        self.log = np.array(self.log)
        self.lower, self.upper = np.array(lower), np.array(upper)
        start = np.array([self.compiled.theta[g].mean() for g in self.groups])
        with np.errstate(divide="ignore"):
            x0 = np.where(self.log, np.log(np.maximum(start, 1e-300)), start)
        self.x0 = np.clip(x0, self.lower, self.upper)
        self.indices = np.concatenate(self.groups)

    @property
    def n_free(self) -> int:
        return len(self.groups)

    def values(self, x) -> np.ndarray:
        """Parameter values (own units) of the free variables."""
        x = np.asarray(x, dtype=np.float64)
        return np.where(self.log, np.exp(x), x)

    def theta(self, x) -> np.ndarray:
        """The full θ with the free variables set from ``x`` (rows of x give rows of θ)."""
        x = np.asarray(x, dtype=np.float64)
        values = np.where(self.log, np.exp(x), x)
        theta = np.repeat(self.compiled.theta[None, :], values.reshape(-1, self.n_free).shape[0], 0)
        for g, group in enumerate(self.groups):
            theta[:, group] = values.reshape(-1, self.n_free)[:, g:g + 1]
        return theta[0] if x.ndim == 1 else theta

    def chain(self, x, grad_theta: np.ndarray) -> np.ndarray:
        """dL/dx from dL/dθ[indices] (ties summed, log transforms applied)."""
        values = self.values(x)
        out = np.empty(self.n_free)
        position = 0
        for g, group in enumerate(self.groups):
            total = grad_theta[position:position + group.size].sum()
            out[g] = total * values[g] if self.log[g] else total
            position += group.size
        return out

    def apply(self, x) -> Circuit:
        """A new circuit with the free parameters set from ``x``."""
        return circuit_with_theta(self.compiled, self.theta(x))

    def table(self, x) -> list[tuple[str, float, float]]:
        """(name, start value, fitted value) of each free variable."""
        return list(zip(self.names, self.values(self.x0), self.values(x)))
