"""Fit the tap-withdrawal circuit on some facts and validate it on the others.

Makes ``circuits/tap_withdrawal_fitted.yaml`` from ``circuits/tap_withdrawal.yaml``:
every chemical weight and gap conductance is free in the source model's range 0…3 nS
(signs, sigmoids, membranes and the motor synapses as in the source), fitted with
CMA-ES then L-BFGS-B to the TRAINING facts of ``circuits/data/tap_withdrawal_facts.yaml``
(plus the control "no stimulus → no behaviour").  The HELD-OUT facts are not seen by
the fit; the script reports them separately, as they come out.

    python scripts/fit_tap_withdrawal.py [--seed 0] [--generations 80] [--replicates 4] [--out FILE]

``--replicates K`` repeats the fit with the next K seeds (their circuits are not kept)
and reports how often the held-out facts come out right: one fit is one draw.

Each fact becomes a qualitative target (as in circuits/data/tap_withdrawal_behaviour.csv):
a label is a reversal probability of 0.9 (reversal), 0.1 (forward) or 0.5 (none) out of
a pseudo-count of 20 animals; "more/less reversal than P" is P's target score ± 0.15
(three read-out thresholds).  These are encodings of statements, not measured numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import neurosim as ns
from neurosim.behaviour import check_facts, facts_summary, format_table, load_facts, run_experiments
from neurosim.fit.run import run_fit
from neurosim.fit.spec import loads_fit_spec
from neurosim.fit.targets import BehaviourTarget

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "circuits" / "tap_withdrawal.yaml"
FACTS = ROOT / "circuits" / "data" / "tap_withdrawal_facts.yaml"
OUT = ROOT / "circuits" / "tap_withdrawal_fitted.yaml"

#: the facts the fit sees; every other fact in FACTS is held out.  The held-out ones are
#: the two ablations of Chalfie et al. 1985 (AVD for anterior, PVC for posterior touch):
#: whether a circuit fitted to intact responses predicts what a lesion does.
TRAINING = ("tap_reversal", "anterior_reversal", "posterior_forward", "no_PLM_more_reversal")

#: score of each label's target (a reversal probability of 0.9 at the read-out's scale
#: 0.1 is a score of 0.22) and the shift that encodes "more/less reversal than"
LABEL_SCORE = {"reversal": 0.1 * math.log(9.0), "none": 0.0, "forward": -0.1 * math.log(9.0)}
RELATION_SHIFT = 0.15
PSEUDO_COUNT = 20

FIT_SPEC = """
free:
  - {select: "synapses[post=AVA].w", bounds: [0, 3]}
  - {select: "synapses[post=AVD].w", bounds: [0, 3]}
  - {select: "synapses[post=PVC].w", bounds: [0, 3]}
  - {select: "synapses[post=AVB].w", bounds: [0, 3]}
  - {select: "synapses[post=DVA].w", bounds: [0, 3]}
  - {select: "gap_junctions[*].g", bounds: [0, 3]}
simulation: {integrator: dopri5, rtol: 1.0e-6, dt_out: 5.0}
optimizer: {method: cmaes, generations: GENERATIONS, seed: SEED, sigma0: 0.3}
"""


def target_scores(facts) -> dict[str, float]:
    """The score each fact's protocol should reach (relations after their reference)."""
    scores = {}
    for fact in sorted(facts, key=lambda f: f.than is not None):
        if fact.than is None:
            scores[fact.protocol] = LABEL_SCORE[fact.expect]
        else:
            sign = 1.0 if fact.expect == "more_reversal_than" else -1.0
            scores[fact.protocol] = scores[fact.than] + sign * RELATION_SHIFT
    return scores


def targets_from_facts(facts) -> list[BehaviourTarget]:
    return [BehaviourTarget(protocol, "reversal_probability", 1 / (1 + math.exp(-score / 0.1)),
                            n=PSEUDO_COUNT, source="circuits/data/tap_withdrawal_facts.yaml",
                            note="qualitative encoding")
            for protocol, score in target_scores(facts).items()]


def header(fit, seed, generations) -> str:
    r = fit.report.result
    lines = [
        "The C. elegans tap-withdrawal circuit of circuits/tap_withdrawal.yaml with its chemical",
        "weights and gap conductances fitted to behavioural facts; everything else (neurons,",
        "signs, sigmoids, motor synapses, stimuli, protocols, read-out) is the source's.",
        "Made by scripts/fit_tap_withdrawal.py: do not edit by hand, rerun the script.",
        "",
        "Training facts (circuits/data/tap_withdrawal_facts.yaml): " + ", ".join(TRAINING[:2]) + ",",
        "  " + ", ".join(TRAINING[2:]) + ", plus the control 'rest -> none'.",
        "Held out (not seen by the fit): " + ", ".join(c.fact.id for c in fit.held_out) + ".",
        "Targets are qualitative encodings (reversal p 0.9, forward p 0.1, relations +-0.15",
        f"in score, pseudo-count n = {PSEUDO_COUNT}), not measured frequencies.",
        f"Fit: {r.method}, seed {seed}, {generations} generations, loss {r.loss:.4g} after "
        f"{r.evaluations} evaluations, {fit.wall_s:.0f} s wall time.",
        "Training: " + facts_summary(fit.training),
        "Held out: " + facts_summary(fit.held_out),
    ]
    for check in fit.held_out:
        lines.append(f"  held out {check.fact.id}: {'yes' if check.reproduced else 'NO'} "
                     f"({check.evidence})")
    lines.append("Multistable without a stimulus (a second stable rest; runs start from the one "
                 "reached from E_L): " + (", ".join(fit.multistable) or "none found") + ".")
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in lines)


