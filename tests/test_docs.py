"""The docs: their examples run as written, their references resolve inside the
repository, every figure is used, and every generated number is what a fresh run gives
within the tolerances of scripts/make_docs.py."""

import fnmatch
import json
import os
import pathlib
import re

import pytest

from helpers import ROOT
from helpers import tw_script as script  # a script of scripts/ as a module

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IMAGES = ROOT / "docs" / "images"

make_docs = script("make_docs")


def examples():
    for page in PAGES:
        for k, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
            if "# doc: skip" not in block:
                yield pytest.param(block, id=f"{page.name}-{k}")


@pytest.mark.parametrize("code", list(examples()))
@pytest.mark.filterwarnings("default::neurosim.RestWarning")  # a page may show one
def test_example_runs(code, tmp_path, monkeypatch):
    os.symlink(ROOT / "circuits", tmp_path / "circuits")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc example>", "exec"), {"__name__": "__doc_example__"})


# --- references -----------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: a path-like token: folders and a name, or a bare page name (DESIGN.md)
PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)+[\w.-]*(?:::\w+)?|[\w-]+\.md\b)")


def ignored(name: str) -> bool:
    """Whether .gitignore keeps a top-level name out of the repository (out/, build/)."""
    patterns = [line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "!"))]
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


REPOSITORY_TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") and not ignored(p.name)}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}


