"""Write the C. elegans hermaphrodite connectome data files of neurosim/data from cect.

cect (the C. elegans Connectome Toolbox, MIT licence) ships the published
connectivity tables offline. It pins numpy<2.4 and pulls in a large stack, so it
is never a neurosim dependency; it lives in a virtual environment of its own:

    python -m venv /tmp/cectenv && /tmp/cectenv/bin/pip install cect
    /tmp/cectenv/bin/python scripts/make_connectome.py [--out neurosim/data]

This script does not import neurosim. It writes

    connectome_cook2019_herm.csv   Cook et al. 2019, hermaphrodite
    connectome_varshney2011.csv    Varshney et al. 2011
    neurons_herm.csv               the 302 hermaphrodite neurons: class, role, transmitter

Output is deterministic (no date; the cect version is recorded instead), so a
re-run gives identical bytes; tests/test_connectome_data.py checks that.
"""

import argparse
import contextlib
import csv
import io
import re
import sys
import warnings
from pathlib import Path

import cect
from cect import Cells
from cect import Neurotransmitters as NT
from cect.readers import Cook2019HermReader, VarshneyDataReader
from cect.readers.Wang2024Reader import Wang2024Reader

GENERATOR_COMMAND = "/tmp/cectenv/bin/python scripts/make_connectome.py"
HERM_NEURONS = sorted(Cells.PREFERRED_HERM_NEURON_NAMES)

FAST_TRANSMITTERS = {
    NT.ACETYLCHOLINE: "acetylcholine",
    NT.GLUTAMATE: "glutamate",
    NT.GABA: "gaba",
}
MONOAMINES = {
    NT.DOPAMINE: "dopamine",
    NT.SEROTONIN: "serotonin",
    NT.OCTOPAMINE: "octopamine",
    NT.TYRAMINE: "tyramine",
}

# Numbered members of the ventral cord motor neuron classes (VA1..VA12, AS1..AS11,
# VC1..VC6, ...); PDA and PDB are classes of their own.
NUMBERED_CLASS = re.compile(r"^(AS|DA|DB|DD|VA|VB|VC|VD)\d+$")
# Classes whose members carry a dorsal (D) or ventral (V) letter before any L/R
# (CEPDL, RMED, SABVL, ...). Listed because the letters alone cannot tell
# RMED (class RME) from RID (class RID, while RIV is another class).
DORSOVENTRAL_CLASSES = {
    "CEP", "IL1", "IL2", "OLQ", "RMD", "RME", "SAA", "SAB",
    "SIA", "SIB", "SMB", "SMD", "URA", "URY",
}

# cect's neuron groups of Cook et al. 2019 (Cells.COOK_GROUPING_1), by role.
ROLE_GROUPS = {
    "sensory": Cells.SENSORY_NEURONS_NONPHARYNGEAL_COOK,
    "inter": Cells.INTERNEURONS_NONPHARYNGEAL_COOK,
    "motor": Cells.MOTORNEURONS_NONPHARYNGEAL_COOK,
    "pharyngeal": Cells.PHARYNGEAL_NEURONS,
    "other": Cells.UNKNOWN_FUNCTION_NEURONS,
}

COOK_SOURCE = (
    "Cook SJ, Jarrell TA, Brittin CA, et al. Whole-animal connectomes of both "
    "Caenorhabditis elegans sexes. Nature 571:63-71 (2019). doi:10.1038/s41586-019-1352-7"
)
VARSHNEY_SOURCE = (
    "Varshney LR, Chen BL, Paniagua E, Hall DH, Chklovskii DB. Structural properties of "
    "the Caenorhabditis elegans neuronal network. PLoS Comput Biol 7(2):e1001066 (2011). "
    "doi:10.1371/journal.pcbi.1001066"
)
WANG_SOURCE = (
    "Wang C, Vidal B, Sural S, et al. A neurotransmitter atlas of C. elegans males and "
    "hermaphrodites. eLife 13:RP95402 (2024). doi:10.7554/eLife.95402"
)


