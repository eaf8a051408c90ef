"""Parameter sweeps: every run equals simulate_batch's bit for bit, in this process and
on a Dask cluster; a killed worker or an interrupted client loses and duplicates nothing;
bad specifications are one-line errors naming the key."""

import os
import signal

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.behaviour import classify
from neurosim.compile import circuit_with_theta, compile_circuit
from neurosim.io.sweep_file import load_sweep
from neurosim.sweep import loads_sweep_spec, plan_sweep, sweep, theta_rows
from helpers import EXAMPLE, TW, run_main

GRID = """\
parameters:
  - {select: "synapses[AVD->AVA].w", range: [0.5, 2.0], steps: 4}
  - {select: "synapses[*].nu", values: [0.05, 0.1]}
  - {select: "gap_junctions[*].g", range: [0.5, 2.0], steps: 2, scale: true, log: true}
protocols: [tap, tap_no_PLM]
simulation: {dt_out: 10.0}
record: [AVA, AVB, REV, FWD]
chunk: 5
"""


@pytest.fixture(scope="module")
def tw():
    return ns.load_circuit(TW)


def write(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_grid_is_the_product_of_its_axes_and_theta_holds_it(tw):
    plan = plan_sweep(tw, loads_sweep_spec(GRID))
    assert plan.values.shape == (16, 3) and plan.n_chunks == 4
    expected = [(w, nu, g) for w in (0.5, 1.0, 1.5, 2.0) for nu in (0.05, 0.1)
                for g in (0.5, 2.0)]
    np.testing.assert_allclose(plan.values, expected, rtol=1e-15)
    layout = compile_circuit(tw).layout
    base = compile_circuit(tw).theta
    theta = theta_rows(plan, slice(0, 16))
    assert np.all(theta[:, layout.index("synapses[AVD->AVA].w")] == plan.values[:, 0])
    assert np.all(theta[:, layout.block("synapses.nu")] == plan.values[:, 1:2])
    gaps = layout.block("gap_junctions.g")
    np.testing.assert_array_equal(theta[:, gaps], base[gaps][None, :] * plan.values[:, 2:3])
    untouched = np.ones(base.size, bool)
    untouched[[layout.index("synapses[AVD->AVA].w")]] = False
    untouched[layout.block("synapses.nu")] = untouched[gaps] = False
    assert np.all(theta[:, untouched] == base[untouched])


@pytest.mark.parametrize("sample", ["{method: random, n: 7, seed: 3}",
                                    "{method: lhs, n: 7, seed: 3}"])
def test_random_samples_stay_in_their_ranges_and_follow_the_seed(tw, sample):
    text = ("parameters:\n  - {select: \"synapses[*].w\", range: [0.5, 2.0], scale: true}\n"
            "  - {select: \"neurons[AVA].C\", range: [10, 100], log: true}\n"
            f"sample: {sample}\n")
    a, b = (plan_sweep(tw, loads_sweep_spec(text)).values for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (7, 2) and np.all((0.5 <= a[:, 0]) & (a[:, 0] <= 2.0))
    assert np.all((10 <= a[:, 1]) & (a[:, 1] <= 100))
    other = plan_sweep(tw, loads_sweep_spec(text.replace("seed: 3", "seed: 4"))).values
    assert not np.array_equal(a, other)
    if "lhs" in sample:  # one point in each of the 7 strata of every axis
        strata = np.floor((np.log(a[:, 1]) - np.log(10)) / (np.log(100) - np.log(10)) * 7)
        assert sorted(strata) == list(range(7))


def test_sweep_equals_simulate_batch_bit_for_bit_and_reads_back(tw, tmp_path):
    spec = write(tmp_path, GRID)
    summary = sweep(tw, spec, tmp_path / "s.h5")
    assert summary.complete and summary.runs == 16 and summary.failed == 0
    plan = plan_sweep(tw, loads_sweep_spec(GRID))
    batch = ns.simulate_batch(tw, theta_rows(plan, slice(0, 16)), ["tap", "tap_no_PLM"],
                              dt_out=10.0, record=["AVA", "AVB", "REV", "FWD"])
    result = load_sweep(tmp_path / "s.h5")
    np.testing.assert_array_equal(result.V, batch.V)
    np.testing.assert_array_equal(result.time, batch.t)
    np.testing.assert_array_equal(result.parameters, plan.values)
    assert result.complete and np.all(result.status == 0) and result.neuron_names == (
        "AVA", "AVB", "REV", "FWD")
    assert result.attributes["circuit_yaml"] == ns.dump_circuit(tw)


def test_readout_scores_are_those_of_single_runs(tw, tmp_path):
    text = ("parameters:\n  - {select: \"synapses[PVC->AVB].w\", values: [0.2, 1.5]}\n"
            "protocols: [tap, tap_no_AVB, posterior_gentle]\nrecord: readout\n")
    sweep(tw, write(tmp_path, text), tmp_path / "r.h5")
    result = load_sweep(tmp_path / "r.h5")
    assert result.V is None and result.score.shape == (3, 2)
    readout = tw.readout("behaviour")
    k = compile_circuit(tw).layout.index("synapses[PVC->AVB].w")
    for b, w in enumerate((0.2, 1.5)):
        theta = compile_circuit(tw).theta.copy()
        theta[k] = w
        changed = circuit_with_theta(compile_circuit(tw), theta)
        for p, name in enumerate(("tap", "tap_no_AVB", "posterior_gentle")):
            single = ns.simulate(changed, name, dt_out=5.0)
            assert result.score[p, b] == pytest.approx(classify(readout, single).score,
                                                       abs=1e-12)


def test_an_interrupted_sweep_resumes_to_the_same_file(tw, tmp_path):
    spec = write(tmp_path, GRID)
    sweep(tw, spec, tmp_path / "whole.h5")

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(tw, spec, tmp_path / "cut.h5", progress=stop_after_two)
    partial = tmp_path / "cut.h5.partial"
    assert not (tmp_path / "cut.h5").exists() and partial.exists()
    with h5py.File(partial, "r") as f:
        assert list(f["done"][:]) == [True, True, False, False]
        assert np.all(f["status"][:, 10:] == -1)
    with pytest.raises(ns.NeurosimError, match="did not finish: continue it with resume=True"):
        sweep(tw, spec, tmp_path / "cut.h5")  # neither resumed nor overwritten
    changed = write(tmp_path, GRID.replace("steps: 4", "steps: 3"), "other.yaml")
    with pytest.raises(ns.NeurosimError, match="--resume continues the same sweep only"):
        sweep(tw, changed, tmp_path / "cut.h5", resume=True)
    summary = sweep(tw, spec, tmp_path / "cut.h5", resume=True)
    assert summary.chunks_skipped == 2 and summary.chunks_run == 2 and summary.complete
    whole, cut = load_sweep(tmp_path / "whole.h5"), load_sweep(tmp_path / "cut.h5")
    for name in ("V", "status", "stats", "parameters", "time"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(whole, name), err_msg=name)
    with pytest.raises(ns.NeurosimError, match="complete already"):
        sweep(tw, spec, tmp_path / "cut.h5", resume=True)


@pytest.mark.parametrize("text,where,message", [
    ("parameters:\n  - {select: \"synapses[AVD->AVX].w\", values: [1]}\n", ":2: parameters[0].select",
     "matches no parameter"),
    ("parameters:\n  - {select: \"synapses[*].w\", range: [2, 1], steps: 3}\n", ":2: parameters[0].range",
     "low < high"),
    ("parameters:\n  - {select: \"gap_junctions[*].g\", values: [1, -0.5]}\n", ":2: parameters[0]",
     "gap_junctions[AVM-AVD].g: must be >= 0, got -0.5"),
    ("parameters:\n  - {select: \"synapses[*].w\", values: []}\n", ":2: parameters[0].values",
     "at least 1 item"),
    ("parameters:\n  - {select: \"synapses[*].w\", range: [0, 1]}\nsample: {method: lhs}\n",
     ":3: sample", "needs n"),
    ("parameters:\n  - {select: \"synapses[*].w\", values: [1]}\nprotocols: [tapp]\n",
     ":3: protocols[0]", "Did you mean 'tap'"),
    ("parameters:\n  - {select: \"synapses[*].w\", values: [1]}\nprotocols: [tap, tap]\n",
     ":3: protocols[1]", "protocol 'tap' is listed twice"),
    ("parameters:\n  - {select: \"synapses[*].w\", values: [1]}\nrecord: [AVX]\n",
     ":3: record[0]", "unknown neuron 'AVX'"),
    ("parameters:\n  - {select: \"synapses[*].w\", values: [1]}\n  - {select: \"synapses[AVD->AVA].w\", values: [2]}\n",
     ":3: parameters[1].select", "also set by parameters[0]"),
    ("parameters:\n  - {select: \"synapses[*].w\", range: [0, 1], steps: 100000}\n"
     "  - {select: \"synapses[*].nu\", range: [0.1, 1], steps: 1000}\n", ":1: parameters",
     "more than 10,000,000"),
    ("parameters:\n  - {select: \"synapses[*].w\", range: [0, 1], steps: 100000000000}\n",
     ":2: parameters[0].steps", "more than 10,000,000"),
])
def test_bad_specifications_name_file_line_and_key(tw, tmp_path, text, where, message):
    spec = write(tmp_path, text)
    with pytest.raises(ns.CircuitError) as info:
        sweep(tw, spec, tmp_path / "x.h5")
    text = str(info.value)
    assert f"sweep.yaml{where}" in text and message in text and "\n" not in text, text
    assert not list(tmp_path.glob("x.h5*"))


def test_command_line_sweep_info_and_refusals(tmp_path, monkeypatch):
    spec = write(tmp_path, "parameters:\n  - {select: \"neurons[*].C\", values: [5, 10, 20]}\n"
                           "simulation: {dt_out: 1.0}\nchunk: 2\n")
    code, out, err = run_main(monkeypatch, tmp_path, "sweep", EXAMPLE, spec, "-o", "s.h5")
    assert code == 0 and "3 runs in 2 chunks, 0 failed" in out, err
    code, out, _ = run_main(monkeypatch, tmp_path, "info", "s.h5")
    assert code == 0 and "3 x 2 protocols: 6 completed, 0 failed, 0 not run" in out
    code, _, err = run_main(monkeypatch, tmp_path, "sweep", EXAMPLE, spec, "-o", "s.h5")
    assert code == 2 and "s.h5 exists; pass --overwrite" in err
    code, _, err = run_main(monkeypatch, tmp_path, "sweep", EXAMPLE, spec, "-o", "s.csv")
    assert code == 2 and "end its name in .h5" in err


def test_a_disk_that_fills_during_the_sweep_takes_nothing_from_it(tw, tmp_path, small_disk):
    """The file takes every block it needs when it is created: a disk filled by another
    program during the sweep leaves the sweep whole; a sweep larger than the disk is
    refused before it starts, leaving nothing."""
    spec = write(tmp_path, GRID.replace("steps: 4", "steps: 40"))   # 1.6 MB of traces
    sweep(tw, spec, tmp_path / "reference.h5")

    def fill_the_disk(done, total):
        if done == 1:
            with open(small_disk / "filler", "wb") as filler:
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                except OSError:
                    pass

    summary = sweep(tw, spec, small_disk / "s.h5", progress=fill_the_disk)
    assert summary.complete and (small_disk / "filler").stat().st_size > 0
    whole, filled = load_sweep(tmp_path / "reference.h5"), load_sweep(small_disk / "s.h5")
    np.testing.assert_array_equal(filled.V, whole.V)
    (small_disk / "filler").unlink()
    (small_disk / "s.h5").unlink()
    big = write(tmp_path, GRID.replace("steps: 4", "steps: 400"), "big.yaml")  # 18 MB
    with pytest.raises(ns.ResourceError, match=r"would take 1\d.\d MB, but only 8.\d MB are free"):
        sweep(tw, big, small_disk / "big.h5")
    assert list(small_disk.iterdir()) == []



dask = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def cluster():
    from neurosim.distributed import connect
    client, owned = connect(workers=2)
    yield client
    for thing in owned:
        thing.close()


def test_on_two_workers_the_file_is_the_in_process_one(tw, tmp_path, cluster):
    spec = write(tmp_path, GRID)
    sweep(tw, spec, tmp_path / "here.h5")
    summary = sweep(tw, spec, tmp_path / "there.h5", client=cluster)
    assert summary.complete
    here, there = load_sweep(tmp_path / "here.h5"), load_sweep(tmp_path / "there.h5")
    for name in ("V", "status", "stats", "parameters"):
        np.testing.assert_array_equal(getattr(there, name), getattr(here, name), err_msg=name)


def test_a_worker_killed_mid_sweep_loses_and_repeats_nothing(tw, tmp_path, cluster):
    text = GRID.replace("steps: 4", "steps: 12").replace("chunk: 5", "chunk: 4")
    spec = write(tmp_path, text)
    sweep(tw, spec, tmp_path / "here.h5")
    pids = cluster.run(os.getpid)
    killed = []

    def kill_one(done, total):
        if done == 1 and not killed:
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    summary = sweep(tw, spec, tmp_path / "there.h5", client=cluster, progress=kill_one)
    assert killed and summary.complete and summary.failed == 0
    here, there = load_sweep(tmp_path / "here.h5"), load_sweep(tmp_path / "there.h5")
    np.testing.assert_array_equal(there.V, here.V)
    np.testing.assert_array_equal(there.status, here.status)
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test


def test_sign_patterns_and_starts_fit_alike_on_the_cluster(tw, cluster):
    from neurosim.distributed import Executor
    from neurosim.fit import Objective, Parameterization, load_behaviour
    from neurosim.fit.identify import ensemble
    from neurosim.fit.signs import enumerate_signs
    targets = load_behaviour(os.path.join(os.path.dirname(TW), "data",
                                          "tap_withdrawal_behaviour.csv"))
    free = [{"select": "synapses[pre=AVD].w", "bounds": [0, 3]}]
    options = dict(dt_out=10.0)
    here = enumerate_signs(tw, targets, ["AVD", "PVC"], free, maxiter=3, objective_options=options)
    with Executor(client=cluster) as executor:
        there = enumerate_signs(tw, targets, ["AVD", "PVC"], free, maxiter=3,
                                objective_options=options, executor=executor)
        objective = Objective(Parameterization(tw, free), targets, **options)
        starts_there = ensemble(objective, 3, maxiter=3, executor=executor)
    assert [p.signs for p in there] == [p.signs for p in here] and len(here) == 4
    for a, b in zip(here, there):
        assert a.loss == b.loss and np.array_equal(a.x, b.x)
    starts_here = ensemble(objective, 3, maxiter=3)
    np.testing.assert_array_equal(starts_there.x, starts_here.x)
    np.testing.assert_array_equal(starts_there.losses, starts_here.losses)
