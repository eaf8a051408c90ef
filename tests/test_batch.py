"""simulate_batch: bit-for-bit equal to one-by-one runs, ablation as data, failures per item."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit
from helpers import TW
from reference import random_circuit


@pytest.mark.parametrize("integrator,options", [("dopri5", {}), ("rosenbrock23", {}),
                                                ("rk4", {"dt": 0.5}), ("ltc", {"dt": 1.0})])
def test_batch_equals_one_by_one_bit_for_bit(integrator, options):
    c = ns.load_circuit(TW)
    base = compile_circuit(c).theta
    rng = np.random.default_rng(1)
    params = np.tile(base, (3, 1))
    weights = compile_circuit(c).layout.block("synapses.w")
    params[1:, weights] *= rng.uniform(0.5, 1.5, (2, 26))  # perturb weights
    protocols = ["tap", "tap_no_PLM", "tap_half_PLM", "anterior", "tap_no_AVA"]
    batch = ns.simulate_batch(c, params, protocols, integrator=integrator, dt_out=5.0, **options)
    assert batch.V.shape == (5, 3, 301, 11) and not batch.failed.any()
    for p, name in enumerate(protocols):
        for k in range(3):
            if k == 0:
                one = ns.simulate(c, name, integrator=integrator, dt_out=5.0, **options)
            else:  # a parameter set applies to the unablated circuit; rebuild it by hand
                if c.protocols[name].ablate or c.protocols[name].scale:
                    continue
                one = ns.simulate(c, name, integrator=integrator, dt_out=5.0, theta=params[k],
                                  **options)
            got = batch.result(name, k)
            assert got.neuron_names == one.neuron_names
            np.testing.assert_array_equal(got.V, one.V)
            np.testing.assert_array_equal(got.t, one.t)
            assert got.stats["steps"] == one.stats["steps"]


def test_ablated_neurons_are_nan_and_random_circuits_agree():
    circuit, stimuli = random_circuit(5, 9, n_clamped=1)
    circuit = circuit.replace(stimuli={f"s{i}": s for i, s in enumerate(stimuli)},
                              protocols={"all": ns.Protocol(20.0, tuple(f"s{i}" for i in range(len(stimuli)))),
                                         "cut": ns.Protocol(15.0, ("s0",), ablate=("N3", "N7"))})
    batch = ns.simulate_batch(circuit, integrator="dopri5", dt_out=0.5)
    assert np.all(np.isnan(batch.v("N3")[1])) and np.all(np.isfinite(batch.v("N3")[0]))
    assert np.all(np.isnan(batch.V[1, 0, 31:]))  # the shorter protocol is padded
    for name in ("all", "cut"):
        one = ns.simulate(circuit, name, dt_out=0.5)
        np.testing.assert_array_equal(batch.result(name).V, one.V)


def test_failures_are_per_item_and_explained():
    c = ns.Circuit("c", (ns.Neuron("A", C=10.0, g_L=1.0, V0=0.0),), protocols={"p": ns.Protocol(5.0)})
    params = np.tile(compile_circuit(c).theta, (3, 1))
    params[1, 0] = 1e-3  # C = 0.001 pF: explicit Euler at dt 0.1 explodes
    batch = ns.simulate_batch(c, params, integrator="euler", dt=0.1)
    assert list(batch.status[0]) == ["complete", "failed", "complete"]
    assert "neuron 'A'" in batch.messages[(0, 1)] and "euler" in batch.messages[(0, 1)]
    np.testing.assert_array_equal(batch.V[0, 0], batch.V[0, 2])


def two_cells():
    neurons = (ns.Neuron("A"), ns.Neuron("B"))
    return ns.Circuit("c", neurons, gap_junctions=(ns.GapJunction("A", "B"),),
                      protocols={"p": ns.Protocol(5.0)})


@pytest.mark.parametrize("integrator,options", [("dopri5", {}), ("rosenbrock23", {}),
                                                ("rk4", {"dt": 0.05})])
def test_a_failed_run_keeps_in_a_batch_the_rows_it_keeps_alone(integrator, options):
    """A run that leaves the potential bound keeps the samples up to its last good state,
    not those the failing step's interpolant wrote: the same rows as the single run, and
    the same sentence."""
    c = ns.Circuit("bound", (ns.Neuron("A", C=10.0, g_L=1.0, E_L=-70.0, V0=-70.0),
                             ns.Neuron("B", C=10.0, g_L=1.0, E_L=-70.0, V0=-70.0)),
                   (ns.Synapse("A", "B", w=1.0, E=0.0, mu=-40.0, nu=0.1),),
                   stimuli={"kick": ns.Stimulus("step", ("A",), amplitude=100.0, start=5.0)},
                   protocols={"p": ns.Protocol(60.0, ("kick",))})
    theta = np.tile(compile_circuit(c).theta, (5, 1))
    theta[::2, compile_circuit(c).layout.index("neurons[A].g_L")] = 0.2  # A rises past 100 mV
    options = dict(integrator=integrator, dt_out=0.7, initial="as_given", v_bound=100.0,
                   **options)
    batch = ns.simulate_batch(c, theta, "p", **options)
    assert list(batch.status[0]) == ["failed", "complete"] * 2 + ["failed"]
    for k in range(5):
        one = ns.simulate(c, "p", theta=theta[k], raise_on_failure=False, **options)
        np.testing.assert_array_equal(batch.result(0, k).V, one.V)
        assert batch.result(0, k).message == one.message
    assert np.nanmax(batch.V) <= 100.0


@pytest.mark.parametrize("column,value,match", [
    ("neurons[A].C", -1.0, r"neurons\[A\].C: must be > 0, got -1.0 \(parameter set 1\)"),
    ("neurons[B].g_L", np.nan, r"neurons\[B\].g_L: must be a finite number"),
    ("gap_junctions[A-B].g", -0.5, r"gap_junctions\[A-B\].g: must be >= 0"),
])
def test_bad_parameter_matrices_are_refused(column, value, match):
    c = two_cells()
    compiled = compile_circuit(c)
    params = np.tile(compiled.theta, (2, 1))
    params[1, compiled.layout.index(column)] = value
    with pytest.raises(ns.CircuitError, match=match):
        ns.simulate_batch(c, params)


def test_wrong_shape_is_refused():
    with pytest.raises(ns.CircuitError, match=r"theta must have shape \(n_sets, 9\)"):
        ns.simulate_batch(two_cells(), np.zeros((2, 3)))
    with pytest.raises(ns.CircuitError, match="theta has no rows"):
        ns.simulate_batch(two_cells(), np.zeros((0, 9)))


def test_rows_that_break_shared_sigmoids_match_the_reference():
    """A neuron's synapses share one sigmoid only while their (μ, ν) agree in every row.

    Rows change μ of the second synapse of A, ν of A's first synapse, or nothing; each row
    must follow the equation (NumPy reference, solve_ivp DOP853) for its own parameters.
    """
    from reference import ReferenceModel
    neurons = (ns.Neuron("A", C=5.0, g_L=1.0, E_L=-60.0, V0=-20.0),
               ns.Neuron("B", C=3.0, g_L=0.5, E_L=-70.0, V0=-65.0),
               ns.Neuron("C", C=4.0, g_L=0.8, E_L=-65.0, V0=-40.0))
    synapses = (ns.Synapse("A", "B", w=2.0, E=0.0, mu=-40.0, nu=0.2),
                ns.Synapse("A", "C", w=1.5, E=-90.0, mu=-40.0, nu=0.2),
                ns.Synapse("C", "A", w=1.0, E=0.0, mu=-45.0, nu=0.15))
    circuit = ns.Circuit("shared", neurons, synapses, (),
                         {}, {"run": ns.Protocol(40.0, ())})
    compiled = compile_circuit(circuit)
    params = np.tile(compiled.theta, (3, 1))
    params[1, compiled.layout.index("synapses[A->C].mu")] = -30.0
    params[2, compiled.layout.index("synapses[A->B].nu")] = 0.05
    own_sigmoid, own_in_row, _ = compiled.net_for(params)[-3:]
    # A's shared sigmoid is that of its first synapse (A->B); A->C differs from it in rows 1, 2
    assert [f"{c.pre}->{c.post}" for c, own in zip(compiled.synapses_csr, own_sigmoid)
            if own] == ["A->C"]
    np.testing.assert_array_equal(own_in_row, [False, False, True])
    # dopri5 batches run in lockstep lanes, rk4 batches one run per item in the single-run
    # kernel: both paths must apply the per-row sigmoids
    dopri5 = ns.simulate_batch(circuit, params, "run", rtol=1e-10, atol=1e-10, dt_out=1.0)
    rk4 = ns.simulate_batch(circuit, params, "run", integrator="rk4", dt=0.005, dt_out=1.0)
    t = np.arange(41.0)
    for k in range(3):
        model = ReferenceModel(ns.compile.circuit_with_theta(compiled, params[k]))
        expected = model.solve(t)
        np.testing.assert_allclose(dopri5.result("run", k).V, expected, atol=2e-7)
        np.testing.assert_allclose(rk4.result("run", k).V, expected, atol=1e-7)
    assert np.abs(dopri5.result("run", 1).V - dopri5.result("run", 0).V).max() > 1.0


def test_lockstep_lanes_equal_single_runs_in_every_detail(monkeypatch):
    """dopri5 batches run in lockstep lanes; each lane must equal a single run bit for bit:
    potentials, every counter and failures, with lanes refilled from their group (3 lanes
    for 10-item groups), several stimulus kinds (some with several targets), gaps, a clamp,
    synapses whose μ differs per row (own sigmoids), output long enough to be cut into two kernel calls (RHS
    evaluations are counted per call), and one run that leaves v_bound."""
    import neurosim.integrators.runs as runs
    monkeypatch.setattr(runs, "MAX_LANES", 3)
    circuit, stimuli = random_circuit(7, 6, n_clamped=1)
    stimuli += [ns.Stimulus("table", ("N2", "N4"), times=(0.0, 4.0, 9.0), values=(0.0, 8.0, -3.0)),
                ns.Stimulus("steps", "N3", times=(1.5, 6.0), values=(4.0, -2.0)),
                ns.Stimulus("pulse_train", ("N4", "N2"), amplitude=6.0, start=0.5, duration=0.7,
                            period=2.0),
                ns.Stimulus("sine", ("N1", "N5", "N3"), amplitude=3.0, frequency=90.0),
                ns.Stimulus("step", "N5", amplitude=-4.0, start=7.25)]
    names = tuple(f"s{i}" for i in range(len(stimuli)))
    circuit = circuit.replace(stimuli=dict(zip(names, stimuli)),
                              protocols={"all": ns.Protocol(24.0, names),
                                         "some": ns.Protocol(13.0, names[1::2])})
    compiled = compile_circuit(circuit)
    rng = np.random.default_rng(5)
    s, block = compiled.n_synapses, compiled.layout.block
    params = np.tile(compiled.theta, (20, 1))
    params[:, block("synapses.w")] *= rng.uniform(0.5, 1.5, (20, s))
    params[:, block("synapses.mu")] += rng.uniform(-5, 5, (20, s))
    params[7, block("synapses.E").start] = 5e4  # a reversal potential of 50 V: leaves v_bound
    batch = ns.simulate_batch(circuit, params, ["all", "some"], rtol=1e-7, atol=1e-7,
                              dt_out=0.005)
    assert batch.V.shape[2] == 4801  # two kernel calls of at most 4096 rows
    assert list(np.flatnonzero(batch.failed[0])) == [7]
    for p, name in enumerate(["all", "some"]):
        for k in range(20):
            one = ns.simulate(circuit, name, theta=params[k], rtol=1e-7, atol=1e-7, dt_out=0.005,
                              raise_on_failure=False)
            got = batch.result(name, k)
            assert got.status == one.status
            if one.status == "complete":  # a failed single run keeps only whole chunks
                np.testing.assert_array_equal(got.V, one.V)
            for key in ("steps", "rejected", "rhs_evaluations"):
                assert got.stats[key] == one.stats[key], (name, k, key)


def test_single_precision_batches_are_as_accurate_as_their_tolerance():
    """precision='float32' (dopri5 lanes in float32) against the NumPy reference at
    rtol 1e-4: as close as float64 runs at the same tolerance; refused where float32
    cannot deliver (other integrators, rtol below 1e-5) or for an unknown precision."""
    from reference import ReferenceModel
    circuit, stimuli = random_circuit(8, 6, n_clamped=1, smooth=True)
    circuit = circuit.replace(stimuli={"s": stimuli[0]},
                              protocols={"run": ns.Protocol(30.0, ("s",))})
    compiled = compile_circuit(circuit)
    rng = np.random.default_rng(8)
    params = np.tile(compiled.theta, (6, 1))
    params[:, compiled.layout.block("synapses.w")] *= rng.uniform(0.5, 1.5,
                                                                  (6, compiled.n_synapses))
    options = dict(rtol=1e-4, atol=1e-4, dt_out=0.5)
    single = ns.simulate_batch(circuit, params, "run", precision="float32", **options)
    double = ns.simulate_batch(circuit, params, "run", **options)
    assert single.V.dtype == np.float32 and double.V.dtype == np.float64
    assert not single.failed.any()
    t = np.arange(61) * 0.5
    for k in range(6):
        exact = ReferenceModel(ns.compile.circuit_with_theta(compiled, params[k]),
                               [stimuli[0]]).solve(t)
        error_single = np.abs(single.result("run", k).V - exact).max()
        error_double = np.abs(double.result("run", k).V - exact).max()
        assert error_single <= 2 * error_double + 1e-3, (k, error_single, error_double)
    with pytest.raises(ns.CircuitError, match="precision must be one of float64, float32"):
        ns.simulate_batch(circuit, params, "run", precision="float16")
    with pytest.raises(ns.CircuitError, match="integrator='dopri5'.*not 'rk4'"):
        ns.simulate_batch(circuit, params, "run", integrator="rk4", dt=0.01, precision="float32")
    with pytest.raises(ns.CircuitError, match="rtol >= 1e-05"):
        ns.simulate_batch(circuit, params, "run", rtol=1e-7, precision="float32")


def lesioned_circuit():
    """Three neurons, a synapse of each sign, a gap junction, a pulse into A; protocol
    "lesion" halves B's connections and starts at rest, "as_given" does not."""
    neurons = (ns.Neuron("A", C=10.0, g_L=1.0, E_L=-60.0, V0=-55.0),
               ns.Neuron("B", C=20.0, g_L=0.5, E_L=-65.0, V0=-50.0),
               ns.Neuron("C", C=15.0, g_L=1.5, E_L=-70.0, V0=-60.0))
    synapses = (ns.Synapse("A", "B", w=1.0, E=0.0, mu=-50.0, nu=0.2),
                ns.Synapse("B", "C", w=0.8, E=-90.0, mu=-45.0, nu=0.15))
    gaps = (ns.GapJunction("A", "C", g=0.3),)
    pulse = ns.Stimulus("pulse", ("A",), amplitude=20.0, start=5.0, duration=20.0)
    protocols = {"lesion": ns.Protocol(60.0, ("pulse",), scale={"B": 0.5}, initial="rest"),
                 "as_given": ns.Protocol(60.0, ("pulse",), initial="as_given")}
    return ns.Circuit("lesioned", neurons, synapses, gaps, {"pulse": pulse}, protocols)


