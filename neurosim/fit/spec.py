"""The fit specification file (YAML): free parameters, loss, simulation and optimiser.

.. code-block:: yaml

    free:
      - {select: "synapses[*].w", bounds: [0, 3]}
      - {select: "synapses[*].nu", bounds: [0.05, 0.5], transform: log}
      - {select: "neurons[*].g_L", bounds: [0.05, 5], tie: true}
    loss: {prior: 0.0, readout: behaviour, control: true}   # control: add "no stimulus -> none"
    simulation: {integrator: dopri5, rtol: 1.0e-6, dt_out: 5.0}   # precision: float32 (CMA-ES)
    optimizer: {method: cmaes, generations: 60, restarts: 0, seed: 0}
    signs: {classes: [PVD, PLM, AVM, ALM, AVD, PVC, DVA], maxiter: 40, threshold: 2}   # optional
    imaging: {tau: 500, v_half: -40, slope: 5, kd: 0.5, hill: 2.5, dff_max: 1}   # ΔF/F data
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurosim.errors import CircuitError
from neurosim.fit.parameters import FreeParameter
from neurosim.fit.targets import Indicator
from neurosim.io.yaml import parse_spec, read_text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FreeSpec(_Strict):
    select: str
    bounds: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    transform: Literal["none", "log"] = "none"
    tie: bool = False


class LossSpec(_Strict):
    prior: Annotated[float, Field(ge=0)] = 0.0
    readout: str = "behaviour"
    control: bool = True


class SimulationSpec(_Strict):
    integrator: Literal["euler", "rk4", "ltc", "dopri5"] = "dopri5"
    dt: Annotated[float, Field(gt=0)] | None = None
    rtol: Annotated[float, Field(gt=0)] | None = None
    atol: Annotated[float, Field(gt=0)] | None = None
    dt_out: Annotated[float, Field(gt=0)] = 5.0
    precision: Literal["float64", "float32"] = "float64"


class OptimizerSpec(_Strict):
    method: Literal["cmaes", "gradient"] = "cmaes"
    generations: Annotated[int, Field(ge=1)] = 60
    popsize: Annotated[int, Field(ge=2)] | None = None
    sigma0: Annotated[float, Field(gt=0, le=1)] = 0.25
    restarts: Annotated[int, Field(ge=0)] = 0
    maxiter: Annotated[int, Field(ge=1)] = 200
    polish: bool = True
    seed: int = 0


class SignSpec(_Strict):
    classes: Annotated[list[str], Field(min_length=1, max_length=12)]
    maxiter: Annotated[int, Field(ge=1)] = 40
    threshold: Annotated[float, Field(gt=0)] = 2.0   # log-likelihood difference of a tie


class ImagingSpec(_Strict):
    """The calcium indicator (see :class:`neurosim.fit.targets.Indicator`)."""
    tau: Annotated[float, Field(gt=0)] = 500.0
    v_half: float = -40.0
    slope: Annotated[float, Field(gt=0)] = 5.0
    kd: Annotated[float, Field(gt=0)] = 0.5
    hill: Annotated[float, Field(gt=0)] = 2.5
    dff_max: Annotated[float, Field(gt=0)] = 1.0


class FitFileSpec(_Strict):
    free: Annotated[list[FreeSpec], Field(min_length=1)]
    loss: LossSpec = LossSpec()
    simulation: SimulationSpec = SimulationSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    signs: SignSpec | None = None
    imaging: ImagingSpec = ImagingSpec()


@dataclass(frozen=True)
class FitSpec:
    """A validated fit specification (see the module docstring)."""

    free: tuple[FreeParameter, ...]
    loss: LossSpec
    simulation: SimulationSpec
    optimizer: OptimizerSpec
    signs: SignSpec | None
    indicator: Indicator


#: what `neurosim fit` fits when no specification is given: every synaptic weight and
#: gap conductance in the tap-withdrawal model's range 0..3 nS
DEFAULT_FIT = """
free:
  - {select: "synapses[*].w", bounds: [0, 3]}
  - {select: "gap_junctions[*].g", bounds: [0, 3]}
"""


def loads_fit_spec(text: str, source: str = "<string>") -> FitSpec:
    """A FitSpec from YAML text; errors name the file, line and key."""
    spec, locate = parse_spec(text, source, FitFileSpec, "a fit specification")
    free = []
    for k, entry in enumerate(spec.free):
        try:
            free.append(FreeParameter(entry.select, tuple(entry.bounds) if entry.bounds else None,
                                      entry.transform, entry.tie))
        except CircuitError as err:
            raise locate(err, f"free[{k}]") from None
    return FitSpec(tuple(free), spec.loss, spec.simulation, spec.optimizer, spec.signs,
                   Indicator(**spec.imaging.model_dump()))


def load_fit_spec(path) -> FitSpec:
    return loads_fit_spec(read_text(path, "fit specification"), str(path))
