"""The one unit table (neurosim/units.py): conversions checked against hand-computed
values, the engine units' consistency, and the refusals, each in one line.

(Errors as the YAML loader reports them, with file, line and key, are in test_io_yaml.)"""

import doctest

import pytest

import neurosim.units as units
from neurosim.units import (DIMENSIONS, ENGINE_UNITS, QUANTITY_MAX_LENGTH, allowed_units,
                            finite_float, parse_quantity, short_repr)

#: (written, dimension, value in the engine unit), each worked out by hand from the SI prefixes
CONVERSIONS = [
    ("50 pF", "capacitance", 50.0),
    ("0.004 nF", "capacitance", 4.0),           # 0.004 · 1000 pF
    ("1 uF", "capacitance", 1e6),
    ("2000 fF", "capacitance", 2.0),
    (".5 nF", "capacitance", 500.0),
    ("+2 pF", "capacitance", 2.0),
    ("1e-3 nF", "capacitance", 1.0),
    ("0.1 uS", "conductance", 100.0),           # 0.1 · 1000 nS
    ("0.1 µS", "conductance", 100.0),           # micro sign, U+00B5
    ("0.1 μS", "conductance", 100.0),           # Greek mu, U+03BC
    ("500 pS", "conductance", 0.5),
    ("1 mS", "conductance", 1e6),
    ("2 S", "conductance", 2e9),
    ("-70 mV", "voltage", -70.0),
    ("-0.07 V", "voltage", -70.0),
    ("500 uV", "voltage", 0.5),
    ("3 kV", "voltage", 3e6),
    ("2 s", "time", 2000.0),
    ("250 us", "time", 0.25),
    ("1 nA", "current", 1000.0),
    ("300 fA", "current", 0.3),
    ("10 Hz", "frequency", 10.0),
    ("1 kHz", "frequency", 1000.0),
    ("5 mHz", "frequency", 0.005),
    ("1/ms", "frequency", 1000.0),              # read as the number 1, then the unit /ms
    ("4 /s", "frequency", 4.0),
    ("0.1 /mV", "inverse_voltage", 0.1),
    ("1 1/mV", "inverse_voltage", 1.0),
    ("100 1/V", "inverse_voltage", 0.1),        # 100 per volt = 0.1 per millivolt
    ("1 /uV", "inverse_voltage", 1000.0),
    ("0.5", "dimensionless", 0.5),
    ("0.5 1", "dimensionless", 0.5),
    ("50pF", "capacitance", 50.0),              # spaces are optional
    ("  50   pF  ", "capacitance", 50.0),
    ("1 p F", "capacitance", 1.0),              # and removed inside the unit
]


@pytest.mark.parametrize("written,dimension,expected", CONVERSIONS, ids=lambda x: str(x))
def test_quantities_convert_to_the_engine_unit(written, dimension, expected):
    # within the rounding of one multiplication and one division of floats
    assert parse_quantity(written, dimension) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("dimension", list(DIMENSIONS))
def test_bare_numbers_and_the_engine_unit_itself_are_taken_as_they_are(dimension):
    assert parse_quantity(-70, dimension) == -70.0 and type(parse_quantity(3, dimension)) is float
    assert parse_quantity(0.25, dimension) == 0.25
    unit = ENGINE_UNITS[dimension]
    assert parse_quantity(f"0.25 {unit}" if unit != "1" else "0.25", dimension) == 0.25


def test_the_engine_units_are_consistent_so_kernels_need_no_factor():
    """mV, ms, nS, pF, pA: pF/nS = ms (a time constant C/g_L) and nS·mV = pA (a current)."""
    assert ENGINE_UNITS == {"voltage": "mV", "time": "ms", "conductance": "nS",
                            "capacitance": "pF", "current": "pA", "frequency": "Hz",
                            "inverse_voltage": "1/mV", "dimensionless": "1"}
    si = {dim: spec[2] for dim, spec in DIMENSIONS.items()}
    assert si["capacitance"] / si["conductance"] == pytest.approx(si["time"], rel=1e-15)
    assert si["conductance"] * si["voltage"] == pytest.approx(si["current"], rel=1e-15)
    assert si["inverse_voltage"] * si["voltage"] == 1.0


