"""The shipped connectome data of neurosim/data (written by scripts/make_connectome.py from cect).

Most tests only parse the CSVs; the byte-identity test re-runs the generator and
needs cect (which is never a neurosim dependency, see the script's docstring).
"""

import csv
import functools
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from helpers import ROOT

DATA = ROOT / "neurosim" / "data"
GENERATOR = ROOT / "scripts" / "make_connectome.py"
COOK = "connectome_cook2019_herm.csv"
VARSHNEY = "connectome_varshney2011.csv"
NEURONS = "neurons_herm.csv"
TRANSMITTERS = {"acetylcholine", "gaba", "glutamate", "dopamine", "serotonin", "octopamine", "tyramine"}


def read_table(filename):
    """The '# ' header lines and the rows (as dicts) of a shipped CSV."""
    with open(DATA / filename, newline="") as stream:
        lines = stream.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    return header, rows


NEURON_ROWS = read_table(NEURONS)[1]
CLASS_OF = {row["name"]: row["class"] for row in NEURON_ROWS}
TRANSMITTER_OF = {row["name"]: row["neurotransmitter"] for row in NEURON_ROWS}
CONNECTOMES = {filename: read_table(filename) for filename in (COOK, VARSHNEY)}


def test_neuron_table_lists_the_302_neurons_in_118_classes():
    names = [row["name"] for row in NEURON_ROWS]
    assert len(names) == len(set(names)) == 302
    assert len(set(CLASS_OF.values())) == 118  # the WormAtlas count of hermaphrodite neuron classes
    assert {name: CLASS_OF[name] for name in ("AVAL", "PLMR", "VA1", "AS10", "PDA", "CEPDL", "IL1VR",
                                              "RMED", "RMDL", "SABD", "RID", "AVDL", "M2L", "AVM")} == {
        "AVAL": "AVA", "PLMR": "PLM", "VA1": "VA", "AS10": "AS", "PDA": "PDA", "CEPDL": "CEP", "IL1VR": "IL1",
        "RMED": "RME", "RMDL": "RMD", "SABD": "SAB", "RID": "RID", "AVDL": "AVD", "M2L": "M2", "AVM": "AVM"}
    roles = Counter(row["role"] for row in NEURON_ROWS)
    assert set(roles) == {"sensory", "inter", "motor", "pharyngeal", "other"}
    assert roles["pharyngeal"] == 20 and roles["other"] == 2  # the pharynx; CANL, CANR


def test_neuron_transmitters_are_canonical_words():
    for row in NEURON_ROWS:
        assert row["neurotransmitter"] in TRANSMITTERS | {""}
        cotransmitters = row["cotransmitters"].split(";") if row["cotransmitters"] else []
        assert set(cotransmitters) <= TRANSMITTERS - {row["neurotransmitter"]}
    # Betaine-only, uptake-only, orphan (Wang et al. 2024) and CAN (no data) neurons.
    assert sum(1 for row in NEURON_ROWS if row["neurotransmitter"] == "") == 20
    assert {name: TRANSMITTER_OF[name] for name in ("AVAL", "DD1", "VD13", "AVBL", "CEPDL", "NSML", "RIML", "RID")} == {
        "AVAL": "acetylcholine", "DD1": "gaba", "VD13": "gaba", "AVBL": "acetylcholine",
        "CEPDL": "dopamine", "NSML": "serotonin", "RIML": "glutamate", "RID": ""}


# Per dataset: distinct neurons, chemical rows, gap rows, gap autapses, directed gap
# entries in cect, and summed counts per kind.
# Cook 2019: the 3,709 chemical and 2,196 gap-junction neuron->neuron entries of
# Cook2019HermReader. cect stores each gap junction in both directions, so 2,196 =
# 2 x 1,091 pairs of two neurons + 14 self-junctions (pre == post, stored once): 1,105 rows.
# Varshney 2011: 279 neurons (no pharyngeal neurons, CANL/R or VC6); 2 x 514 + 3 = 1,031
# directed gap entries, 517 rows. The summed gap count 890 is the paper's number of gap
# junctions. The chemical sum 6,394 (S + Sp of NeuronConnect.xls, equal to the mirrored R + Rp)
# is one more than the paper's 6,393 chemical synapses: the data file, not the generator.
TOTALS = {
    COOK: dict(neurons=302, chemical=3709, gap=1105, gap_autapses=14, directed_gap=2196,
               chemical_sum=20965, gap_sum=5779),
    VARSHNEY: dict(neurons=279, chemical=2194, gap=517, gap_autapses=3, directed_gap=1031,
                   chemical_sum=6394, gap_sum=890),
}


