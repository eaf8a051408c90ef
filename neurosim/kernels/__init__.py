"""Numba kernels: arrays and scalars in, numbers out.

Only :mod:`neurosim.integrators` and the tests import these.  Array conventions:
``i`` is a postsynaptic neuron, ``j`` a presynaptic one, ``k`` an edge.  The parameter
vector ``theta`` is laid out by :func:`neurosim.compile.parameter_layout`.
"""
