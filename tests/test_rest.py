"""Resting states: against an independent root finder on the reference equation, the
choice of initial state, and what a circuit without a stable rest reports."""

import warnings

import numpy as np
import pytest
from scipy.optimize import approx_fprime, root

import neurosim as ns
from neurosim.compile import circuit_with_theta, compile_circuit
from neurosim.simulate import rest_state
from helpers import oscillator
from reference import ReferenceModel, random_circuit


def reference_rest(circuit, start):
    """A root of the reference dV/dt over the free neurons (scipy's hybrid method), and the
    eigenvalues of the reference Jacobian there (finite differences)."""
    model = ReferenceModel(circuit)
    free = ~model.clamped

    def f(x):
        V = model.hold.copy()
        V[free] = x
        return model.dVdt(0.0, V)[free]

    sol = root(f, start[free], method="hybr", tol=1e-13)
    sol.success = np.max(np.abs(f(sol.x)), initial=0.0) < 1e-10  # hybr's own flag is too strict
    J = np.array([approx_fprime(sol.x, lambda x, i=i: f(x)[i], 1e-6) for i in range(free.sum())])
    V = model.hold.copy()
    V[free] = sol.x
    return sol, V, np.linalg.eigvals(J)


def weak(seed, n_clamped=0):
    """A random circuit whose coupling is weak enough that its rest is unique."""
    circuit, _ = random_circuit(seed, 7, n_clamped=n_clamped)
    synapses = tuple(ns.Synapse(s.pre, s.post, w=0.2 * s.w, E=s.E, mu=s.mu, nu=s.nu,
                                kappa=s.kappa) for s in circuit.synapses)
    return circuit.replace(synapses=synapses)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("variant", ["plain", "clamped", "ablated"])
