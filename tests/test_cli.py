"""The neurosim command, run as a user would: in a subprocess, in a fresh directory."""

import subprocess
import sys

import h5py
import pytest

from test_io_yaml import EXAMPLE


def neurosim(*args, cwd):
    return subprocess.run([sys.executable, "-m", "neurosim.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_run_info_plot_graph_validate(tmp_path):
    run = neurosim("run", EXAMPLE, "--protocol", "baseline", "-o", "out.h5", "--dt-out", "1",
                   "--record", "A,B", "--plot", "run.png", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "baseline: 501 samples x 2 neurons" in run.stdout
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f.attrs["complete"] and f["V"].shape == (501, 2)
    info = neurosim("info", "out.h5", cwd=tmp_path)
    assert info.returncode == 0 and "complete" in info.stdout and "A, B" in info.stdout
    plot = neurosim("plot", "out.h5", "-o", "traces.png", cwd=tmp_path)
    assert plot.returncode == 0
    graph = neurosim("graph", EXAMPLE, "-o", "graph.png", cwd=tmp_path)
    assert graph.returncode == 0
    for png in ("run.png", "traces.png", "graph.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    validate = neurosim("validate", EXAMPLE, cwd=tmp_path)
    assert validate.returncode == 0 and "neurons       3: S, A, B" in validate.stdout


def test_run_all_protocols(tmp_path):
    run = neurosim("run", EXAMPLE, "--all", "-o", "run.h5", "-i", "rk4", "--dt", "0.1",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run_baseline.h5").exists() and (tmp_path / "run_no_A.h5").exists()


@pytest.mark.parametrize("args,needle", [
    (["run", "missing.yaml", "-o", "x.h5"], "cannot read circuit file"),
    (["run", EXAMPLE, "-p", "nope", "-o", "x.h5"], "unknown protocol 'nope'; known: baseline, no_A"),
    (["run", EXAMPLE, "-o", "x.h5"], "choose --protocol"),
    (["run", EXAMPLE, "-p", "baseline", "-i", "rk4", "--dt", "0.3", "--dt-out", "1", "-o", "x.h5"],
     "whole multiple of dt"),
    (["info", "missing.h5"], "no such result file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    out = neurosim(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_yaml_names_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nneurons:\n  - {name: A, g_L: -1}\n")
    out = neurosim("validate", "bad.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "neurosim: error: bad.yaml:3: neurons[0].g_L: must be >= 0, got -1.0"


def test_existing_output_needs_overwrite(tmp_path):
    args = ("run", EXAMPLE, "-p", "baseline", "-o", "out.h5")
    assert neurosim(*args, cwd=tmp_path).returncode == 0
    second = neurosim(*args, cwd=tmp_path)
    assert second.returncode == 2 and "--overwrite" in second.stderr
    assert neurosim(*args, "--overwrite", cwd=tmp_path).returncode == 0


def test_numerical_failure_exits_1_and_keeps_partial_file(tmp_path):
    (tmp_path / "stiff.yaml").write_text(
        "name: stiff\nneurons:\n  - {name: A, C: 0.001, g_L: 10, V0: 0}\n"
        "protocols:\n  p: {duration: 5}\n")
    out = neurosim("run", "stiff.yaml", "-i", "euler", "--dt", "0.1", "-o", "s.h5", cwd=tmp_path)
    assert out.returncode == 1 and "neuron 'A'" in out.stderr
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert not f.attrs["complete"] and f.attrs["status"] == "failed"


def test_help_on_every_subcommand(tmp_path):
    for sub in ("run", "validate", "info", "plot", "graph"):
        out = neurosim(sub, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "usage: neurosim" in out.stdout


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    """`neurosim info circuit.yaml | head -1`: the reader leaves early; exit 0, no traceback."""
    code = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1);"
            "from neurosim.cli import main; sys.exit(main(['validate', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == ""
