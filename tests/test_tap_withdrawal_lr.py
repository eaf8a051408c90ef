"""The left/right-resolved tap-withdrawal circuits (Cook 2019 anatomy, and fitted), their
facts with the one-sided PLM ablations, the ``same_as`` relation, and the numbers
docs/tap_withdrawal.md quotes of them."""

import re

import pytest

import neurosim as ns
from neurosim.behaviour import (ExperimentRow, check_facts, facts_summary, format_table,
                                load_facts, loads_facts, run_experiments)
from neurosim.fit.parameters import Parameterization
from helpers import FACTS, ROOT, TW, neurosim, tw_script

TW_LR = ROOT / "circuits" / "tap_withdrawal_lr.yaml"
TW_LR_FITTED = ROOT / "circuits" / "tap_withdrawal_lr_fitted.yaml"
LR_FACTS = ROOT / "circuits" / "data" / "tap_withdrawal_lr_facts.yaml"
DOC = ROOT / "docs" / "tap_withdrawal.md"
COMMAND = "neurosim connectome cook2019 --neurons tap_withdrawal -o circuits/tap_withdrawal_lr.yaml"


# --- the circuit as the importer builds it ----------------------------------------------

def test_the_shipped_lr_circuit_is_what_the_importer_builds(tmp_path):
    """Rebuilt with the command its header records, the file comes out byte for byte."""
    shipped = TW_LR.read_text()
    assert shipped.splitlines()[0].endswith(f" with: {COMMAND}")
    (tmp_path / "circuits").mkdir()
    out = neurosim(*COMMAND.split()[1:], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "circuits" / "tap_withdrawal_lr.yaml").read_text() == shipped


def test_the_lr_circuit_resolves_every_class_of_the_lumped_one():
    lumped, lr = ns.load_circuit(TW), ns.load_circuit(TW_LR)
    assert lr.neuron_names == ("PVDL", "PVDR", "PLML", "PLMR", "AVM", "ALML", "ALMR", "AVDL",
                               "AVDR", "PVCL", "PVCR", "DVA", "AVAL", "AVAR", "AVBL", "AVBR",
                               "FWD", "REV")
    # the lumped protocols, tap_half_PLM (half a PLM class) replaced by one cell each
    assert set(lr.protocols) == set(lumped.protocols) - {"tap_half_PLM"} | {"tap_no_PLML",
                                                                            "tap_no_PLMR"}
    assert lr.protocol("tap_no_PLM").ablate == ("PLML", "PLMR")
    assert lr.protocol("tap_no_PLMR").ablate == ("PLMR",)
    motor = {(s.pre, s.post): s.w for s in lr.synapses if s.post in ("FWD", "REV")}
    assert motor == {("AVBL", "FWD"): 1.0, ("AVBR", "FWD"): 1.0, ("AVAL", "REV"): 1.0,
                     ("AVAR", "REV"): 1.0}
    # the lumped circuit's class signs: AVD and PVC excitatory, every other class inhibitory
    for s in lr.synapses:
        if s.post not in ("FWD", "REV"):
            assert (s.E == 0.0) == s.pre.startswith(("AVD", "PVC")), s
    # 0.018 nS per EM section: PLMR -> DVA has 19 sections, PLML -> DVA 9
    w = {(s.pre, s.post): s.w for s in lr.synapses}
    assert (w[("PLMR", "DVA")], w[("PLML", "DVA")]) == (0.342, 0.162)


# --- facts ---------------------------------------------------------------------------------

def test_the_lr_facts_are_the_lumped_facts_and_the_one_sided_plm_ablations():
    lumped, lr = load_facts(FACTS), load_facts(LR_FACTS, protocols=ns.load_circuit(TW_LR).protocols)
    assert lr[:len(lumped)] == lumped   # word for word
    extra = {f.id: f for f in lr[len(lumped):]}
    assert sorted(extra) == ["no_PLML_no_effect", "no_PLMR_more_reversal"]
    plmr, plml = extra["no_PLMR_more_reversal"], extra["no_PLML_no_effect"]
    assert (plmr.protocol, plmr.expect, plmr.than) == ("tap_no_PLMR", "more_reversal_than", "tap")
    assert (plml.protocol, plml.expect, plml.than) == ("tap_no_PLML", "same_as", "tap")
    assert plmr.verified is False and plml.verified is False   # quoted secondhand
    assert "Davis et al. 2021" in plmr.source and plml.expected == "same as tap"
    # the lumped facts still score on the L/R circuit (every protocol they name is there)
    load_facts(FACTS, protocols=ns.load_circuit(TW_LR).protocols)


