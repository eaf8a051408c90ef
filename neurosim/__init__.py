"""neurosim: fast simulation of nonspiking, conductance-based neuron circuits.

Units everywhere: mV, ms, nS, pF, pA.  See ``DESIGN`` in the docs for the equation.
"""

from neurosim._version import __version__
from neurosim.errors import (CircuitError, NeurosimError, ResourceError, RestWarning,
                             ResultFileError, SimulationError, StorageError)
from neurosim.io.batch_file import HDF5BatchRecorder
from neurosim.io.hdf5 import HDF5Recorder, load_result
from neurosim.io.yaml import dump_circuit, load_circuit, loads_circuit, save_circuit
from neurosim.model import Circuit, GapJunction, Neuron, Protocol, Stimulus, Synapse
from neurosim.record import Result
from neurosim.simulate import (METHODS, BatchPlan, BatchResult, RestState, Sensitivities,
                               rest_state, sensitivities, simulate, simulate_batch)

__all__ = ["METHODS", "BatchPlan", "BatchResult", "Circuit", "CircuitError", "GapJunction",
           "HDF5BatchRecorder", "HDF5Recorder", "Neuron",
           "NeurosimError", "Protocol", "ResourceError", "RestState", "RestWarning", "Result",
           "ResultFileError", "Sensitivities", "SimulationError", "Stimulus", "StorageError",
           "Synapse",
           "__version__", "dump_circuit", "load_circuit", "load_result", "loads_circuit",
           "rest_state", "save_circuit", "sensitivities", "simulate", "simulate_batch"]
