"""Fit the tap-withdrawal circuit on some facts and validate it on the others.

Makes ``circuits/tap_withdrawal_fitted.yaml`` from ``circuits/tap_withdrawal.yaml`` (by
default; ``--source``, ``--facts`` and ``--out`` fit another circuit: for the
left/right-resolved ``circuits/tap_withdrawal_lr.yaml`` they default to
``circuits/data/tap_withdrawal_lr_facts.yaml`` and ``circuits/tap_withdrawal_lr_fitted.yaml``,
any other source needs both named): every chemical weight and gap
conductance between the circuit's own neurons is free in the source model's range
0…3 nS, fitted with CMA-ES then L-BFGS-B to the TRAINING facts of the facts file (plus
the control "no stimulus → no behaviour").  Signs, sigmoids, membranes and the motor
synapses (onto the read-out neurons) stay the source's, and so do the connections that
cannot act: synapses onto voltage-clamped (sensory) neurons and gap junctions between
two of them.  The HELD-OUT facts are not seen by the fit; the script reports them
separately, as they come out.

    python scripts/fit_tap_withdrawal.py [--seed 0] [--generations 80] [--replicates 4]
        [--source CIRCUIT [--facts FACTS] [--out FILE]] [--training ID,ID,...]
    python scripts/fit_tap_withdrawal.py --replicates 4 --docs [--only lumped|lr]

``--replicates K`` repeats the fit with the next K seeds (their circuits are not kept)
and reports how often the held-out facts come out right: one fit is one draw.

``--docs`` runs the fits docs/tap_withdrawal.md documents (:data:`DOC_FITS`), writes
their fitted circuits and the generated sections of the page: the class-lumped fit
(the first section) and the left/right-resolved ones (the second): fit A holds the
one-sided PLM ablations out (its seed 0 is ``circuits/tap_withdrawal_lr_fitted.yaml``),
fit B trains on them, fit C, a control, on their mirror image (PLML for PLMR; no source
claims it); the circuits of B and C are not kept.  ``--only`` runs one of the two
sections' fits (all of them: about 4 minutes on 2 cores, the lumped one under one).

Each fact becomes a qualitative target (as in circuits/data/tap_withdrawal_behaviour.csv):
a label is a reversal probability of 0.9 (reversal), 0.1 (forward) or 0.5 (none) out of
a pseudo-count of 20 animals; "more/less reversal than P" is P's target score ± 0.15
(three read-out thresholds), "same as P" is P's target score.  These are encodings of
statements, not measured numbers.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, replace
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
LR_SOURCE = ROOT / "circuits" / "tap_withdrawal_lr.yaml"
LR_FACTS = ROOT / "circuits" / "data" / "tap_withdrawal_lr_facts.yaml"
LR_OUT = ROOT / "circuits" / "tap_withdrawal_lr_fitted.yaml"

#: the facts the fit sees; every other fact in FACTS is held out.  The held-out ones are
#: the two ablations of Chalfie et al. 1985 (AVD for anterior, PVC for posterior touch):
#: whether a circuit fitted to intact responses predicts what a lesion does.
TRAINING = ("tap_reversal", "anterior_reversal", "posterior_forward", "no_PLM_more_reversal")
#: the one-sided PLM ablations of the left/right-resolved facts (LR_FACTS): held out by
#: the documented L/R fit (does a fit on the rest predict them?), trained on by the
#: second documented L/R fit (can the circuit show them at all?)
ONE_SIDED_PLM = ("no_PLMR_more_reversal", "no_PLML_no_effect")

#: score of each label's target (a reversal probability of 0.9 at the read-out's scale
#: 0.1 is a score of 0.22) and the shift that encodes "more/less reversal than"
LABEL_SCORE = {"reversal": 0.1 * math.log(9.0), "none": 0.0, "forward": -0.1 * math.log(9.0)}
RELATION_SHIFT = 0.15
RELATION_SIGN = {"more_reversal_than": 1.0, "less_reversal_than": -1.0, "same_as": 0.0}
PSEUDO_COUNT = 20

FIT_SPEC = """
free:
FREE
simulation: {integrator: dopri5, rtol: 1.0e-6, dt_out: 5.0}
optimizer: {method: cmaes, generations: GENERATIONS, seed: SEED, sigma0: 0.3}
"""


def free_selectors(circuit) -> list[str]:
    """What the fit frees: the weights of the synapses onto each neuron that is neither
    voltage-clamped nor a read-out (motor) neuron, in the circuit's order, and the
    conductance of every gap junction with such a neuron at one end or both (a synapse
    onto a clamped neuron or a gap junction between two clamped ones cannot act)."""
    readout = circuit.readout()
    fixed = {n.name for n in circuit.neurons if n.clamp is not None}
    motor = {readout.reverse, readout.forward}
    posts = [n.name for n in circuit.neurons if n.name not in fixed | motor]
    gaps = [g for g in circuit.gap_junctions if not {g.a, g.b} <= fixed]
    return ([f"synapses[post={name}].w" for name in posts]
            + [f"gap_junctions[{g.a}-{g.b}].g" for g in gaps])


def fit_spec(circuit, seed, generations):
    free = "\n".join(f'  - {{select: "{s}", bounds: [0, 3]}}' for s in free_selectors(circuit))
    return loads_fit_spec(FIT_SPEC.replace("FREE", free).replace("GENERATIONS", str(generations))
                          .replace("SEED", str(seed)), "fit_tap_withdrawal.py")


def target_scores(facts) -> dict[str, float]:
    """The score each fact's protocol should reach (relations after their reference)."""
    scores = {}
    for fact in sorted(facts, key=lambda f: f.than is not None):
        if fact.than is None:
            scores[fact.protocol] = LABEL_SCORE[fact.expect]
        elif fact.than not in scores:
            raise SystemExit(f"training fact {fact.id} ({fact.expected}) needs a training fact "
                             f"that gives {fact.than} a label")
        else:
            scores[fact.protocol] = scores[fact.than] + RELATION_SIGN[fact.expect] * RELATION_SHIFT
    return scores


