"""Frozen, validated model objects; names, not indices."""

from neurosim.model.circuit import (NEURON_ROLES, SYNAPSE_TYPES, Circuit, GapJunction, Neuron, Synapse,
                                    unknown_name_message)
from neurosim.model.readout import Readout
from neurosim.model.stimulus import (INITIAL_STATES, QUANTITIES, STIMULUS_KINDS, Protocol, Schedule,
                                     Stimulus)

__all__ = ["Circuit", "GapJunction", "INITIAL_STATES", "NEURON_ROLES", "Neuron", "Protocol", "QUANTITIES", "Readout", "STIMULUS_KINDS", "Schedule",
           "SYNAPSE_TYPES", "Stimulus", "Synapse", "unknown_name_message"]