@pytest.mark.parametrize("filename", [COOK, VARSHNEY])
def test_totals(filename):
    rows = CONNECTOMES[filename][1]
    expected = TOTALS[filename]
    rows_of = Counter(row["kind"] for row in rows)
    sum_of = Counter()
    for row in rows:
        sum_of[row["kind"]] += int(row["count"])
    gap_autapses = sum(1 for row in rows if row["kind"] == "gap" and row["pre"] == row["post"])
    assert len({name for row in rows for name in (row["pre"], row["post"])}) == expected["neurons"]
    assert (rows_of["chemical"], rows_of["gap"], gap_autapses) == (
        expected["chemical"], expected["gap"], expected["gap_autapses"])
    assert 2 * (rows_of["gap"] - gap_autapses) + gap_autapses == expected["directed_gap"]
    assert (sum_of["chemical"], sum_of["gap"]) == (expected["chemical_sum"], expected["gap_sum"])


@pytest.mark.parametrize("filename", [COOK, VARSHNEY])
def test_rows_are_well_formed(filename):
    rows = CONNECTOMES[filename][1]
    keys = [(row["pre"], row["post"], row["kind"]) for row in rows]
    assert len(keys) == len(set(keys))
    assert keys == sorted(keys, key=lambda key: (key[2], key[0], key[1]))
    for row in rows:
        assert row["pre"] in CLASS_OF and row["post"] in CLASS_OF
        assert row["count"].isdigit() and int(row["count"]) > 0
        if row["kind"] == "gap":
            assert row["pre"] <= row["post"]  # equal only for the self-junctions counted in TOTALS
            assert row["neurotransmitter"] == ""
        else:
            assert row["kind"] == "chemical"
            assert row["neurotransmitter"] == TRANSMITTER_OF[row["pre"]]


@pytest.mark.parametrize("filename, source", [(COOK, "doi:10.1038/s41586-019-1352-7"),
                                              (VARSHNEY, "doi:10.1371/journal.pcbi.1001066")])
def test_header_names_source_and_caveats(filename, source):
    header = "\n".join(CONNECTOMES[filename][0])
    for phrase in (source, "cect 0.", "scripts/make_connectome.py", "Autapses", "empty neurotransmitter",
                   "were dropped", "disagree in 0 pairs", "Glutamate can be excitatory or inhibitory"):
        assert phrase in header
    assert ("serial EM sections" in header) == (filename == COOK)


# Class-summed counts (left and right members added) from the project's reference notes,
# as (Varshney 2011, Cook 2019); "-" is a gap junction, counted once per pair of neurons.
PUBLISHED_CLASS_SUMS = """
PVD>AVA 27 81 | PLM>AVA 5 17 | PVC>AVA 20 27 | AVB>AVA 27 47 | AVD>AVA 63 167 | PLM>AVD 5 18
PVC>AVD 13 40 | AVA>AVD 4 14 | AVB>AVD 3 7 | AVM-AVD 2 8 | ALM>AVD 1 3 | PVD>PVC 30 107
PLM-PVC 2 12 | AVA>PVC 28 77 | AVD>PVC 1 3 | AVM>PVC 9 27 | ALM>PVC 9 25 | DVA>PVC 4 5
PVC>AVB 31 69 | AVA>AVB 2 9 | AVD>AVB 1 1 | AVM>AVB 12 22 | DVA>AVB 1 2 | PVD>DVA 3 5
PLM>DVA 5 28 | PVC>DVA 4 7 | AVA-PVC 10 52
"""


def class_key(kind, pre_class, post_class):
    return (kind, *sorted((pre_class, post_class))) if kind == "gap" else (kind, pre_class, post_class)


@functools.cache
def class_sums(filename):
    sums = defaultdict(int)
    for row in CONNECTOMES[filename][1]:
        sums[class_key(row["kind"], CLASS_OF[row["pre"]], CLASS_OF[row["post"]])] += int(row["count"])
    return sums


def published_class_sums():
    for entry in PUBLISHED_CLASS_SUMS.replace("\n", " | ").split("|"):
        if entry.strip():
            pair, varshney, cook = entry.split()
            kind, separator = ("gap", "-") if "-" in pair else ("chemical", ">")
            yield pytest.param(class_key(kind, *pair.split(separator)), int(varshney), int(cook), id=pair)


@pytest.mark.parametrize("key, varshney, cook", list(published_class_sums()))
def test_class_sums_match_the_published_table(key, varshney, cook):
    assert (class_sums(VARSHNEY)[key], class_sums(COOK)[key]) == (varshney, cook)


def test_generator_reproduces_the_shipped_files(tmp_path):
    pytest.importorskip("cect")
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True, cwd=ROOT,
                   capture_output=True)
    for filename in (COOK, VARSHNEY, NEURONS):
        assert (tmp_path / filename).read_bytes() == (DATA / filename).read_bytes(), filename