def targets_from_facts(facts, source=FACTS) -> list[BehaviourTarget]:
    return [BehaviourTarget(protocol, "reversal_probability", 1 / (1 + math.exp(-score / 0.1)),
                            n=PSEUDO_COUNT, source=relative(source), note="qualitative encoding")
            for protocol, score in target_scores(facts).items()]


def relative(path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


def training_lines(facts, training) -> list[str]:
    """'Training facts (FILE): a, b,' then two ids a line, the last ending with the control."""
    chunks = [training[k:k + 2] for k in range(0, len(training), 2)]
    lines = [("  " if k else f"Training facts ({relative(facts)}): ") + ", ".join(chunk) + ","
             for k, chunk in enumerate(chunks)]
    lines[-1] += " plus the control 'rest -> none'."
    return lines


def header(fit, seed, generations, source=SOURCE, facts=FACTS, training=TRAINING) -> str:
    r = fit.report.result
    lumped = Path(source).resolve() == SOURCE
    lines = [
        f"The C. elegans tap-withdrawal circuit of {relative(source)} with its chemical",
        "weights and gap conductances fitted to behavioural facts; everything else (neurons,",
        "signs, sigmoids, motor synapses, stimuli, protocols, read-out) is the source's.",
    ]
    if not lumped:
        lines += ["Not fitted either, since they cannot act: synapses onto the voltage-clamped",
                  "sensory neurons and gap junctions between two of them."]
    lines += [
        "Made by scripts/fit_tap_withdrawal.py: do not edit by hand, rerun the script.",
        "",
        *training_lines(facts, training),
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


def fit_and_check(circuit, facts, seed, generations, progress=False, training=TRAINING,
                  name="tap withdrawal (fitted to behavioural facts)",
                  source=FACTS) -> Outcome:
    """Fit on the ``training`` facts with ``seed``; check every fact on the fitted circuit."""
    unknown = set(training) - {f.id for f in facts}
    if unknown:
        raise SystemExit(f"unknown training facts: {sorted(unknown)}")
    training_facts = [f for f in facts if f.id in training]
    held_out = [f for f in facts if f.id not in training]
    spec = fit_spec(circuit, seed, generations)
    started = time.perf_counter()
    report = run_fit(circuit, targets_from_facts(training_facts, source), spec, progress=progress)
    wall = time.perf_counter() - started
    fitted = report.circuit.replace(name=name)
    with warnings.catch_warnings():  # multistable protocols are reported, not warned about
        warnings.simplefilter("ignore", ns.RestWarning)
        rows, _ = run_experiments(fitted, dt_out=1.0)
    several = [p for p in fitted.protocols if ns.rest_state(fitted, p).other_rests > 0]
    threshold = fitted.readout().threshold
    return Outcome(fitted, report, wall, rows, check_facts(training_facts, rows, threshold),
                   check_facts(held_out, rows, threshold), several)


def held_out_cell(check) -> str:
    """'yes (score +0.039 vs +0.220)' or '**no** (...)' of one held-out fact."""
    return f"{'yes' if check.reproduced else '**no**'} ({check.evidence.split(' (')[0]})"


def replicate_row(seed, outcome: Outcome, shipped=0) -> str:
    """A markdown row: seed, loss, evaluations, training facts, each held-out fact, and the
    protocols whose circuit is multistable; ``shipped``: the seed of the shipped circuit."""
    r = outcome.report.result
    train = outcome.training
    cells = [str(seed) + (" (shipped)" if seed == shipped else ""), f"{r.loss:.2g}",
             str(r.evaluations), f"{sum(c.reproduced for c in train)} of {len(train)}"]
    cells += [held_out_cell(c) for c in outcome.held_out]
    cells.append(", ".join(outcome.multistable) or "none found")
    return "| " + " | ".join(cells) + " |"


def replicate_table(seed, outcomes, shipped=0) -> list[str]:
    """The markdown table of the fits ``outcomes`` (seeds ``seed``, ``seed + 1``, ...)."""
    held_out = outcomes[0].held_out
    return (["| seed | loss | evaluations | training facts | "
             + " | ".join(f"held out: `{c.fact.id}`" for c in held_out)
             + " | multistable without a stimulus |",
             "|---|---|---|---|" + "---|" * (len(held_out) + 1)]
            + [replicate_row(seed + k, o, shipped) for k, o in enumerate(outcomes)])


def tally(seed, outcomes) -> str:
    """How often each held-out fact came out right across the fits, how often both
    one-sided PLM facts did together, and by how much removing PLMR and removing PLML
    differ in each fit."""
    n = len(outcomes)
    parts = [f"`{c.fact.id}` {sum(o.held_out[k].reproduced for o in outcomes)} of {n}"
             for k, c in enumerate(outcomes[0].held_out)]
    line = "Held out, reproduced in: " + "; ".join(parts) + "."
    ids = [c.fact.id for c in outcomes[0].held_out]
    if all(f in ids for f in ONE_SIDED_PLM):
        both = sum(all(c.reproduced for c in o.held_out if c.fact.id in ONE_SIDED_PLM)
                   for o in outcomes)
        line += f" Both one-sided PLM facts together: {both} of {n}."
    differences = []
    for o in outcomes:
        score = {r.protocol: r.score for r in o.rows}
        if {"tap_no_PLMR", "tap_no_PLML"} <= set(score):
            difference = score["tap_no_PLMR"] - score["tap_no_PLML"]
            differences.append(f"{round(difference, 3) + 0.0:+.3f}")
    if differences:
        line += (f" Score of `tap_no_PLMR` minus `tap_no_PLML`, seeds {seed}–{seed + n - 1}: "
                 + ", ".join(differences) + ".")
    return line


def swap_sides(text: str) -> str:
    """PLML for PLMR and PLMR for PLML."""
    return re.sub(r"PLM([LR])", lambda m: "PLM" + {"L": "R", "R": "L"}[m[1]], text)


def mirrored(facts) -> list:
    """The facts with the one-sided PLM ablations swapped (PLML's for PLMR's): a control
    that no source claims, to see whether the anatomy favours one side."""
    out = []
    for fact in facts:
        if "PLML" in fact.protocol or "PLMR" in fact.protocol:
            fact = replace(fact, id=swap_sides(fact.id), protocol=swap_sides(fact.protocol),
                           statement="Mirror image, no source's claim: "
                                     + swap_sides(fact.statement),
                           source="(the mirror image of) " + fact.source)
        out.append(fact)
    return out


@dataclass(frozen=True)
class DocFit:
    """A fit docs/tap_withdrawal.md documents: what it fits on what, where it goes."""

    source: Path
    facts: Path
    out: Path | None          # None: the circuits are not kept
    training: tuple[str, ...]
    name: str                 # of the fitted circuit
    section: int              # the k-th section of this script on the page
    title: str = ""           # above its table, when a section holds several fits
    mirror: bool = False      # fit the mirror image of the one-sided PLM facts (mirrored)


#: docs/tap_withdrawal.md's fits, by --only name; each name's fits share one section
DOC_FITS = {
    "lumped": [DocFit(SOURCE, FACTS, OUT, TRAINING,
                      "tap withdrawal (fitted to behavioural facts)", 0)],
    "lr": [DocFit(LR_SOURCE, LR_FACTS, LR_OUT, TRAINING,
                  "tap withdrawal, left/right-resolved (fitted to behavioural facts)", 1,
                  "**Fit A**, the one-sided PLM ablations held out (seed 0 is "
                  "`circuits/tap_withdrawal_lr_fitted.yaml`):"),
           DocFit(LR_SOURCE, LR_FACTS, None, TRAINING + ONE_SIDED_PLM,
                  "tap withdrawal, left/right-resolved (fitted to behavioural facts)", 1,
                  "**Fit B**, the one-sided PLM ablations trained on (circuits not kept):"),
           DocFit(LR_SOURCE, LR_FACTS, None, TRAINING + tuple(map(swap_sides, ONE_SIDED_PLM)),
                  "tap withdrawal, left/right-resolved (fitted to behavioural facts)", 1,
                  "**Fit C**, a control: trained on the mirror image of the one-sided facts "
                  "(removing PLML raises reversals, removing PLMR does not; no source says "
                  "so; circuits not kept):", mirror=True)],
}


def run_one(doc: DocFit, seed, generations, replicates, progress=True) -> list[str]:
    """Fit ``doc`` with ``seed`` (and ``replicates`` more seeds), print what came out,
    write the fitted circuit of ``seed``; returns the markdown of the fits' table."""
    circuit = ns.load_circuit(doc.source)
    facts = load_facts(doc.facts, protocols=circuit.protocols)
    if doc.mirror:
        facts = mirrored(facts)
    fit = fit_and_check(circuit, facts, seed, generations, progress=progress,
                        training=doc.training, name=doc.name, source=doc.facts)
    report = fit.report
    print(format_table(fit.rows, fit.training + fit.held_out))
    print(f"\nfit: {report.result.method}, seed {seed}, loss {report.result.loss:.4g}, "
          f"{report.result.evaluations} evaluations, {fit.wall_s:.0f} s")
    print("training: " + facts_summary(fit.training))
    print("held out: " + facts_summary(fit.held_out))
    print("multistable without a stimulus: " + (", ".join(fit.multistable) or "none found"))
    if doc.out is not None:
        Path(doc.out).write_text(header(fit, seed, generations, doc.source, doc.facts,
                                        doc.training) + ns.dump_circuit(fit.fitted),
                                 encoding="utf-8")
        print(f"-> {doc.out}")
    outcomes = [fit]
    for other in range(seed + 1, seed + replicates + 1):
        outcomes.append(fit_and_check(circuit, facts, other, generations, training=doc.training,
                                      name=doc.name, source=doc.facts))
        print(f"seed {other}: {outcomes[-1].wall_s:.0f} s", flush=True)
    table = replicate_table(seed, outcomes, shipped=0 if doc.out is not None else None)
    if doc.section > 0:   # the left/right-resolved section also counts the held-out facts
        table += ["", tally(seed, outcomes)]
    print("\n".join(table))
    return table


def write_section(k: int, lines: list[str]) -> None:
    """Replace the ``k``-th section of this script on docs/tap_withdrawal.md."""
    from tap_withdrawal import DOC
    marks = ("<!-- generated by scripts/fit_tap_withdrawal.py: start -->",
             "<!-- generated by scripts/fit_tap_withdrawal.py: end -->")
    text = DOC.read_text(encoding="utf-8")
    parts = text.split(marks[0])
    if len(parts) <= k + 1:
        raise SystemExit(f"{DOC} has no section {k + 1} of scripts/fit_tap_withdrawal.py")
    _, tail = parts[k + 1].split(marks[1], 1)
    parts[k + 1] = "\n" + "\n".join(lines) + f"\n{marks[1]}{tail}"
    DOC.write_text(marks[0].join(parts), encoding="utf-8")
    print(f"-> {DOC}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generations", type=int, default=80)
    parser.add_argument("--replicates", type=int, default=0,
                        help="also fit with the next K seeds and report their held-out facts")
    parser.add_argument("--source", help=f"circuit to fit (default {relative(SOURCE)})")
    parser.add_argument("--facts", help=f"facts file (default {relative(FACTS)}; for "
                                        f"{relative(LR_SOURCE)}, {relative(LR_FACTS)})")
    parser.add_argument("--out", help=f"fitted circuit, YAML (default {relative(OUT)}; for "
                                      f"{relative(LR_SOURCE)}, {relative(LR_OUT)})")
    parser.add_argument("--training", help="comma-separated ids of the training facts "
                                           f"(default {','.join(TRAINING)})")
    parser.add_argument("--docs", action="store_true",
                        help="run the fits docs/tap_withdrawal.md documents, write their "
                             "circuits and its replicate tables")
    parser.add_argument("--only", choices=list(DOC_FITS),
                        help="with --docs: only the class-lumped or only the L/R fits")
    args = parser.parse_args(argv)
    chosen = [flag for flag in ("source", "facts", "out", "training") if getattr(args, flag)]
    if args.docs and chosen:
        parser.error(f"--docs runs the documented fits; leave out --{', --'.join(chosen)}")
    if args.only and not args.docs:
        parser.error("--only goes with --docs")
    if args.docs:
        for key, docs in DOC_FITS.items():
            if args.only not in (None, key):
                continue
            blocks = []
            for doc in docs:
                print(f"\n== {key}: {relative(doc.source)}, training {', '.join(doc.training)} ==",
                      flush=True)
                table = run_one(doc, args.seed, args.generations, args.replicates)
                blocks.append(([doc.title, ""] if doc.title else []) + table)
            write_section(docs[0].section, [line for k, block in enumerate(blocks)
                                            for line in ([""] if k else []) + block])
        return 0
    source = Path(args.source or SOURCE).resolve()
    # a documented source's facts file, output and name are its defaults; another source
    # needs its facts and output named
    known = next((docs[0] for docs in DOC_FITS.values() if docs[0].source == source), None)
    missing = [flag for flag in ("facts", "out") if known is None and not getattr(args, flag)]
    if missing:
        parser.error(f"--source {args.source} needs --{' and --'.join(missing)}")
    name = known.name if known else f"{ns.load_circuit(source).name}, fitted to behavioural facts"
    doc = DocFit(source, Path(args.facts or known.facts), Path(args.out or known.out),
                 tuple(args.training.split(",")) if args.training else TRAINING, name, 0)
    run_one(doc, args.seed, args.generations, args.replicates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