def broken_references(text: str, folder: pathlib.Path) -> list[str]:
    """Links and repository paths in a page's ``text`` (the page in ``folder``) that lead
    to no file of the repository, or to a heading or test that is not there."""
    broken = []
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    for target in LINK.findall(prose):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (folder / path).resolve() if path else None
        if resolved is None:
            continue   # an anchor of the page itself
        if not resolved.exists() or ROOT not in resolved.parents:
            broken.append(f"link {target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"link {target}: no heading #{anchor}")
    for token in PATH.findall(text):
        path, _, test = token.partition("::")
        first = path.split("/")[0]
        if (not (first in REPOSITORY_TOP or path.endswith(".md") or first in ("..", "shared"))
                or any(ignored(part) for part in path.split("/")[:-1])):
            continue   # a file the reader or a run makes (out/tw.csv, __pycache__/), an outside name
        resolved = ((ROOT / path) if (ROOT / path).exists() else (folder / path)).resolve()
        if not resolved.exists() or ROOT not in resolved.parents:
            broken.append(f"path {token}: no such file in the repository")
        elif test and f"def {test}(" not in resolved.read_text():
            broken.append(f"path {token}: {path} has no {test}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_paths_point_to_files_in_the_repository(page):
    assert broken_references(page.read_text(), page.parent) == []


def test_references_outside_the_repository_are_caught():
    text = ("see DESIGN.md, `../shared/notes.md`, [x](nowhere.md), [y](explain.md#no-such),\n"
            "`tests/test_docs.py::test_nothing_here`; fine: `out/t.csv`, [z](#top), "
            "[w](explain.md#motifs), `tests/test_docs.py::test_example_runs`\n")
    found = broken_references(text, ROOT / "docs")
    assert [line.split(": ")[0] for line in found] == [
        "link nowhere.md", "link explain.md#no-such", "path DESIGN.md", "path ../shared/notes.md",
        "path nowhere.md", "path tests/test_docs.py::test_nothing_here"], found


def test_every_image_is_used_and_every_used_image_exists():
    used = set()
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if target.endswith((".png", ".svg", ".jpg")):
                used.add((page.parent / target).resolve())
    shipped = {p.resolve() for p in IMAGES.iterdir()}
    assert sorted(p.name for p in shipped - used) == [], "images no page shows"
    assert sorted(str(p) for p in used - shipped) == [], "images a page shows that are missing"


# --- generated sections ---------------------------------------------------------------

#: which test compares each script's sections with a fresh run; the rest only make_docs
#: --check compares (expressivity.py: two minutes of training)
SECTION_TESTS = {
    "scripts/tap_withdrawal.py": ["tests/test_tap_withdrawal.py::test_the_documented_tables_are_those_the_code_gives_today",
                                  "tests/test_tap_withdrawal.py::test_the_readme_quotes_what_behave_prints_today",
                                  "tests/test_tap_withdrawal_lr.py::test_the_documented_lr_table_is_what_the_code_gives_today"],
    "scripts/fit_tap_withdrawal.py": ["tests/test_tap_withdrawal.py::test_refitting_gives_the_documented_outcome",
                                      "tests/test_tap_withdrawal_lr.py::test_the_documented_lr_fit_of_seed_0_is_the_shipped_lr_circuit",
                                      "tests/test_tap_withdrawal_lr.py::test_refitting_the_lr_circuit_gives_the_documented_outcome"],
    "scripts/explain_tap_withdrawal.py": ["tests/test_explain.py::test_the_documented_explanation_is_what_the_code_gives_today"],
    "scripts/planted_truth.py": ["tests/test_fit.py::test_the_planted_truth_page_is_what_the_script_prints_today"],
    "scripts/succinctness.py": ["tests/test_docs.py::test_the_succinctness_table_is_the_one_its_data_give"],
    "scripts/worked_examples.py": ["tests/test_docs.py::test_the_readme_batch_numbers_are_a_fresh_run",
                                   "tests/test_docs.py::test_the_fit_example_prints_what_fitting_md_quotes"],
    "scripts/expressivity.py": ["tests/test_ml.py::test_expressivity_docs_are_the_data_and_a_cell_reruns"],
    "scripts/capacity.py": ["tests/test_ml.py::test_capacity_docs_are_the_data_and_a_cell_reruns"],
    "scripts/sweep_overhead.py": [],
    "scripts/connectome_examples.py": ["tests/test_docs.py::test_the_connectome_transcript_is_what_the_commands_print_today"],
    "scripts/neuroml_examples.py": ["tests/test_neuroml.py::test_the_documented_crosscheck_is_what_the_code_gives_today"],
}


def test_every_generated_section_has_its_script_in_make_docs_and_its_test():
    sections = make_docs.generated_sections(ROOT)
    scripts = {script for _, script, _ in sections}
    assert scripts == {f"scripts/{step.script}" for step in make_docs.STEPS}
    assert scripts == set(SECTION_TESTS)
    for name in scripts:
        assert (ROOT / name).exists()
        for node in SECTION_TESTS[name]:
            path, test = node.split("::")
            assert f"def {test}(" in (ROOT / path).read_text(), node
    for page in PAGES:   # every start has its end
        text = page.read_text()
        assert text.count(": start -->") == text.count(": end -->") == len(
            [k for k in sections if k[0] == str(page.relative_to(ROOT))])


def test_sections_are_compared_number_by_number_timings_excepted():
    differences = make_docs.differences
    assert differences("loss 0.039 after 929 evaluations, 13 s on 2 cores",
                       "loss 0.040 after 929 evaluations, 61 s on 4 cores") == []
    assert differences("score +0.039", "score +0.041") == ["+0.039 is now +0.041 (allowed ±0.001)"]
    assert differences("loss 0.0094", "loss 0.011", rtol=0.25) == []
    assert differences("4,000 sets ran 2,664 runs/s, 9.9× as many",
                       "4,000 sets ran 26,322 runs/s, 1.2× as many") == []
    assert differences("| tap | reversal |", "| tap | none |")[0].startswith("text differs")
    assert differences("2.9e-11", "3.0e-11") == [] and differences("2.9e-11", "3.1e-11") != []


def documented(script_name: str, page: str, k: int = 0) -> str:
    return make_docs.generated_sections(ROOT)[(page, f"scripts/{script_name}", k)]


def test_the_succinctness_table_is_the_one_its_data_give():
    succinctness = script("succinctness")
    rows = json.loads((ROOT / "docs" / "data" / "succinctness.json").read_text())
    assert documented("succinctness.py", "docs/explain.md") == succinctness.table(rows) + "\n"


def test_the_readme_batch_numbers_are_a_fresh_run():
    """The float32 deviation of README's snippet, rerun (the throughputs beside it are
    timings, which name their conditions and are not compared)."""
    examples = script("worked_examples")
    quoted = documented("worked_examples.py", "README.md")
    was = re.search(r"within (\S+) mV of its float64 batch", quoted)[1]
    now = f"{examples.float32_deviation():.2g}"
    assert make_docs.differences(was, now, rtol=0.25) == [], (was, now)


@pytest.mark.slow
def test_the_fit_example_prints_what_fitting_md_quotes():
    """docs/fitting.md's `neurosim fit` example, rerun once (about 20 s once compiled): its
    loss and evaluations within the worked examples' tolerance, timings excepted."""
    examples = script("worked_examples")
    fresh = examples.fit_markdown(examples.fit_example(None, warm_up=False))
    step = next(s for s in make_docs.STEPS if s.script == "worked_examples.py")
    assert make_docs.differences(documented("worked_examples.py", "docs/fitting.md"), fresh,
                                 step.rtol) == []


@pytest.mark.slow
def test_the_connectome_transcript_is_what_the_commands_print_today():
    """docs/connectome.md's commands, rerun: what they print, numbers compared one by one
    (the run's wall time excepted)."""
    fresh = script("connectome_examples").transcript()
    assert make_docs.differences(documented("connectome_examples.py", "docs/connectome.md"),
                                 fresh) == []
