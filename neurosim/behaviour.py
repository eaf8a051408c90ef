"""Behaviour from traces: reversal or forward movement, with a score and a probability.

The read-out itself (which neurons, which window, what scale) is data of the circuit
(:class:`neurosim.model.Readout`, the ``readouts`` section of a circuit file); this module
evaluates it on results, runs whole experiment tables and checks them against the facts
biology expects (a facts file, :func:`load_facts`).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from scipy.special import expit

from neurosim.errors import CircuitError
from neurosim.io.yaml import parse_spec, read_text
from neurosim.model import Circuit, Readout, unknown_name_message
from neurosim.record import Result
from neurosim.simulate import simulate

LABELS = ("reversal", "none", "forward")
#: expectations relative to another protocol ``than``, on our score minus its score:
#: beyond the read-out's threshold (the same margin that separates a behaviour from
#: ``none``) in one direction, or within it (``same_as``: "no effect", neither more nor
#: less), with how each reads in a sentence
RELATIONS = ("more_reversal_than", "less_reversal_than", "same_as")
RELATION_WORDS = {"more_reversal_than": "more reversal than",
                  "less_reversal_than": "less reversal than", "same_as": "same as"}


@dataclass(frozen=True)
class Behaviour:
    """What the animal does in one experiment, as read from its circuit."""

    score: float
    label: str
    p_reversal: float


def motor_output(readout: Readout, V: np.ndarray) -> np.ndarray:
    """(V − rest) / span clipped to [0, 1]."""
    return np.clip((np.asarray(V, dtype=float) - readout.rest) / readout.span, 0.0, 1.0)


def window_weights(t: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Weights a with Σ a·y = time average over the window of the linear interpolant of y."""
    start, end = window
    if t.size == 0 or t[0] > start or t[-1] < end:
        raise CircuitError(f"the run covers {t[0] if t.size else 0:g}..{t[-1] if t.size else 0:g} "
                           f"ms but the read-out window is {start:g}..{end:g} ms")
    a = np.zeros_like(t)
    for k in range(t.size - 1):
        lo, hi = max(t[k], start), min(t[k + 1], end)
        if hi <= lo:
            continue
        span = t[k + 1] - t[k]
        # ∫ over [lo, hi] of the hat functions of samples k and k+1
        u0, u1 = (lo - t[k]) / span, (hi - t[k]) / span
        a[k] += span * ((u1 - u0) - (u1 ** 2 - u0 ** 2) / 2)
        a[k + 1] += span * (u1 ** 2 - u0 ** 2) / 2
    return a / (end - start)


def score_weights(readout: Readout, t: np.ndarray) -> np.ndarray:
    """Weights a with score = Σ a·(out(reverse) − out(forward)) (window minus baseline)."""
    a = window_weights(t, readout.window)
    if readout.baseline is not None:
        a = a - window_weights(t, readout.baseline)
    return a


def contrast(readout: Readout, result: Result) -> np.ndarray:
    """out(reverse) − out(forward) at every sample; an ablated motor neuron gives 0."""
    def out(name):
        if name in result.neuron_names:
            return motor_output(readout, result.v(name))
        if name in result.metadata.get("ablated", ()):
            return np.zeros_like(result.t)
        raise CircuitError(f"read-out neuron {name!r} was not recorded; record it or all neurons")
    return out(readout.reverse) - out(readout.forward)


def classify(readout: Readout, result: Result) -> Behaviour:
    """Score, label and reversal probability of one run (see :class:`Readout`).

    Examples
    --------
    >>> import numpy as np
    >>> r = Result(np.array([0.0, 10.0]), np.array([[-45.0, -70.0], [-45.0, -70.0]]), ("REV", "FWD"))
    >>> classify(Readout("REV", "FWD", window=(0.0, 10.0)), r).label
    'reversal'
    """
    score = float(score_weights(readout, result.t) @ contrast(readout, result))
    label = ("reversal" if score > readout.threshold
             else "forward" if score < -readout.threshold else "none")
    # expit: 1/(1 + e^−z) without overflow for the large z a small probability_scale gives
    return Behaviour(score, label, float(expit(score / readout.probability_scale)))