def test_rest_matches_an_independent_root(seed, variant):
    circuit = weak(seed, n_clamped=2 if variant == "clamped" else 0)
    if variant == "ablated":
        circuit = circuit.without(["N2"])
    ours = rest_state(circuit, ns.Protocol(1.0))
    assert ours.stable and ours.method == "newton"
    start = np.array([n.E_L for n in circuit.neurons])
    sol, V, eig = reference_rest(circuit, start)
    assert sol.success
    np.testing.assert_allclose([ours.V[n] for n in circuit.neuron_names], V, rtol=0, atol=1e-8)
    assert np.max(eig.real) < 0
    assert ours.max_real_eigenvalue == pytest.approx(np.max(eig.real), rel=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_strongly_coupled_rest_is_a_root_with_the_right_stability(seed):
    """Full-strength random circuits may have several steady states: whichever we report
    must be a root of the reference equation, with the stability the reference says."""
    circuit, _ = random_circuit(seed, 8, n_clamped=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ns.RestWarning)
        ours = rest_state(circuit, ns.Protocol(1.0))
    model = ReferenceModel(circuit)
    V = np.array([ours.V[n] for n in circuit.neuron_names])
    if ours.method in ("newton", "pre-run", "marginal"):
        assert np.max(np.abs(model.dVdt(0.0, V))) < 1e-9
        sol, _, eig = reference_rest(circuit, V)
        np.testing.assert_allclose(sol.x, V[~model.clamped], atol=1e-8)
        assert (np.max(eig.real) < 0) == ours.stable


def test_a_circuit_without_a_stable_rest_says_so_in_one_line():
    circuit = oscillator()
    roots = []
    for a in np.linspace(-80.0, -10.0, 8):
        for b in np.linspace(-80.0, -10.0, 8):
            sol, V, eig = reference_rest(circuit, np.array([a, b]))
            if sol.success:
                roots.append((V, np.max(eig.real)))
    assert roots and np.ptp([V for V, _ in roots], axis=0).max() < 1e-6  # one steady state
    assert roots[0][1] > 0                                                 # and it is unstable
    with pytest.warns(ns.RestWarning) as caught:
        result = ns.simulate(circuit, "p", dt_out=1.0)
    message = str(caught[0].message)
    assert "\n" not in message
    assert message.startswith("protocol 'p': no stable rest: without stimuli the circuit does "
                              "not settle")
    assert "its steady state is unstable" in message and "pre-run ends in" in message
    assert result.metadata["initial"]["method"] == "unsettled"
    assert np.ptp(result.v("A")) > 20  # and it does oscillate


def test_a_neuron_without_leak_has_only_a_marginal_rest():
    circuit = ns.Circuit("integrator", (ns.Neuron("A", g_L=0.0, E_L=0.0),),
                         protocols={"p": ns.Protocol(10.0)})
    with pytest.warns(ns.RestWarning, match="only marginally stable"):
        result = ns.simulate(circuit, "p")
    assert result.metadata["initial"]["method"] == "marginal"
    assert ns.simulate(circuit, "p", initial="as_given").v("A")[0] == 0.0


def test_which_initial_state_a_run_uses():
    tw = ns.load_circuit("circuits/tap_withdrawal.yaml")
    assert tw.initial_state(tw.protocol("tap")) == "rest"
    given = ns.Circuit("given", (ns.Neuron("A", V0=-50.0), ns.Neuron("B")))
    assert given.initial_state() == "as_given"  # a V0 in the file means: start there
    assert given.replace(initial="rest").initial_state() == "rest"
    assert tw.initial_state(ns.Protocol(1.0, initial="as_given")) == "as_given"
    first = ns.simulate(tw, "rest", dt_out=1.0)
    assert first.metadata["initial"]["method"] == "newton"
    V0 = first.metadata["initial"]["V"]
    assert first.v("AVA")[0] == V0["AVA"] != -70.0
    as_given = ns.simulate(tw, "rest", dt_out=1.0, initial="as_given")
    assert as_given.v("AVA")[0] == -70.0
    assert ns.simulate(tw, "rest", dt_out=1.0, v0={"AVA": -60.0}).v("AVA")[0] == -60.0
    with pytest.raises(ns.CircuitError, match="not both"):
        ns.simulate(tw, "rest", v0={"AVA": -60.0}, initial="rest")
    with pytest.raises(ns.CircuitError, match="initial must be one of rest, as_given"):
        ns.simulate(tw, "rest", initial="settled")


def test_initial_in_yaml_round_trips_and_bad_values_name_the_line(tmp_path):
    text = ("name: x\ninitial: as_given\nneurons:\n  - {name: A}\n"
            "protocols:\n  p: {duration: 5.0, initial: rest}\n")
    circuit = ns.loads_circuit(text)
    assert circuit.initial == "as_given" and circuit.protocol("p").initial == "rest"
    assert ns.loads_circuit(ns.dump_circuit(circuit)) == circuit
    bad = text.replace("initial: rest", "initial: settled")
    with pytest.raises(ns.CircuitError, match=r"<string>:6: protocols.p.initial: .*rest.*as_given"):
        ns.loads_circuit(bad)


def test_a_run_at_rest_stays_there():
    tw = ns.load_circuit("circuits/tap_withdrawal.yaml")
    result = ns.simulate(tw, "rest", rtol=1e-10, atol=1e-10, dt_out=5.0)
    assert np.max(np.abs(result.V - result.V[0])) < 1e-7


def test_each_protocol_rests_in_its_own_circuit():
    """Ablating AVB changes the others' rest: the run must start from that one."""
    tw = ns.load_circuit("circuits/tap_withdrawal.yaml")
    intact, lesioned = rest_state(tw, "tap"), rest_state(tw, "tap_no_AVB")
    assert "AVB" not in lesioned.V
    assert abs(intact.V["AVA"] - lesioned.V["AVA"]) > 0.3
    result = ns.simulate(tw, "tap_no_AVB", dt_out=1.0)
    assert result.v("AVA")[0] == lesioned.V["AVA"]
    model = ReferenceModel(tw.without(["AVB"]))
    V = np.array([lesioned.V[n] for n in model.names])
    assert np.max(np.abs(model.dVdt(0.0, V))) < 1e-12


def test_batch_runs_start_at_their_own_rest_bit_for_bit():
    tw = ns.load_circuit("circuits/tap_withdrawal.yaml")
    compiled = compile_circuit(tw)
    theta = np.tile(compiled.theta, (3, 1))
    w = [k for k, name in enumerate(compiled.layout.names) if name.endswith(".w")]
    theta[:, w] *= np.random.default_rng(1).uniform(0.5, 1.5, (3, len(w)))
    protocols = ["tap", "tap_no_AVB", "tap_half_PLM"]
    batch = ns.simulate_batch(tw, theta, protocols, dt_out=5.0)
    for p, name in enumerate(protocols):
        for k in range(3):
            one = ns.simulate(circuit_with_theta(compiled, theta[k]), name, dt_out=5.0)
            np.testing.assert_array_equal(batch.result(name, k).V, one.V)
            start = batch.start(name, k).V
            assert {n: start[n] for n in one.metadata["initial"]["V"]} == one.metadata["initial"]["V"]
    assert batch.start("tap", 0).method == "newton"


def test_the_result_file_records_the_initial_state(tmp_path):
    tw = ns.load_circuit("circuits/tap_withdrawal.yaml")
    ns.simulate(tw, "tap", dt_out=5.0, recorder=ns.HDF5Recorder(tmp_path / "tap.h5"))
    again = ns.load_result(tmp_path / "tap.h5")
    initial = again.metadata["initial"]
    assert initial["method"] == "newton" and initial["stable"] is True
    assert initial["V"]["AVA"] == again.v("AVA")[0]
    assert initial["message"].startswith("initial state: stimulus-free rest")


def bistable(E_B=-30.0):
    """Two leaky neurons above threshold that inhibit each other: either can win."""
    return ns.Circuit(
        "bistable", (ns.Neuron("A", C=10.0, E_L=-30.0), ns.Neuron("B", C=10.0, E_L=E_B)),
        (ns.Synapse("A", "B", w=3.0, E=-90.0, mu=-40.0, nu=0.3),
         ns.Synapse("B", "A", w=3.0, E=-90.0, mu=-40.0, nu=0.3)),
        protocols={"p": ns.Protocol(100.0)})


def test_a_multistable_circuit_says_so_and_starts_at_a_stable_rest():
    # symmetric: V0 (E_L) leads Newton and the pre-run to the symmetric saddle
    circuit = bistable()
    with pytest.warns(ns.RestWarning, match=r"^protocol 'p': multistable circuit: 1 other stable "
                                            r"rest found from other starts; starting from the one "
                                            r"nearest V0 \(from V0 itself neither Newton nor a "
                                            r"pre-run reaches a stable rest\)"):
        result = ns.simulate(circuit, "p", dt_out=1.0)
    start = result.metadata["initial"]
    assert start["method"] == "probed" and start["stable"] and start["other_rests"] == 1
    V = np.array([start["V"]["A"], start["V"]["B"]])
    sol, _, eig = reference_rest(circuit, V)
    assert sol.success and np.max(np.abs(sol.x - V)) < 1e-8 and np.max(eig.real) < 0
    assert abs(V[0] - V[1]) > 30                      # one neuron won
    assert np.max(np.abs(result.V - V)) < 1e-3        # and the run stays there
    # asymmetric: Newton from V0 reaches one stable rest; the other is reported
    tilted = bistable(E_B=-32.0)
    r = ns.rest_state(tilted, "p")    # an inquiry: it tells, a run warns
    assert r.method == "newton" and r.V["A"] > r.V["B"] and r.other_rests == 1
    assert r.warning and r.message.startswith("multistable circuit: 1 other stable rest")
    # batches start from the same state, without the search for other rests
    batch = ns.simulate_batch(circuit, protocols="p", dt_out=1.0)
    np.testing.assert_array_equal(batch.result("p").V, result.V)
    assert batch.start("p").method == "probed" and batch.start("p").other_rests == -1