@contextlib.contextmanager
def quietly():
    """Silence cect's progress prints and openpyxl's warnings about spreadsheet extensions."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def neuron_class(name):
    """The class of a neuron: its name without the numbers of the ventral cord
    classes, without the L/R of a bilateral pair, then without the D/V of a
    dorsoventral class (AVAL -> AVA, VA1 -> VA, CEPDL -> CEP, RMED -> RME)."""
    numbered = NUMBERED_CLASS.match(name)
    if numbered:
        return numbered.group(1)
    if name[-1] in "LR" and name[:-1] + {"L": "R", "R": "L"}[name[-1]] in HERM_NEURONS:
        name = name[:-1]
    if name[-1] in "DV" and name[:-1] in DORSOVENTRAL_CLASSES:
        name = name[:-1]
    return name


def neuron_roles():
    """Role of each neuron from cect's grouping of Cook et al. 2019."""
    roles = {}
    for role, members in ROLE_GROUPS.items():
        for name in members:
            assert name not in roles, f"{name} is in two of cect's Cook groups"
            roles[name] = role
    assert set(roles) == set(HERM_NEURONS), "cect's Cook groups do not partition the 302 neurons"
    return roles


def neuron_transmitters():
    """Transmitter and co-transmitters of each neuron from Wang et al. 2024.

    The transmitter is the first fast classical one (acetylcholine, glutamate,
    GABA) in Wang's listing, else the first monoamine: fast synaptic signalling is
    what a synapse model needs first. The other canonical transmitters of the
    neuron are its co-transmitters. Uptake-only, betaine, 5-HTP and "unknown"
    labels are left out, so a neuron with only those has no transmitter."""
    with quietly():
        atlas = Wang2024Reader(
            sex="Hermaphrodite",
            normalize_conn_numbers=False,
            include_electrical_connections=False,
            include_monoamine_conns=False,
        )
    transmitters = {}
    for name in HERM_NEURONS:
        listed = atlas.all_neurotransmitters[name]
        fast = [FAST_TRANSMITTERS[t] for t in listed if t in FAST_TRANSMITTERS]
        monoamine = [MONOAMINES[t] for t in listed if t in MONOAMINES]
        ordered = fast + monoamine
        transmitters[name] = (ordered[0] if ordered else "", ordered[1:])
    return transmitters


def read_connections(reader_module):
    """Every nonzero (pre, post, count) of a cect reader, per kind, read from its spreadsheet."""
    with quietly():
        dataset = reader_module.get_instance(from_cache=False)
    kind_of_synclass = {NT.GENERIC_CHEM_SYN_CLASS: "chemical", NT.GENERIC_ELEC_SYN_CLASS: "gap"}
    connections = {"chemical": [], "gap": []}
    for synclass, matrix in dataset.connections.items():
        kind = kind_of_synclass[synclass]
        for pre_index, post_index in zip(*matrix.nonzero()):
            connections[kind].append(
                (dataset.nodes[pre_index], dataset.nodes[post_index], float(matrix[pre_index, post_index]))
            )
    return connections


def unordered_gap_pairs(directed_entries):
    """Each gap junction once, as (a, b, count) with a <= b.

    cect stores a gap junction in both directions. Where the two directions
    disagree (or one is missing) the larger count is kept; returns the pairs and
    how many disagreed."""
    directed = {(pre, post): count for pre, post, count in directed_entries}
    pairs, disagreeing = {}, 0
    for (pre, post), count in directed.items():
        a, b = sorted((pre, post))
        if (a, b) in pairs:
            continue
        reverse = directed.get((post, pre), 0.0)
        disagreeing += reverse != count
        pairs[(a, b)] = max(count, reverse)
    return [(a, b, count) for (a, b), count in pairs.items()], disagreeing


def format_count(count):
    return str(int(count)) if count.is_integer() else repr(count)


