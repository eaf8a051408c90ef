"""Behavioural read-outs: how a behaviour is read from motor-neuron traces."""

from __future__ import annotations

import math
from dataclasses import dataclass

from neurosim.errors import CircuitError


def _window(value, path: str) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CircuitError(f"must be [start, end] in ms, got {value!r}", path=path) from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise CircuitError(f"must be [start, end] with 0 <= start < end (ms), got {value!r}",
                           path=path)
    return start, end


@dataclass(frozen=True)
class Readout:
    """Reversal vs forward movement from two motor neurons.

    Each motor neuron's output is ``clip((V − rest) / span, 0, 1)`` (the Lechner/Hasani
    convention: 0 at rest, 1 at 50 mV above it).  The **score** is the time average over
    ``window`` of ``out(reverse) − out(forward)``, minus the same average over ``baseline``
    (pre-stimulus), so a circuit's resting bias does not count as behaviour.  It lies in
    [−1, 1]: positive means reversal.

    * label: ``reversal`` if score > threshold, ``forward`` if score < −threshold, else ``none``;
    * reversal probability: ``1 / (1 + exp(−score / probability_scale))``.

    An ablated motor neuron contributes output 0.

    Parameters
    ----------
    reverse, forward : str
        Motor (or command) neurons for backward and forward movement.
    window : (float, float), ms
        Response window.
    baseline : (float, float), ms, optional
        Pre-stimulus window subtracted from the response (None: no subtraction).
    rest, span : float, mV
    threshold : float
        |score| below it is ``none``.
    probability_scale : float
        Logistic scale of the reversal probability.
    """

    reverse: str
    forward: str
    window: tuple[float, float]
    baseline: tuple[float, float] | None = None
    rest: float = -70.0
    span: float = 50.0
    threshold: float = 0.05
    probability_scale: float = 0.1

    def __post_init__(self):
        for end in ("reverse", "forward"):
            if not isinstance(getattr(self, end), str) or not getattr(self, end):
                raise CircuitError(f"must be a neuron name, got {getattr(self, end)!r}", path=end)
        object.__setattr__(self, "window", _window(self.window, "window"))
        if self.baseline is not None:
            object.__setattr__(self, "baseline", _window(self.baseline, "baseline"))
        for name in ("rest", "span", "threshold", "probability_scale"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise CircuitError(f"must be a finite number, got {getattr(self, name)!r}", path=name)
            if name != "rest" and value <= 0 and not (name == "threshold" and value == 0):
                raise CircuitError(f"must be > 0, got {value!r}", path=name)
            object.__setattr__(self, name, value)

    @property
    def neurons(self) -> tuple[str, str]:
        return (self.reverse, self.forward)