def test_a_batch_plan_runs_many_matrices_as_simulate_batch_does():
    circuit = lesioned_circuit()
    plan = ns.BatchPlan(circuit, dt_out=1.0, rtol=1e-8, atol=1e-8)
    theta = np.tile(compile_circuit(circuit).theta, (3, 1))
    theta[:, plan.layout.index("synapses[A->B].w")] = [0.5, 1.0, 2.0]
    first = plan.run(theta)
    plan.run(theta[::-1])  # another matrix in between changes nothing
    again = plan.run(theta)
    reference = ns.simulate_batch(circuit, theta, dt_out=1.0, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(first.V, again.V)
    np.testing.assert_array_equal(first.V, reference.V)
    status, V = plan.traces(theta)
    assert (status == 0).all()
    np.testing.assert_array_equal(V, reference.V)
    # what each protocol multiplies θ by: B's lesion halves both of its synapses
    w = plan.layout.block("synapses.w")
    np.testing.assert_array_equal(plan.factors[0, w], [0.5, 0.5])
    assert (plan.factors[1] == 1).all()


@pytest.mark.parametrize("integrator,options", [("dopri5", {}), ("rk4", {"dt": 0.5})])
def test_a_batch_written_into_a_reused_array_is_the_batch(integrator, options):
    """out= (lockstep lanes, and item by item): the same numbers bit for bit, the NaN of a
    shorter protocol's rows and of an ablated neuron written over what the array held,
    and the array is the result's V; a plan's traces likewise."""
    circuit, stimuli = random_circuit(5, 9, n_clamped=1)
    circuit = circuit.replace(stimuli={f"s{i}": s for i, s in enumerate(stimuli)},
                              protocols={"all": ns.Protocol(20.0, tuple(f"s{i}" for i in range(len(stimuli)))),
                                         "cut": ns.Protocol(15.0, ("s0",), ablate=("N3", "N7"))})
    theta = np.tile(compile_circuit(circuit).theta, (3, 1))
    theta[:, 0] *= [1.0, 1.5, 2.0]
    options = dict(integrator=integrator, dt_out=0.5, **options)
    fresh = ns.simulate_batch(circuit, theta, **options)
    out = np.full(fresh.V.shape, 7.0)
    for _ in range(2):  # the second call reuses what the first wrote
        again = ns.simulate_batch(circuit, theta, out=out, **options)
        assert again.V is out
        np.testing.assert_array_equal(out, fresh.V)
    assert np.isnan(out[1, :, 31:]).all() and np.isnan(out[1, :, :, 3]).all()
    plan = ns.BatchPlan(circuit, **options)
    out[:] = 7.0
    status, V = plan.traces(theta, out=out)
    assert V is out and (status == 0).all()
    np.testing.assert_array_equal(out[0], fresh.V[0])


def test_an_output_array_that_does_not_fit_is_refused_in_one_line(tmp_path):
    c = ns.load_circuit(TW)
    theta = np.tile(compile_circuit(c).theta, (2, 1))
    shape = (1, 2, 11, 11)
    expected = r"out must be a writeable C-contiguous float64 array of shape \(1, 2, 11, 11\)"
    read_only = np.zeros(shape)
    read_only.flags.writeable = False
    for out, got in ((np.zeros((1, 2, 10, 11)), "float64 array of shape \\(1, 2, 10, 11\\)"),
                     (np.zeros(shape, dtype=np.float32), "float32 array"),
                     (np.zeros(shape[::-1]).T, "non-contiguous"),
                     (read_only, "read-only"), ([0.0], "list")):
        with pytest.raises(ns.CircuitError, match=expected + ".*got .*" + got):
            ns.simulate_batch(c, theta, "tap", dt_out=150.0, out=out)
    with pytest.raises(ns.CircuitError, match="out= and recorder= do not go together"):
        ns.simulate_batch(c, theta, "tap", dt_out=150.0, out=np.zeros(shape),
                          recorder=ns.HDF5BatchRecorder(tmp_path / "never.h5"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_batch_plans_sensitivities_are_derivatives_of_its_traces(protocol):
    """∂V/∂θ before the protocol's factors (a lesioned weight's includes its scale), and
    through the rest where the run starts at rest: central finite differences of the
    plan's own traces are the reference."""
    circuit = lesioned_circuit()
    plan = ns.BatchPlan(circuit, dt_out=2.0, rtol=1e-11, atol=1e-11)
    theta = compile_circuit(circuit).theta.copy()
    names = ["synapses[A->B].w", "synapses[B->C].mu", "gap_junctions[A-C].g", "neurons[B].C",
             "neurons[A].V0"]
    free = np.array([plan.layout.index(name) for name in names])
    status, V, S = plan.sensitivities(theta, free, protocol)
    assert status == 0
    # the tangent loop's V takes the same steps (its right-hand side rounds alike to ~1e-14)
    np.testing.assert_allclose(V, plan.traces(theta)[1][protocol, 0], rtol=0, atol=1e-9)
    for c, p in enumerate(free):
        h = 1e-5 * max(1.0, abs(theta[p]))
        shifted = np.tile(theta, (2, 1))
        shifted[0, p] += h
        shifted[1, p] -= h
        runs = plan.traces(shifted)[1][protocol]
        fd = (runs[0] - runs[1]) / (2 * h)
        scale = max(np.abs(fd).max(), 1e-3)
        assert np.abs(S[..., c] - fd).max() / scale < 1e-5, names[c]


def test_a_batch_plan_refuses_bad_requests_in_one_line():
    circuit = lesioned_circuit()
    plan = ns.BatchPlan(circuit)
    own = plan.compiled.theta
    with pytest.raises(ns.CircuitError, match="protocols= is empty"):
        ns.BatchPlan(circuit, [])
    with pytest.raises(ns.CircuitError, match="names 'lesion' more than once"):
        ns.BatchPlan(circuit, ["lesion", "as_given", "lesion"])
    # Protocol objects have no name of their own: each gets one, so that none is hidden
    inline = ns.BatchPlan(circuit, [ns.Protocol(5.0), "lesion", ns.Protocol(7.0)])
    assert inline.protocols == ("(inline 1)", "lesion", "(inline 2)")
    assert ns.BatchPlan(circuit, [ns.Protocol(5.0)]).protocols == ("(inline)",)
    for protocol in (5, -1, "nope", 0.5):
        with pytest.raises(ns.CircuitError, match="protocol must be one of lesion, as_given"):
            plan.sensitivities(own, [0], protocol)
    for free in ([10 ** 6], [-1], [], ["synapses[X->Y].w"]):
        with pytest.raises(ns.CircuitError, match="free|unknown|parameter"):
            plan.sensitivities(own, free, 0)
    with pytest.raises(ns.CircuitError, match="one parameter vector; theta has 2 rows"):
        plan.sensitivities(np.tile(own, (2, 1)), [0], 0)
    with pytest.raises(ns.CircuitError, match="array of numbers"):
        plan.run(np.array([["a"] * own.size]))
    by_name = plan.sensitivities(own, ["synapses[A->B].w"], "lesion")
    by_position = plan.sensitivities(own, [plan.layout.index("synapses[A->B].w")], 0)
    np.testing.assert_array_equal(by_name[2], by_position[2])