@pytest.mark.parametrize("dimension", list(DIMENSIONS))
def test_every_unit_an_error_message_offers_is_accepted(dimension):
    for unit in allowed_units(dimension):
        if unit != "(no unit)":
            assert parse_quantity(f"1 {unit}", dimension) > 0, unit


@pytest.mark.parametrize("value,dimension,match", [
    ("3 mV", "capacitance", r"^'3 mV' is not a capacitance; allowed units: pF, nF, uF$"),
    ("3 pF", "inverse_voltage", r"^'3 pF' is not an inverse voltage; allowed units: 1/mV, /mV, 1/V$"),
    ("1 Hz", "time", r"^'1 Hz' is not a time; allowed units: ms, s, us$"),
    ("0.1 mV", "inverse_voltage", r"is not an inverse voltage"),
    ("1 xS", "conductance", r"is not a conductance"),             # no such prefix
    ("lots", "capacitance",
     r"^cannot read 'lots' as a quantity; write a number and a unit, e.g. '1.5 pF'$"),
    ("1" * (QUANTITY_MAX_LENGTH + 1), "voltage", r"it is longer than 100 characters$"),
    (True, "capacitance", r"^expected a number in pF, got the boolean True$"),
    (None, "capacitance", r"^expected a number in pF or a string such as '1.5 pF', got NoneType None$"),
    ([1], "voltage", r"^expected a number in mV or a string such as '1.5 mV', got list \[1\]$"),
    ("1e999 pF", "capacitance", r"^must be a finite number, got '1e999 pF'$"),
    (float("nan"), "voltage", r"^must be a finite number, got nan$"),
    (float("-inf"), "voltage", r"^must be a finite number, got -inf$"),
    (10**400, "capacitance",
     r"^must be a finite number, got an integer too large for a float \(more than 10\^308\)$"),
    ("1", "charge", r"^unknown dimension 'charge'; known: voltage, time, conductance, "),
])
def test_bad_quantities_are_refused_in_one_line(value, dimension, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_quantity(value, dimension)
    assert "\n" not in str(info.value)


def test_finite_float_says_what_it_was_given():
    assert finite_float("2.5") == 2.5 and finite_float(3) == 3.0
    with pytest.raises(ValueError, match=r"^must be a number, got 'abc'$"):
        finite_float("abc")
    with pytest.raises(ValueError, match=r"^must be a finite number, got inf$"):
        finite_float(float("inf"))


def test_values_in_messages_are_cut_short():
    """A value may be a 10 MB string or a long list: messages show about 60 characters."""
    assert short_repr("pF") == "'pF'"
    assert len(short_repr("x" * 10_000_000)) <= 60 and "..." in short_repr("x" * 1000)
    assert len(short_repr(list(range(10_000)))) < 60


def test_the_module_examples_run_as_written():
    failed, attempted = doctest.testmod(units)
    assert attempted >= 3 and failed == 0


@pytest.mark.parametrize("seed", range(3))
def test_conversions_are_correctly_rounded(seed):
    """A written quantity converts to the float nearest its exact value (Fraction
    arithmetic as the reference), not to the product of two rounded floats."""
    import random
    from fractions import Fraction
    rng = random.Random(seed)
    cases = [("nF", "capacitance", Fraction(1000)), ("uS", "conductance", Fraction(1000)),
             ("V", "voltage", Fraction(1000)), ("us", "time", Fraction(1, 1000)),
             ("fA", "current", Fraction(1, 1000)), ("1/V", "inverse_voltage", Fraction(1, 1000)),
             ("/nV", "inverse_voltage", Fraction(10 ** 6)), ("mHz", "frequency", Fraction(1, 1000))]
    for _ in range(300):
        digits = f"{rng.randint(0, 10 ** rng.randint(1, 9))}e-{rng.randint(0, 12)}"
        unit, dimension, factor = rng.choice(cases)
        assert parse_quantity(f"{digits} {unit}", dimension) == float(Fraction(digits) * factor)