@dataclass
class Outcome:
    """One fit and how its circuit does on every fact."""

    fitted: ns.Circuit
    report: object
    wall_s: float
    rows: list
    training: list
    held_out: list
    multistable: list   # protocols with a second stable rest without a stimulus


def fit_and_check(circuit, facts, seed, generations, progress=False) -> Outcome:
    """Fit on the training facts with ``seed``; check every fact on the fitted circuit."""
    training = [f for f in facts if f.id in TRAINING]
    held_out = [f for f in facts if f.id not in TRAINING]
    spec = loads_fit_spec(FIT_SPEC.replace("GENERATIONS", str(generations))
                          .replace("SEED", str(seed)), "fit_tap_withdrawal.py")
    started = time.perf_counter()
    report = run_fit(circuit, targets_from_facts(training), spec, progress=progress)
    wall = time.perf_counter() - started
    fitted = report.circuit.replace(name="tap withdrawal (fitted to behavioural facts)")
    with warnings.catch_warnings():  # multistable protocols are reported, not warned about
        warnings.simplefilter("ignore", ns.RestWarning)
        rows, _ = run_experiments(fitted, dt_out=1.0)
    several = [p for p in fitted.protocols if ns.rest_state(fitted, p).other_rests > 0]
    threshold = fitted.readout().threshold
    return Outcome(fitted, report, wall, rows, check_facts(training, rows, threshold),
                   check_facts(held_out, rows, threshold), several)


def replicate_row(seed, outcome: Outcome) -> str:
    """A markdown row: seed, loss, evaluations, training facts, each held-out fact, and the
    protocols whose circuit is multistable."""
    r = outcome.report.result
    train = outcome.training
    cells = [str(seed) + (" (shipped)" if seed == 0 else ""), f"{r.loss:.2g}", str(r.evaluations),
             f"{sum(c.reproduced for c in train)} of {len(train)}"]
    cells += [f"{'yes' if c.reproduced else '**no**'} ({c.evidence.split(' (')[0]})"
              for c in outcome.held_out]
    cells.append(", ".join(outcome.multistable) or "none found")
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generations", type=int, default=80)
    parser.add_argument("--replicates", type=int, default=0,
                        help="also fit with the next K seeds and report their held-out facts")
    parser.add_argument("--out", default=str(OUT), help="fitted circuit (YAML)")
    parser.add_argument("--docs", action="store_true",
                        help="write the replicate table into docs/tap_withdrawal.md")
    args = parser.parse_args(argv)

    circuit = ns.load_circuit(SOURCE)
    facts = load_facts(FACTS)
    unknown = set(TRAINING) - {f.id for f in facts}
    if unknown:
        sys.exit(f"unknown training facts: {sorted(unknown)}")
    fit = fit_and_check(circuit, facts, args.seed, args.generations, progress=True)
    report = fit.report
    print(format_table(fit.rows, fit.training + fit.held_out))
    print(f"\nfit: {report.result.method}, seed {args.seed}, loss {report.result.loss:.4g}, "
          f"{report.result.evaluations} evaluations, {fit.wall_s:.0f} s")
    print("training: " + facts_summary(fit.training))
    print("held out: " + facts_summary(fit.held_out))
    print("multistable without a stimulus: " + (", ".join(fit.multistable) or "none found"))
    Path(args.out).write_text(header(fit, args.seed, args.generations) + ns.dump_circuit(fit.fitted),
                              encoding="utf-8")
    print(f"-> {args.out}")
    table = ["| seed | loss | evaluations | training facts | "
             + " | ".join(f"held out: `{c.fact.id}`" for c in fit.held_out)
             + " | multistable without a stimulus |",
             "|---|---|---|---|" + "---|" * (len(fit.held_out) + 1),
             replicate_row(args.seed, fit)]
    for seed in range(args.seed + 1, args.seed + args.replicates + 1):
        table.append(replicate_row(seed, fit_and_check(circuit, facts, seed, args.generations)))
    print("\n".join(table))
    if args.docs:
        from tap_withdrawal import DOC
        marks = ("<!-- generated by scripts/fit_tap_withdrawal.py: start -->",
                 "<!-- generated by scripts/fit_tap_withdrawal.py: end -->")
        text = DOC.read_text(encoding="utf-8")
        head, rest = text.split(marks[0])
        _, tail = rest.split(marks[1])
        DOC.write_text(f"{head}{marks[0]}\n" + "\n".join(table) + f"\n{marks[1]}{tail}",
                       encoding="utf-8")
        print(f"-> {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
