"""The one unit table of neurosim.

Every number inside the engine is in **mV, ms, nS, pF, pA** (and 1/mV for sigmoid
slopes).  These are mutually consistent: pF/nS = ms and nS·mV = pA, so no conversion
factor ever appears in a kernel.  This module turns user input such as ``"50 pF"``,
``"0.1 uS"`` or ``"0.1 /mV"`` into those units, and refuses a quantity of the wrong
dimension.

Examples
--------
>>> parse_quantity("0.004 nF", "capacitance")
4.0
>>> parse_quantity("0.1 uS", "conductance")
100.0
>>> parse_quantity(-70, "voltage")
-70.0
"""

from __future__ import annotations

import math
import re
import reprlib
from decimal import Decimal

#: dimension -> (engine unit symbol, SI base symbol, size of the engine unit in SI)
DIMENSIONS: dict[str, tuple[str, str, float]] = {
    "voltage": ("mV", "V", 1e-3),
    "time": ("ms", "s", 1e-3),
    "conductance": ("nS", "S", 1e-9),
    "capacitance": ("pF", "F", 1e-12),
    "current": ("pA", "A", 1e-12),
    "frequency": ("Hz", "Hz", 1.0),
    "inverse_voltage": ("1/mV", "/V", 1e3),
    "dimensionless": ("1", "", 1.0),
}

#: the engine unit of each dimension, for docs and HDF5 attributes
ENGINE_UNITS: dict[str, str] = {dim: spec[0] for dim, spec in DIMENSIONS.items()}

#: SI prefixes, exact (decimal): a conversion is then the correctly rounded value
_PREFIXES = {"f": Decimal("1e-15"), "p": Decimal("1e-12"), "n": Decimal("1e-9"),
             "u": Decimal("1e-6"), "µ": Decimal("1e-6"), "μ": Decimal("1e-6"),
             "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"), "M": Decimal("1e6")}

#: the longest string read as a quantity: matching _QUANTITY takes time quadratic in a
#: long run of spaces, and "-1.2345678901234567e-300 1/mV" is 30 characters
QUANTITY_MAX_LENGTH = 100

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def _unit_scale(unit: str, dimension: str) -> Decimal | None:
    """Size of ``unit`` in SI for ``dimension`` (exact), or None if it is not a unit of it."""
    base = DIMENSIONS[dimension][1]
    if dimension == "inverse_voltage":
        for lead in ("1/", "/"):
            if unit.startswith(lead):
                scale = _unit_scale(unit[len(lead):], "voltage")
                return None if scale is None else 1 / scale
        return None
    if dimension == "dimensionless":
        return Decimal(1) if unit in ("", "1") else None
    if dimension == "frequency":
        scales = {"Hz": 1, "kHz": 1000, "mHz": Decimal("1e-3"), "/s": 1, "1/s": 1,
                  "/ms": 1000, "1/ms": 1000}
        return Decimal(scales[unit]) if unit in scales else None
    if unit.endswith(base):
        prefix = unit[: len(unit) - len(base)]
        if prefix in _PREFIXES:
            return _PREFIXES[prefix]
    return None


def allowed_units(dimension: str) -> list[str]:
    """A few accepted spellings of ``dimension``, for error messages."""
    examples = {
        "voltage": ["mV", "V", "uV"], "time": ["ms", "s", "us"],
        "conductance": ["nS", "uS", "pS", "mS"], "capacitance": ["pF", "nF", "uF"],
        "current": ["pA", "nA", "fA"], "frequency": ["Hz", "kHz", "1/ms"],
        "inverse_voltage": ["1/mV", "/mV", "1/V"], "dimensionless": ["(no unit)"],
    }
    return examples[dimension]


#: repr of user values in messages, cut short: a value may be a 10 MB string or a long list
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = 6
_SHORT.maxdict = 4
_SHORT.maxlevel = 3


def short_repr(value: object) -> str:
    """``repr(value)`` shortened to about 60 characters per item, for error messages."""
    return _SHORT.repr(value)


def finite_float(value: object) -> float:
    """``value`` as a finite float, else ValueError saying what was given.

    ``float()`` of an integer beyond the float range raises OverflowError; that is
    reported as the non-finite number it is.
    """
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("must be a finite number, got an integer too large for a float "
                         "(more than 10^308)") from None
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {short_repr(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {short_repr(value)}")
    return number


def parse_quantity(value: object, dimension: str) -> float:
    """Convert ``value`` to the engine unit of ``dimension``.

    Parameters
    ----------
    value : float, int or str
        A bare number is taken to be in the engine unit already; a string is a number
        followed by a unit, e.g. ``"50 pF"``.
    dimension : str
        One of :data:`DIMENSIONS`.

    Returns
    -------
    float
        The value in the engine unit (mV, ms, nS, pF, pA, Hz or 1/mV).

    Raises
    ------
    ValueError
        The value is not a finite number, or its unit is not one of ``dimension``.
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    engine_unit = DIMENSIONS[dimension][0]
    if isinstance(value, bool):
        raise ValueError(f"expected a number in {engine_unit}, got the boolean {value}")
    if isinstance(value, (int, float)):
        return finite_float(value)
    if isinstance(value, str):
        if len(value) > QUANTITY_MAX_LENGTH:
            raise ValueError(f"cannot read {short_repr(value)} as a quantity: it is longer than "
                             f"{QUANTITY_MAX_LENGTH} characters")
        match = _QUANTITY.match(value)
        if match is None:
            example = "a number, e.g. '1.5'" if dimension == "dimensionless" else \
                f"a number and a unit, e.g. '1.5 {engine_unit}'"
            raise ValueError(f"cannot read {short_repr(value)} as a quantity; write {example}")
        unit = match.group(2).replace(" ", "")
        if unit in ("", engine_unit):
            scale = Decimal(1)
        else:
            si = _unit_scale(unit, dimension)
            if si is None:
                noun = ("dimensionless number" if dimension == "dimensionless"
                        else dimension.replace("_", " "))
                article = "an" if noun[0] in "aeiou" else "a"
                raise ValueError(
                    f"{short_repr(value)} is not {article} {noun}; allowed units: "
                    f"{', '.join(allowed_units(dimension))}")
            # in decimal, so that the result is the correctly rounded value of what was
            # written: "0.004 nF" is 4.0 pF, where 0.004 * 1000.0 is 4.000000000000001
            scale = si / Decimal(repr(DIMENSIONS[dimension][2]))
        try:
            number = float(Decimal(match.group(1)) * scale)
        except ArithmeticError:  # beyond Decimal's exponent range: far outside a float's
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {short_repr(value)}")
        return number
    raise ValueError(
        f"expected a number in {engine_unit} or a string such as '1.5 {engine_unit}', "
        f"got {type(value).__name__} {short_repr(value)}")
