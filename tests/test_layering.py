"""Imports flow one way (DESIGN.md §2): each layer imports only from the layers above it."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "neurosim"

# module prefix -> rank; a module may import only neurosim modules of lower or equal rank
RANKS = {
    "neurosim._version": 0, "neurosim.units": 0, "neurosim.errors": 0, "neurosim.resources": 0,
    "neurosim.signals": 0,
    "neurosim.model": 1, "neurosim.record": 1, "neurosim.io": 2, "neurosim.compile": 3, "neurosim.kernels": 3,
    "neurosim.integrators": 4, "neurosim.simulate": 5,
    "neurosim.ml": 6, "neurosim.behaviour": 6, "neurosim.fit": 6, "neurosim.explain": 6,
    "neurosim.warmup": 6, "neurosim.connectome": 6, "neurosim.sweep": 6,
    "neurosim.distributed": 6, "neurosim.neuroml": 6,
    "neurosim.plot": 7, "neurosim.cli": 8, "neurosim": 9,
}
# kernels know nothing but other kernels (and numpy/numba), and the layout of the tables
# the layer above them writes
KERNEL_ALLOWED = ("neurosim.kernels", "neurosim.compile.tables")


def rank(module: str) -> int:
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)
    return RANKS[best]


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imported(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("name,path", list(modules()), ids=lambda x: str(x))
def test_imports_flow_one_way(name, path):
    for target in imported(path):
        if not target.startswith("neurosim"):
            continue
        if name.startswith("neurosim.kernels"):
            assert target.startswith(KERNEL_ALLOWED), f"{name} imports {target}"
        elif target.startswith("neurosim.kernels"):  # DESIGN.md: compile is above them
            assert name.startswith("neurosim.integrators"), \
                f"{name} imports the kernels; only integrators may"
        assert rank(target) <= rank(name), f"{name} (layer {rank(name)}) imports {target}"


def module_level_imports(path):
    """neurosim modules imported at a module's top level (what runs when it is imported;
    an import inside a function runs later and cannot close a cycle at import time)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("neurosim"):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("neurosim"))


def import_cycles(graph: dict) -> list[list[str]]:
    """The cycles a depth-first search meets in ``graph`` (module -> imported modules)."""
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return cycles


#: DESIGN.md: the apps (ml, behaviour, fit, ...) are built on simulate, the public run API,
#: and the CLI and plots are shells over them: none reaches past simulate into the
#: integrators or kernels.  warmup is the exception by its job: it compiles the kernels.
BELOW_THE_RUN_API = ("neurosim.integrators", "neurosim.kernels")
KERNEL_TOOLS = {"neurosim.warmup"}
SCRIPTS = PACKAGE.parent / "scripts"


@pytest.mark.parametrize("name,path", [(n, p) for n, p in modules()
                                       if rank(n) > RANKS["neurosim.simulate"]
                                       and n not in KERNEL_TOOLS], ids=lambda x: str(x))
def test_apps_use_the_public_run_api(name, path):
    for target in imported(path):
        assert not target.startswith(BELOW_THE_RUN_API), \
            f"{name} imports {target}; use neurosim.simulate (the public run API)"


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_scripts_use_the_public_run_api(path):
    for target in imported(path):
        assert not target.startswith(BELOW_THE_RUN_API), \
            f"scripts/{path.name} imports {target}; use neurosim.simulate"


def test_the_cycle_finder_finds_planted_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"p": {"p.x"}, "p.x": {"p"}}) == [["p", "p.x", "p"]]


def test_no_import_cycles_inside_a_layer():
    """The ranks above order layers; within a layer (or a package) modules must still not
    import each other in a circle at import time: such a cycle works only by import order,
    and breaks when a user imports the other module first (a submodule importing its own
    package back is one)."""
    names = {name for name, _ in modules()}
    graph = {name: {target for target in module_level_imports(path)
                    if target in names and target != name}
             for name, path in modules()}
    cycles = import_cycles(graph)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


# ---------------------------------------------------------------- the tests' own layering

TESTS = pathlib.Path(__file__).resolve().parent


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_test_modules_share_code_only_through_helpers_and_fixtures(path):
    """conftest.py's convention: no test module imports another, or conftest itself."""
    for target in imported(path):
        top = target.split(".")[0]
        assert not (top.startswith("test_") or top == "conftest"), \
            f"{path.name} imports {target}; move the shared name to helpers.py or a fixture"
