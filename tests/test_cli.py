"""The neurosim command, run as a user would: in a subprocess, in a fresh directory."""

import subprocess
import sys
import warnings

import h5py
import pytest

from helpers import EXAMPLE, neurosim, run_main


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
     "whole multiple of --dt"),
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


# ---------------------------------------------------------------- first contact

def test_neurosim_alone_lists_the_commands(monkeypatch, tmp_path):
    code, out, _ = run_main(monkeypatch, tmp_path)
    assert code == 2
    for command in ("run", "validate", "info", "plot", "graph", "behave", "fit", "explain"):
        assert f"\n    {command} " in out


def test_debug_works_after_the_command(monkeypatch, tmp_path):
    for where in ((), ("--debug",)):
        code, _, err = run_main(monkeypatch, tmp_path, *where, "run", EXAMPLE, "-p",
                                "no_such_protocol", "-o", "r.h5", *(() if where else ("--debug",)))
        assert code == 2 and "Traceback" in err and "no_such_protocol" in err  # same status
    code, _, err = run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "no_such_protocol",
                            "-o", "r.h5")
    assert code == 2 and err.count("\n") == 1


def test_no_output_is_replaced_without_overwrite(monkeypatch, tmp_path):
    assert run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o", "r.h5",
                    "--dt-out", "10")[0] == 0
    for args in (("plot", "r.h5", "-o", "p.png"), ("graph", EXAMPLE, "-o", "g.png")):
        assert run_main(monkeypatch, tmp_path, *args)[0] == 0
        before = (tmp_path / args[-1]).stat().st_mtime_ns
        code, _, err = run_main(monkeypatch, tmp_path, *args)
        assert code == 2 and f"{args[-1]} exists; pass --overwrite to replace it" in err
        assert (tmp_path / args[-1]).stat().st_mtime_ns == before
        assert run_main(monkeypatch, tmp_path, *args, "--overwrite")[0] == 0
    code, _, err = run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o", "r2.h5",
                            "--plot", "p.png")
    assert code == 2 and "p.png exists" in err and not (tmp_path / "r2.h5").exists()
    code, _, err = run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o", "x.png")
    assert code == 2 and "a result file is HDF5; end its name in .h5" in err
    code, _, err = run_main(monkeypatch, tmp_path, "fit", EXAMPLE, "d.csv", "-o", "x.txt")
    assert code == 2 and "end its name in .yaml" in err
    code, _, err = run_main(monkeypatch, tmp_path, "plot", "r.h5", "-o", "t.pdf2")
    assert code == 2 and "picture format of t.pdf2:" in err


def test_errors_name_the_flags_and_info_json_is_json(monkeypatch, tmp_path):
    import json
    code, _, err = run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o", "r.h5",
                            "-i", "euler", "--dt", "0.2", "--dt-out", "0.3")
    assert code == 2 and "--dt-out = 0.3 ms must be a whole multiple of --dt = 0.2 ms" in err
    assert "dt_out" not in err
    with warnings.catch_warnings():  # shown, as the command line shows them, not raised
        warnings.simplefilter("default", RuntimeWarning)
        code, _, err = run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o",
                                "f.h5", "-i", "euler", "--dt", "50", "--dt-out", "50")
    assert "warning: --dt = 50 ms is above the stability limit" in err
    assert "-i exp_euler or -i rosenbrock23" in err
    assert code == 1 and "try a smaller --dt than 50 ms or -i rosenbrock23" in err
    assert "integrator='" not in err
    assert run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o", "r.h5")[0] == 0
    code, _, err = run_main(monkeypatch, tmp_path, "run", EXAMPLE, "-p", "baseline", "-o", "r.h5")
    assert code == 2 and "pass --overwrite to replace it" in err and "=True" not in err
    code, out, _ = run_main(monkeypatch, tmp_path, "info", "r.h5", "--json")

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")
    info = json.loads(out, parse_constant=no_constants)
    assert code == 0 and info["integrator_options"]["max_step"] == "inf"


def test_progress_without_a_terminal_says_how_long_is_left(monkeypatch, capsys):
    from neurosim import cli
    monkeypatch.setattr(cli._Lines, "EVERY_S", 0.0)
    lines = cli._Lines(4, "sign patterns")
    for _ in range(4):
        lines.update(1)
    err = capsys.readouterr().err.splitlines()
    # the clock starts at the first report (compiling before it is not the work's pace)
    assert err[0].startswith("sign patterns: 2 of 4 (0 s, about ") and err[0].endswith(" left)")
    assert err[-1].startswith("sign patterns: 4 of 4 (") and "left" not in err[-1]
    quiet = cli._Lines(1500.0, "simulating tap", " ms", last_line=False)
    monkeypatch.setattr(cli._Lines, "EVERY_S", 60.0)
    quiet.update(1500.0)
    assert capsys.readouterr().err == ""


def test_flag_names_leave_units_and_derivatives_alone():
    from neurosim.cli import _in_flags
    assert _in_flags("dt = 50 ms is above the limit; max |dV/dt| 1.9e-12 mV/ms") == \
        "--dt = 50 ms is above the limit; max |dV/dt| 1.9e-12 mV/ms"
