"""Fitting circuits to behaviour and traces (DESIGN.md §5)."""

from neurosim.fit.objective import Objective
from neurosim.fit.parameters import FreeParameter, Parameterization
from neurosim.fit.targets import (BehaviourTarget, ImagingTarget, Indicator, TraceTarget,
                                  load_behaviour, load_data, load_imaging, load_traces)

__all__ = ["BehaviourTarget", "FreeParameter", "ImagingTarget", "Indicator", "Objective",
           "Parameterization", "TraceTarget", "load_behaviour", "load_data", "load_imaging",
           "load_traces"]