def test_the_lr_facts_are_refused_on_a_lumped_circuit(tmp_path):
    """A lumped circuit has one PLM node: behave says which protocol it lacks."""
    out = neurosim("behave", TW, "--facts", LR_FACTS, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert "facts[6].protocol: unknown protocol 'tap_no_PLMR'" in out.stderr


def row(protocol, score):
    label = "reversal" if score > 0.05 else "forward" if score < -0.05 else "none"
    return ExperimentRow(protocol, "", "-", score, label, 0.5)


SAME_AS = """
facts:
  - {id: a, protocol: p1, expect: same_as, than: tap, statement: s, source: x, verified: false}
  - {id: b, protocol: p2, expect: same_as, than: tap, statement: s, source: x, verified: true}
  - {id: c, protocol: p3, expect: same_as, than: tap, statement: s, source: x, verified: true}
  - {id: d, protocol: p4, expect: same_as, than: tap, statement: s, source: x, verified: true}
  - {id: e, protocol: tap, expect: same_as, than: p5, statement: s, source: x, verified: true}
"""


def test_same_as_holds_when_the_scores_differ_by_at_most_the_threshold():
    """Scores (hand-computed differences from tap's 0.200, threshold 0.05): +0.04 same;
    -0.0499 same; +0.06 more; -0.25 less; tap − p5 = -0.0002 same (either order)."""
    rows = [row("tap", 0.200), row("p1", 0.240), row("p2", 0.1501), row("p3", 0.260),
            row("p4", -0.050), row("p5", 0.2002)]
    checks = {c.fact.id: c for c in check_facts(loads_facts(SAME_AS), rows, threshold=0.05)}
    assert [checks[k].reproduced for k in "abcde"] == [True, True, False, False, True]
    assert checks["a"].evidence == "score +0.240 vs +0.200 (+0.040; threshold 0.05)"
    assert checks["e"].evidence == "score +0.200 vs +0.200 (+0.000; threshold 0.05)"  # not -0.000
    assert facts_summary(list(checks.values())) == \
        "3 of 5 facts reproduced (verified in the primary source: 2 of 4)"
    assert "same as tap [2nd-hand]" in format_table(rows, list(checks.values()))


def test_same_as_is_the_complement_of_more_and_less():
    """At every difference exactly one of more, less, same holds."""
    text = "facts:\n" + "".join(
        f"  - {{id: {e}, protocol: x, expect: {e}, than: tap, statement: s, source: y, "
        "verified: true}\n" for e in ("more_reversal_than", "less_reversal_than", "same_as"))
    facts = loads_facts(text)
    for diff in (-0.2, -0.0500001, -0.05, -0.01, 0.0, 0.03, 0.05, 0.0500001, 0.4):
        held = [c.reproduced for c in check_facts(facts, [row("tap", 0.0), row("x", diff)], 0.05)]
        assert sum(held) == 1, (diff, held)


@pytest.mark.parametrize("text,match", [
    ("facts:\n  - {id: a, protocol: tap_no_PLML, expect: same_as, statement: s, source: x, verified: true}",
     r"f.yaml:2: facts\[0\].expect: 'same_as' needs than: PROTOCOL"),
    ("facts:\n  - {id: a, protocol: tap, expect: none, than: rest, statement: s, source: x, verified: true}",
     r"f.yaml:2: facts\[0\].expect: 'than' goes with more_reversal_than, less_reversal_than or "
     r"same_as, not 'none'"),
    ("facts:\n  - {id: a, protocol: tap, expect: same_as, than: tap, statement: s, source: x, verified: true}",
     r"f.yaml:2: facts\[0\].than: a protocol is always the same as itself"),
    ("facts:\n  - {id: a, protocol: tap, expect: same, than: rest, statement: s, source: x, verified: true}",
     r"f.yaml:2: facts\[0\].expect: .*same_as"),
    ("facts:\n  - {id: a, protocol: tap_no_PLML, expect: same_as, than: tapp, statement: s, source: x, verified: true}",
     r"f.yaml:2: facts\[0\].than: unknown protocol 'tapp'.*Did you mean 'tap'"),
    ("facts:\n  - {id: a, protocol: tap_no_PLM, expect: same_as, than: tap_half_PLM, statement: s, "
     "source: x, verified: true}",
     r"f.yaml:2: facts\[0\].than: unknown protocol 'tap_half_PLM'"),
])
def test_bad_same_as_facts_name_file_line_and_key(text, match):
    with pytest.raises(ns.CircuitError, match=match):
        loads_facts(text, "f.yaml", protocols=ns.load_circuit(TW_LR).protocols)


# --- the fit -------------------------------------------------------------------------------

def test_the_fit_frees_the_connections_between_the_circuits_own_neurons():
    """Every chemical weight and gap conductance that can act, none of the motor synapses:
    on the lumped circuit exactly what the fit always freed (24 + 2)."""
    fit_script = tw_script("fit_tap_withdrawal")
    for path, synapses, gaps in [(TW, 24, 2), (TW_LR, 86, 31)]:
        circuit = ns.load_circuit(path)
        spec = fit_script.fit_spec(circuit, 0, 80)
        par = Parameterization(circuit, spec.free)
        assert par.n_free == synapses + gaps
        names = " ".join(par.names)
        assert "FWD" not in names and "REV" not in names
        assert names.count("gap_junctions") == gaps
    selectors = fit_script.free_selectors(ns.load_circuit(TW))
    assert selectors == ["synapses[post=AVA].w", "synapses[post=AVD].w", "synapses[post=PVC].w",
                         "synapses[post=AVB].w", "synapses[post=DVA].w",
                         "gap_junctions[AVM-AVD].g", "gap_junctions[PLM-PVC].g"]
    lr = fit_script.free_selectors(ns.load_circuit(TW_LR))
    assert "synapses[post=PVDL].w" not in lr and "gap_junctions[ALML-AVM].g" not in lr
    assert "gap_junctions[AVAL-PLML].g" in lr


def test_targets_encode_same_as_at_the_reference_score_and_the_mirror_swaps_sides():
    fit_script = tw_script("fit_tap_withdrawal")
    facts = {f.id: f for f in load_facts(LR_FACTS)}
    chosen = [facts[k] for k in fit_script.TRAINING + fit_script.ONE_SIDED_PLM]
    scores = fit_script.target_scores(chosen)
    assert scores["tap_no_PLML"] == scores["tap"] == pytest.approx(0.1 * 2.1972246)
    assert scores["tap_no_PLMR"] == pytest.approx(scores["tap"] + 0.15)
    mirror = {f.id: f for f in fit_script.mirrored(load_facts(LR_FACTS))}
    assert mirror["no_PLML_more_reversal"].protocol == "tap_no_PLML"
    assert mirror["no_PLMR_no_effect"].protocol == "tap_no_PLMR"
    assert mirror["no_PLMR_no_effect"].statement.startswith("Mirror image, no source's claim")
    assert mirror["tap_reversal"] == facts["tap_reversal"]
    with pytest.raises(SystemExit, match="needs a training fact that gives tap a label"):
        fit_script.target_scores([facts["no_PLML_no_effect"]])


def test_the_fitted_lr_circuit_reproduces_its_training_facts():
    fit_script = tw_script("fit_tap_withdrawal")
    circuit = ns.load_circuit(TW_LR_FITTED)
    facts = load_facts(LR_FACTS, protocols=circuit.protocols)
    rows, _ = run_experiments(circuit, dt_out=1.0)   # RestWarnings are errors here: none
    checks = check_facts([f for f in facts if f.id in fit_script.TRAINING], rows,
                         circuit.readout().threshold)
    assert len(checks) == 4 and all(c.reproduced for c in checks), [c.evidence for c in checks]
    header = TW_LR_FITTED.read_text().split("\nname:")[0]
    assert ("Held out (not seen by the fit): anterior_through_AVD, posterior_through_PVC,\n"
            "# no_PLMR_more_reversal, no_PLML_no_effect.") not in header   # one line
    assert ("Held out (not seen by the fit): anterior_through_AVD, posterior_through_PVC, "
            "no_PLMR_more_reversal, no_PLML_no_effect.") in header
    # only the connections between the circuit's own neurons moved
    anatomical = ns.load_circuit(TW_LR)
    assert circuit.neurons == anatomical.neurons and circuit.protocols == anatomical.protocols
    for a, b in zip(anatomical.synapses, circuit.synapses):
        assert (a.pre, a.post, a.E) == (b.pre, b.post, b.E)
        if b.post in ("FWD", "REV", "PVDL", "PVDR"):
            assert a.w == b.w
        assert 0.0 <= b.w <= 3.0


# --- the documented numbers ------------------------------------------------------------

def fit_section() -> str:
    make_docs = tw_script("make_docs")
    return make_docs.generated_sections(ROOT)[("docs/tap_withdrawal.md",
                                               "scripts/fit_tap_withdrawal.py", 1)]


def test_the_documented_lr_table_is_what_the_code_gives_today():
    """The L/R comparison of docs/tap_withdrawal.md (the second section of
    scripts/tap_withdrawal.py) equals what the script prints now."""
    script = tw_script("tap_withdrawal")
    make_docs = tw_script("make_docs")
    documented = make_docs.generated_sections(ROOT)[("docs/tap_withdrawal.md",
                                                     "scripts/tap_withdrawal.py", 1)]
    tables = script.lr_experiments()
    assert documented == script.lr_markdown(tables)
    assert max(abs(r.score) for r in tables["L/R anatomical"][1]) < 0.02   # "beyond ±0.02"


def test_the_documented_lr_fit_of_seed_0_is_the_shipped_lr_circuit():
    """Fit A's seed 0 row: its loss and evaluations are those the fitted file's header
    records, its held-out cells and multistability what behave gives on that file, and
    the first PLMR - PLML difference of the tally is that file's."""
    fit_script = tw_script("fit_tap_withdrawal")
    section = fit_section()
    shipped = [line for line in section.splitlines() if line.startswith("| 0 (shipped)")]
    assert len(shipped) == 1
    cells = shipped[0].strip("| ").split(" | ")
    header = TW_LR_FITTED.read_text().split("\nname:")[0]
    fit = re.search(r"loss (\S+) after (\d+) evaluations", header)
    assert cells[1:3] == [f"{float(fit[1]):.2g}", fit[2]]
    circuit = ns.load_circuit(TW_LR_FITTED)
    facts = load_facts(LR_FACTS)
    rows, _ = run_experiments(circuit, dt_out=1.0)
    threshold = circuit.readout().threshold
    training = check_facts([f for f in facts if f.id in fit_script.TRAINING], rows, threshold)
    held_out = check_facts([f for f in facts if f.id not in fit_script.TRAINING], rows, threshold)
    assert cells[3] == f"{sum(c.reproduced for c in training)} of {len(training)}"
    assert cells[4:-1] == [fit_script.held_out_cell(c) for c in held_out]
    several = [p for p in circuit.protocols if ns.rest_state(circuit, p).other_rests > 0]
    assert cells[-1] == (", ".join(several) or "none found")
    score = {r.protocol: r.score for r in rows}
    first = re.search(r"minus `tap_no_PLML`, seeds 0–\d+: ([-+]\d\.\d+)", section)[1]
    assert first == f"{round(score['tap_no_PLMR'] - score['tap_no_PLML'], 3) + 0.0:+.3f}"


def test_the_documented_lr_tally_counts_its_table():
    """The 'reproduced in' counts of each fit are those of its table's rows."""
    for block in fit_section().split("**Fit ")[1:]:
        table = [line for line in block.splitlines() if line.startswith("| ")]
        heads = table[0].strip("| ").split(" | ")
        rows = [line.strip("| ").split(" | ") for line in table[1:]]   # no "|---" line
        for k, head in enumerate(heads):
            if head.startswith("held out: "):
                fact = head.removeprefix("held out: ")
                yes = sum(r[k].startswith("yes") for r in rows)
                assert f"{fact} {yes} of {len(rows)}" in block, (fact, block)


@pytest.mark.slow
def test_refitting_the_lr_circuit_gives_the_documented_outcome():
    """Fit A of seed 0, rerun: the held-out outcome the doc quotes."""
    fit_script = tw_script("fit_tap_withdrawal")
    circuit = ns.load_circuit(TW_LR)
    doc = fit_script.DOC_FITS["lr"][0]
    fit = fit_script.fit_and_check(circuit, load_facts(LR_FACTS), 0, 80, training=doc.training,
                                   name=doc.name, source=doc.facts)
    assert fit.report.result.loss < 1e-6 and all(c.reproduced for c in fit.training)
    shipped = [line for line in fit_section().splitlines() if line.startswith("| 0 (shipped)")][0]
    assert fit_script.replicate_row(0, fit).split(" | ")[3:] == shipped.split(" | ")[3:]
