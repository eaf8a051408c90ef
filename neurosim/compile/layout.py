"""Where every parameter lives in θ, by name.

θ is one float64 vector per run, so that fits and batches swap numbers without
recompiling; its layout is a block per field,

    [C (n), g_L (n), E_L (n), V0 (n), w (S), E (S), mu (S), nu (S), kappa (S), g (G)]

with neurons in state order, synapses sorted by postsynaptic neuron (the kernels' CSR
order) and gap junctions in circuit order.  :class:`ParameterLayout` is the one place
that knows it outside the kernels (whose ``unpack_theta`` reads the same blocks; a test
holds the two together): code that needs an offset asks it by name.

>>> from neurosim.model import Circuit, Neuron, Synapse
>>> from neurosim.compile import compile_circuit
>>> c = Circuit("pair", (Neuron("A"), Neuron("B")), (Synapse("A", "B", w=0.5),))
>>> layout = compile_circuit(c).layout
>>> layout.index("synapses[A->B].w"), layout.block("neurons.C")
(8, slice(0, 2, None))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from neurosim.errors import CircuitError
from neurosim.model import unknown_name_message

NEURON_FIELDS = ("C", "g_L", "E_L", "V0")
SYNAPSE_FIELDS = ("w", "E", "mu", "nu", "kappa")
GAP_FIELDS = ("g",)
SECTIONS = {"neurons": NEURON_FIELDS, "synapses": SYNAPSE_FIELDS, "gap_junctions": GAP_FIELDS}
#: the blocks of θ in order ("neurons.C", ..., "gap_junctions.g"); a block's position here
#: is its code in the tangent kernels
BLOCKS = tuple(f"{section}.{field}" for section, fields in SECTIONS.items() for field in fields)


@dataclass(frozen=True)
class ParameterLayout:
    """The blocks of θ and the name of every entry.

    Parameters
    ----------
    neuron_keys, synapse_keys, gap_keys : tuple of str
        The names of the neurons (state order), synapses (``"PRE->POST"``, CSR order) and
        gap junctions (``"A-B"``) as θ holds them.
    """

    neuron_keys: tuple[str, ...]
    synapse_keys: tuple[str, ...]
    gap_keys: tuple[str, ...]

    @property
    def n_neurons(self) -> int:
        return len(self.neuron_keys)

    @property
    def n_synapses(self) -> int:
        return len(self.synapse_keys)

    @property
    def n_gap(self) -> int:
        return len(self.gap_keys)

    @property
    def size(self) -> int:
        """The length of θ."""
        return (len(NEURON_FIELDS) * self.n_neurons + len(SYNAPSE_FIELDS) * self.n_synapses
                + self.n_gap)

    @functools.cached_property
    def _blocks(self) -> dict[str, slice]:
        sizes = {"neurons": self.n_neurons, "synapses": self.n_synapses,
                 "gap_junctions": self.n_gap}
        blocks, start = {}, 0
        for name in BLOCKS:
            size = sizes[name.partition(".")[0]]
            blocks[name] = slice(start, start + size)
            start += size
        return blocks

    def block(self, field: str) -> slice:
        """The slice of θ holding ``field`` for every element: ``"neurons.C"``,
        ``"synapses.w"``, ``"gap_junctions.g"``, ..."""
        try:
            return self._blocks[field]
        except KeyError:
            raise CircuitError(unknown_name_message("parameter block", field,
                                                    list(self._blocks))) from None

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The name of every entry of θ, in θ order: ``"neurons[AVA].C"``,
        ``"synapses[PVD->AVA].w"``, ``"gap_junctions[AVM-AVD].g"``."""
        return tuple(f"{section}[{key}].{field}"
                     for section, keys in (("neurons", self.neuron_keys),
                                           ("synapses", self.synapse_keys),
                                           ("gap_junctions", self.gap_keys))
                     for field in SECTIONS[section] for key in keys)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.names)}

    def index(self, name: str) -> int:
        """The position of parameter ``name`` in θ (a gap junction by either order of its
        neurons)."""
        k = self._index.get(name)
        if k is None and name.startswith("gap_junctions["):
            pair, _, field = name[len("gap_junctions["):].partition("]")
            a, _, b = pair.partition("-")
            k = self._index.get(f"gap_junctions[{b}-{a}]{field}")
        if k is None:
            raise CircuitError(unknown_name_message("parameter", name, list(self.names)))
        return k

    def field_of(self, k: int) -> tuple[str, int]:
        """(block name, position in the block) of θ entry ``k``."""
        for field, where in self._blocks.items():
            if where.start <= k < where.stop:
                return field, k - where.start
        raise IndexError(f"θ has {self.size} entries, got index {k}")
