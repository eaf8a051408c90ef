"""Imports flow one way (DESIGN.md §2): each layer imports only from the layers above it."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "neurosim"

# module prefix -> rank; a module may import only neurosim modules of lower or equal rank
RANKS = {
    "neurosim._version": 0, "neurosim.units": 0, "neurosim.errors": 0, "neurosim.resources": 0,
    "neurosim.model": 1, "neurosim.record": 1, "neurosim.io": 2, "neurosim.compile": 3, "neurosim.kernels": 3,
    "neurosim.integrators": 4, "neurosim.simulate": 5,
    "neurosim.ml": 6, "neurosim.behaviour": 6, "neurosim.fit": 6, "neurosim.explain": 6,
    "neurosim.warmup": 6, "neurosim.connectome": 6, "neurosim.sweep": 6,
    "neurosim.distributed": 6,
    "neurosim.plot": 7, "neurosim.cli": 8, "neurosim": 9,
}
# kernels know nothing but other kernels (and numpy/numba)
KERNEL_ALLOWED = ("neurosim.kernels",)


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
        elif target.startswith("neurosim.kernels"):
            assert name.startswith(("neurosim.integrators", "neurosim.compile")), \
                f"{name} imports the kernels; only integrators may"
        assert rank(target) <= rank(name), f"{name} (layer {rank(name)}) imports {target}"
