"""Compiling (neurosim/compile/): the parameter layout, every θ entry by name, the blocks the
kernels read; θ validated by name; compiled arrays memoised on their circuit."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit
from neurosim.compile.layout import BLOCKS
from neurosim.kernels.network import unpack_theta
from neurosim.model import Circuit, GapJunction, Neuron, Synapse
from reference import random_circuit


def three_cells():
    neurons = (Neuron("A"), Neuron("B", C=20.0), Neuron("C", g_L=2.0))
    # synapses given out of postsynaptic order: θ holds them sorted by postsynaptic neuron
    synapses = (Synapse("A", "C", w=0.3), Synapse("B", "A", w=0.2, E=-90.0),
                Synapse("A", "B", w=0.1, mu=-35.0))
    return Circuit("abc", neurons, synapses, (GapJunction("C", "A", g=0.05),))


def test_the_layout_names_every_entry_where_the_kernels_read_it():
    compiled = compile_circuit(three_cells())
    layout = compiled.layout
    assert layout.size == compiled.theta.size == 4 * 3 + 5 * 3 + 1
    # an arange θ: each kernel view must hold exactly the positions of its block
    marked = np.arange(layout.size, dtype=np.float64)
    views = unpack_theta(marked, 3, 3)
    for name, view in zip(BLOCKS, views):
        np.testing.assert_array_equal(view, marked[layout.block(name)], err_msg=name)
    # synapses in CSR order (by postsynaptic neuron), values where the names say
    assert layout.synapse_keys == ("B->A", "A->B", "A->C")
    assert compiled.theta[layout.index("synapses[A->B].mu")] == -35.0
    assert compiled.theta[layout.index("synapses[B->A].E")] == -90.0
    assert compiled.theta[layout.index("neurons[B].C")] == 20.0
    assert compiled.theta[layout.index("neurons[C].g_L")] == 2.0
    assert layout.index("gap_junctions[C-A].g") == layout.index("gap_junctions[A-C].g") == 27
    for k, name in enumerate(layout.names):
        assert layout.index(name) == k
        block, position = layout.field_of(k)
        assert layout.block(block).start + position == k


def test_unknown_names_are_one_line_errors_with_a_suggestion():
    layout = compile_circuit(three_cells()).layout
    with pytest.raises(ns.CircuitError, match=r"unknown parameter 'synapses\[A->B\]\.ww'.*"
                                              r"Did you mean 'synapses\[A->B\]\.w'"):
        layout.index("synapses[A->B].ww")
    with pytest.raises(ns.CircuitError, match="unknown parameter block 'synapse.w'"):
        layout.block("synapse.w")
    with pytest.raises(IndexError):
        layout.field_of(layout.size)


def test_a_batch_reports_its_columns_and_takes_theta_by_name():
    circuit = three_cells().replace(protocols={"p": ns.Protocol(5.0)})
    compiled = compile_circuit(circuit)
    theta = np.tile(compiled.theta, (2, 1))
    theta[1, compiled.layout.index("neurons[A].C")] = 5.0
    batch = ns.simulate_batch(circuit, theta=theta, dt_out=1.0, initial="as_given")
    assert batch.layout.names == compiled.layout.names
    with pytest.raises(ns.CircuitError, match=r"theta must have shape \(n_sets, 28\)"):
        ns.simulate_batch(circuit, theta[:, :5])


def test_theta_vector_is_validated_by_name():
    circuit = ns.Circuit("c", (ns.Neuron("A"), ns.Neuron("B")), (ns.Synapse("A", "B"),))
    compiled = compile_circuit(circuit)
    theta = compiled.theta.copy()
    theta[compiled.layout.index("synapses[A->B].w")] = -1.0
    with pytest.raises(ns.CircuitError, match=r"synapses\[A->B\].w: must be >= 0"):
        ns.simulate(circuit, duration=1.0, theta=theta)


def test_compiled_arrays_are_memoised_on_the_circuit_and_not_pickled():
    import gc
    import pickle
    import weakref

    from neurosim.compile import compile_cached
    circuit, _ = random_circuit(9, 4)
    first = compile_cached(circuit, ablate=("N1",))
    assert compile_cached(circuit, ablate=("N1",)) is first
    assert compile_cached(circuit) is not first
    copy = pickle.loads(pickle.dumps(circuit))
    assert copy == circuit and "_compiled" not in copy.__dict__
    ref = weakref.ref(circuit)
    del circuit, first
    gc.collect()
    assert ref() is None  # the memo does not keep its circuit alive