@dataclass(frozen=True)
class ExperimentRow:
    """One protocol of an experiment table and the behaviour the circuit shows."""

    protocol: str
    description: str
    ablated: str
    score: float
    label: str
    p_reversal: float


def run_experiments(circuit: Circuit, protocols=None, *, readout: str = "behaviour",
                    progress=None, **simulate_options) -> tuple[list[ExperimentRow], dict]:
    """Run protocols (default: all) and read the behaviour of each.

    Returns the table rows and the results by protocol name.  ``simulate_options`` go to
    :func:`neurosim.simulate` (integrator, rtol, dt_out, ...).
    """
    spec = circuit.readout(readout)
    names = list(circuit.protocols) if protocols is None else list(protocols)
    if not names:
        raise CircuitError("the circuit defines no protocols to run")
    rows, results = [], {}
    for name in names:
        proto = circuit.protocol(name)
        result = simulate(circuit, name, **simulate_options)
        behaviour = classify(spec, result)
        lesions = list(proto.ablate) + [f"{k}x{v:g}" for k, v in proto.scale.items()]
        rows.append(ExperimentRow(name, proto.description, " ".join(lesions) or "-",
                                  behaviour.score, behaviour.label, behaviour.p_reversal))
        results[name] = result
        if progress:
            progress(1)
    return rows, results


def _fact_columns(row: ExperimentRow, checks) -> tuple[str, str]:
    """(expected, match) of a table row: its facts' expectations, and yes/no per fact."""
    mine = [c for c in checks or () if c.fact.protocol == row.protocol]
    expected = "; ".join(c.fact.expected + ("" if c.fact.verified else " [2nd-hand]")
                         for c in mine)
    match = "; ".join("-" if c.reproduced is None else "yes" if c.reproduced else "NO"
                      for c in mine)
    return expected, match


def write_table(rows: list[ExperimentRow], path, checks=None) -> None:
    """The experiment table as CSV (one row per protocol), with ``expected`` and
    ``match`` columns when fact ``checks`` are given."""
    fields = list(ExperimentRow.__dataclass_fields__) + (["expected", "match"] if checks else [])
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            out = asdict(row)
            if checks:
                out["expected"], out["match"] = _fact_columns(row, checks)
            writer.writerow(out)


def format_table(rows: list[ExperimentRow], checks=None) -> str:
    """A fixed-width text table; with fact ``checks``, what biology expects and whether
    the row matches it."""
    width = max(len("protocol"), *(len(r.protocol) for r in rows))
    head = f"{'protocol':<{width}}  {'lesion':<14} {'score':>7}  {'P(rev)':>6}  {'behaviour':<9}"
    lines = [head + ("  expected (biology)                      match" if checks else "")]
    for r in rows:
        line = (f"{r.protocol:<{width}}  {r.ablated:<14} {round(r.score, 3) + 0.0:>+7.3f}  "
                f"{r.p_reversal:>6.2f}  {r.label:<9}")
        if checks:
            expected, match = _fact_columns(r, checks)
            line += f"  {expected or '-':<40}{match}"
        lines.append(line.rstrip())
    return "\n".join(lines)


# --- facts: what biology expects ------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FactSpec(_Strict):
    id: Annotated[str, Field(min_length=1)]
    protocol: Annotated[str, Field(min_length=1)]
    expect: Literal[LABELS + RELATIONS]
    than: str | None = None
    statement: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(min_length=1)]
    verified: StrictBool


class _NotScorableSpec(_Strict):
    statement: str
    source: str
    verified: StrictBool
    why: str


class _FactsFileSpec(_Strict):
    facts: Annotated[list[_FactSpec], Field(min_length=1)]
    not_scorable: list[_NotScorableSpec] = []


@dataclass(frozen=True)
class Fact:
    """A behaviour biology expects under one protocol.

    ``expect`` is a label (``reversal``, ``forward``, ``none``) or a relation to the
    protocol ``than`` (``more_reversal_than``, ``less_reversal_than``: the scores differ
    by more than the read-out's threshold in that direction; ``same_as``: they differ by
    at most the threshold, "no effect").  ``verified`` is True when
    the statement was read in its primary source, False when it is quoted secondhand.
    """

    id: str
    protocol: str
    expect: str
    statement: str
    source: str
    verified: bool
    than: str | None = None

    @property
    def expected(self) -> str:
        """``"reversal"``, ``"more reversal than tap"`` or ``"same as tap"``."""
        if self.than is None:
            return self.expect
        return f"{RELATION_WORDS[self.expect]} {self.than}"

    @property
    def protocols(self) -> tuple[str, ...]:
        return (self.protocol,) if self.than is None else (self.protocol, self.than)