def connectome_rows(connections, transmitters):
    """Rows of a connectome CSV, neuron-to-neuron only, and the numbers its header reports."""
    neurons = set(HERM_NEURONS)

    def between_neurons(entries):
        kept = [entry for entry in entries if entry[0] in neurons and entry[1] in neurons]
        return kept, len(entries) - len(kept)

    chemical, dropped_chemical = between_neurons(connections["chemical"])
    all_gap_pairs, gap_disagreeing = unordered_gap_pairs(connections["gap"])
    gap, dropped_gap = between_neurons(all_gap_pairs)
    rows = sorted(
        [("chemical", pre, post, count, transmitters[pre][0]) for pre, post, count in chemical]
        + [("gap", a, b, count, "") for a, b, count in gap]
    )
    chemical_rows = [row for row in rows if row[0] == "chemical"]
    stats = {
        "chemical": len(chemical),
        "gap": len(gap),
        "directed_gap": sum(1 for pre, post, _ in connections["gap"] if pre in neurons and post in neurons),
        "neurons": len({name for row in rows for name in row[1:3]}),
        "chemical_autapses": sum(1 for kind, pre, post, _, _ in rows if kind == "chemical" and pre == post),
        "gap_autapses": sum(1 for kind, pre, post, _, _ in rows if kind == "gap" and pre == post),
        "dropped_chemical": dropped_chemical,
        "dropped_gap": dropped_gap,
        "gap_disagreeing": gap_disagreeing,
        "fractional": sum(1 for row in rows if not row[3].is_integer()),
        "empty_transmitter": sum(1 for row in chemical_rows if row[4] == ""),
        "empty_transmitter_neurons": sorted({row[1] for row in chemical_rows if row[4] == ""}),
        "monoamine_only": sum(1 for row in chemical_rows if row[4] in MONOAMINES.values()),
    }
    return rows, stats


def caveat_lines(stats, count_meaning, chemical_count_rule, dropped_what):
    return [
        f"Counts: {count_meaning}",
        chemical_count_rule,
        f"Kept: {stats['neurons']} neurons, {stats['chemical']} chemical rows, {stats['gap']} gap rows.",
        f"Autapses are in the data: {stats['chemical_autapses']} chemical and {stats['gap_autapses']} gap "
        "rows have pre == post; they are kept.",
        "neurotransmitter (chemical rows) is the presynaptic neuron's transmitter from neurons_herm.csv "
        f"({WANG_SOURCE}; read with cect's Wang2024Reader).",
        "Glutamate can be excitatory or inhibitory (glutamate-gated chloride channels), so it gives no sign.",
        f"{stats['empty_transmitter']} chemical rows have an empty neurotransmitter (no known classical or "
        f"monoamine transmitter of the presynaptic neuron: {' '.join(stats['empty_transmitter_neurons'])}); "
        f"{stats['monoamine_only']} more have a monoamine and no classical transmitter.",
        f"Non-neuron partners ({dropped_what}) were dropped: {stats['dropped_chemical']} chemical entries "
        f"and {stats['dropped_gap']} gap-junction pairs.",
        f"Gap junctions: cect stores each in both directions ({stats['directed_gap']} directed neuron-neuron "
        "entries); each unordered pair is written once with pre <= post (alphabetical) and the count as in "
        f"the source. The two directions disagree in {stats['gap_disagreeing']} pairs "
        "(where they would, the larger count is kept).",
        "Fractional counts: " + (f"{stats['fractional']} (kept as given)." if stats["fractional"] else "none."),
    ]


def write_connectome(path, rows, header_lines):
    with open(path, "w", newline="") as stream:
        for line in header_lines:
            stream.write(f"# {line}\n")
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["pre", "post", "count", "kind", "neurotransmitter"])
        for kind, pre, post, count, transmitter in rows:
            writer.writerow([pre, post, format_count(count), kind, transmitter])