@dataclass(frozen=True)
class FactCheck:
    """A fact against an experiment table: reproduced (None if a protocol was not run)."""

    fact: Fact
    reproduced: bool | None
    evidence: str


def loads_facts(text: str, source: str = "<string>", protocols=None) -> list[Fact]:
    """Facts from YAML text (see ``circuits/data/tap_withdrawal_facts.yaml``); errors
    name the file, line and key.  With ``protocols`` (names, e.g. a circuit's), a fact
    about another protocol is an error too."""
    spec, locate = parse_spec(text, source, _FactsFileSpec, "a facts file")
    facts, seen = [], set()
    for k, item in enumerate(spec.facts):
        if item.id in seen:
            raise locate(CircuitError(f"duplicate fact id {item.id!r}"), f"facts[{k}].id")
        seen.add(item.id)
        if (item.expect in RELATIONS) != (item.than is not None):
            need = (f"'{item.expect}' needs than: PROTOCOL" if item.expect in RELATIONS
                    else f"'than' goes with {', '.join(RELATIONS[:-1])} or {RELATIONS[-1]}, "
                         f"not '{item.expect}'")
            raise locate(CircuitError(need), f"facts[{k}].expect")
        if item.than == item.protocol:
            what = ("is always the same as" if item.expect == "same_as" else "cannot differ from")
            raise locate(CircuitError(f"a protocol {what} itself: than is "
                                      f"{item.than!r}, the fact's own protocol"), f"facts[{k}].than")
        for key in ("protocol", "than"):
            name = getattr(item, key)
            if protocols is not None and name is not None and name not in protocols:
                raise locate(CircuitError(unknown_name_message("protocol", name, list(protocols))),
                             f"facts[{k}].{key}")
        facts.append(Fact(item.id, item.protocol, item.expect, item.statement, item.source,
                          item.verified, item.than))
    return facts


def load_facts(path, protocols=None) -> list[Fact]:
    """Read a facts file (see :func:`loads_facts`)."""
    return loads_facts(read_text(path, "facts file"), str(path), protocols)


def _signed(x: float) -> str:
    """+0.039, -0.007, and +0.000 rather than -0.000 for a tiny negative number."""
    return f"{round(x, 3) + 0.0:+.3f}"


def check_facts(facts, rows: list[ExperimentRow], threshold: float) -> list[FactCheck]:
    """Each fact against the table ``rows``; ``threshold`` is the read-out's."""
    by = {r.protocol: r for r in rows}
    checks = []
    for fact in facts:
        missing = [p for p in fact.protocols if p not in by]
        if missing:
            checks.append(FactCheck(fact, None, f"not run: {', '.join(missing)}"))
            continue
        row = by[fact.protocol]
        if fact.than is None:
            checks.append(FactCheck(fact, row.label == fact.expect,
                                    f"{row.label} (score {_signed(row.score)})"))
            continue
        diff = row.score - by[fact.than].score
        ok = (diff > threshold if fact.expect == "more_reversal_than"
              else diff < -threshold if fact.expect == "less_reversal_than"
              else abs(diff) <= threshold)   # same_as: neither more nor less
        checks.append(FactCheck(fact, ok, f"score {_signed(row.score)} vs "
                                          f"{_signed(by[fact.than].score)} ({_signed(diff)}; "
                                          f"threshold {threshold:g})"))
    return checks


def facts_summary(checks: list[FactCheck]) -> str:
    """'k of n facts reproduced (verified: a of b)', counting the facts that were run."""
    run = [c for c in checks if c.reproduced is not None]
    verified = [c for c in run if c.fact.verified]
    line = (f"{sum(c.reproduced for c in run)} of {len(run)} facts reproduced "
            f"(verified in the primary source: {sum(c.reproduced for c in verified)} of "
            f"{len(verified)})")
    if len(run) < len(checks):
        line += f"; {len(checks) - len(run)} not checked (protocol not run)"
    return line