def write_neurons(path, transmitters):
    roles = neuron_roles()
    with open(path, "w", newline="") as stream:
        stream.write(
            f"# The 302 C. elegans hermaphrodite neurons (cect {cect.__version__}, "
            "Cells.PREFERRED_HERM_NEURON_NAMES).\n"
            "# class: the name without the number of a ventral cord class (VA1 -> VA, AS10 -> AS; PDA, PDB stay),\n"
            "#   without the L/R of a bilateral pair (AVAL -> AVA), then without the D/V of a dorsoventral\n"
            f"#   class ({', '.join(sorted(DORSOVENTRAL_CLASSES))}: CEPDL -> CEP, RMED -> RME).\n"
            "# role: cect's grouping of Cook et al. 2019 (Cells.COOK_GROUPING_1): sensory, inter, motor,\n"
            "#   pharyngeal (all 20 pharyngeal neurons), other (CAN, function unknown).\n"
            f"# neurotransmitter: {WANG_SOURCE}, read with cect's Wang2024Reader.\n"
            "#   The first fast classical transmitter (acetylcholine, glutamate, gaba) in Wang's listing, else the\n"
            "#   first monoamine (dopamine, serotonin, octopamine, tyramine); empty when none is known.\n"
            "#   cotransmitters: the neuron's other ones, ';'-separated. Uptake-only, betaine, 5-HTP and\n"
            "#   unknown/orphan labels are left out.\n"
            f"# Generated by: {GENERATOR_COMMAND}\n"
        )
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["name", "class", "role", "neurotransmitter", "cotransmitters"])
        for name in HERM_NEURONS:
            transmitter, cotransmitters = transmitters[name]
            writer.writerow([name, neuron_class(name), roles[name], transmitter, ";".join(cotransmitters)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("neurosim/data"), help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    assert len(HERM_NEURONS) == 302

    transmitters = neuron_transmitters()
    neurons_path = args.out / "neurons_herm.csv"
    write_neurons(neurons_path, transmitters)
    classes = {neuron_class(name) for name in HERM_NEURONS}
    print(f"{neurons_path}: {len(HERM_NEURONS)} neurons, {len(classes)} classes")

    datasets = [
        (
            "connectome_cook2019_herm.csv",
            Cook2019HermReader,
            f"Cook et al. 2019 hermaphrodite connectome, neuron-to-neuron entries. Source: {COOK_SOURCE}",
            f"cect reader Cook2019HermReader (file '{Path(Cook2019HermReader.Cook2019DataReader.filename).name}').",
            "numbers of serial EM sections showing the connection (size-weighted), not numbers of synapses.",
            "chemical count = the hermaphrodite chemical adjacency matrix entry.",
            "body wall, pharyngeal and other muscles, glia (GLR, CEPsh), end organs and other non-neuronal cells",
        ),
        (
            "connectome_varshney2011.csv",
            VarshneyDataReader,
            "Varshney et al. 2011 connectome (extends White et al. 1986; no pharyngeal neurons), "
            f"neuron-to-neuron entries. Source: {VARSHNEY_SOURCE}",
            f"cect reader VarshneyDataReader (file '{Path(VarshneyDataReader.filename).name}', as distributed "
            "by WormAtlas).",
            "numbers of synaptic contacts (each contact counted once whatever its size).",
            "chemical count = S + Sp (monadic plus polyadic 'send' rows; the R/Rp 'receive' rows mirror them "
            "and are not added).",
            "neuromuscular junctions, all given as one body wall muscle 'BWM'",
        ),
    ]
    for filename, reader, title, reader_note, count_meaning, count_rule, dropped_what in datasets:
        rows, stats = connectome_rows(read_connections(reader), transmitters)
        header = [
            title,
            f"Read with cect {cect.__version__} (C. elegans Connectome Toolbox, MIT, "
            f"https://github.com/openworm/ConnectomeToolbox), {reader_note}",
            f"Generated by: {GENERATOR_COMMAND} (see neurosim/data/README.md)",
        ] + caveat_lines(stats, count_meaning, count_rule, dropped_what)
        path = args.out / filename
        write_connectome(path, rows, header)
        print(
            f"{path}: {stats['neurons']} neurons, {stats['chemical']} chemical, {stats['gap']} gap "
            f"({path.stat().st_size / 1024:.0f} KiB)"
        )


if __name__ == "__main__":
    sys.exit(main())
