"""ML models as restrictions: each agrees with a NumPy transcription of its seed equation."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import neurosim as ns
from neurosim import ml
from neurosim.model import Schedule
from helpers import TW


def sigma(z):
    return 1.0 / (1.0 + np.exp(-z))


def rk4(f, x, dt, steps):
    out = [x]
    for k in range(steps):
        t = k * dt
        a = f(t, x)
        b = f(t + dt / 2, x + dt / 2 * a)
        c = f(t + dt / 2, x + dt / 2 * b)
        d = f(t + dt, x + dt * c)
        x = x + dt / 6 * (a + 2 * b + 2 * c + d)
        out.append(x)
    return np.array(out)


ROOT = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(7)
N = 5
W = rng.normal(0, 1.5, (N, N)) * (rng.random((N, N)) < 0.7)
MU = rng.normal(0, 0.5, (N, N))
NU = rng.uniform(0.5, 2.0, (N, N))
X0 = rng.normal(0, 1, N)


def test_ctrnn_is_seed_equation_8():
    decay = rng.uniform(0.2, 1.0, N)
    circuit = ml.ctrnn(W, decay, MU, NU, X0)
    r = ns.simulate(circuit, duration=5.0, integrator="rk4", dt=0.01, dt_out=0.01)
    f = lambda t, x: -decay * x + np.sum(W * sigma(NU * (x[None, :] - MU)), axis=1)  # noqa: E731
    np.testing.assert_allclose(r.V, rk4(f, X0, 0.01, 500), rtol=0, atol=1e-10)
    assert ml.restriction_of(circuit).family == "ctrnn"


def test_neural_ode_is_seed_equation_5_and_augmented_is_7():
    f = lambda t, x: np.sum(W * sigma(NU * (x[None, :] - MU)), axis=1)  # noqa: E731
    r = ns.simulate(ml.neural_ode(W, MU, NU, X0), duration=2.0, integrator="rk4", dt=0.01,
                    dt_out=0.01)
    np.testing.assert_allclose(r.V, rk4(f, X0, 0.01, 200), rtol=0, atol=1e-10)
    aug = ml.augmented_neural_ode(W, MU, NU, extra=2, x0=X0[:3])
    assert aug.neuron_names[-2:] == ("a0", "a1")
    r = ns.simulate(aug, duration=2.0, integrator="rk4", dt=0.01, dt_out=0.01)
    start = np.concatenate([X0[:3], [0.0, 0.0]])
    np.testing.assert_allclose(r.V, rk4(f, start, 0.01, 200), rtol=0, atol=1e-10)
    assert ml.restriction_of(aug).family == "neural_ode"


def test_resnet_is_seed_equations_2_and_3():
    weights = [rng.normal(0, 1, (N, N)) for _ in range(6)]
    r = ns.simulate(ml.resnet(weights, MU, NU, X0), duration=6.0, integrator="euler", dt=1.0)
    x = X0.copy()
    for t, Wt in enumerate(weights):
        np.testing.assert_allclose(r.V[t], x, rtol=0, atol=1e-12)
        x = x + np.sum(Wt * sigma(NU * (x[None, :] - MU)), axis=1)
    np.testing.assert_allclose(r.V[6], x, rtol=0, atol=1e-12)
    assert ml.restriction_of(ml.resnet(weights, MU, NU)).family == "resnet"


def test_resnet_takes_per_layer_thresholds_and_slopes():
    """Seed eq. 2's μ^t: one threshold per presynaptic neuron and layer (and ν^t alike)."""
    weights = [rng.normal(0, 1, (N, N)) for _ in range(4)]
    mus = [rng.normal(0, 1, N) for _ in range(4)]
    nus = [0.5, rng.uniform(0.5, 2, N), 1.0, 2.0]
    r = ns.simulate(ml.resnet(weights, mus, nus, X0), duration=4.0, integrator="euler", dt=1.0)
    x = X0.copy()
    for Wt, mu, nu in zip(weights, mus, nus):
        x = x + Wt @ sigma(nu * (x - mu))
    np.testing.assert_allclose(r.V[4], x, rtol=0, atol=1e-12)
    with pytest.raises(ns.CircuitError, match="mu has 2 per-step entries, expected 4"):
        ml.resnet(weights, mu=[0.0, 1.0])


def forward_pass(layers, mus, nus, x):
    """Seed eq. 1 with eq. 2's per-layer thresholds, post-activation: every layer's output."""
    outputs = [np.asarray(x, dtype=float)]
    for W, mu, nu in zip(layers, mus, nus):
        outputs.append(sigma(nu * (W @ outputs[-1] - mu)))
    return outputs


@pytest.mark.parametrize("widths", [[3, 6, 4, 2], [2, 1], [4, 4, 4]])
def test_dnn_is_seed_equation_1_with_output_sigma(widths):
    g = np.random.default_rng(len(widths))
    layers = [g.normal(0, 1.5, (widths[k + 1], widths[k])) for k in range(len(widths) - 1)]
    layers[0][0, 0] = 0.0                     # an absent input weight: no junction
    mus = [g.normal(0, 1, w) for w in widths[1:]]
    nus = [float(g.uniform(0.5, 2)) for _ in widths[1:]]
    x = g.normal(0, 2, widths[0])             # raw inputs of any sign, not σ⁻¹ of anything
    net = ml.dnn(layers, mus, nus, x)
    L, width = len(layers), max(widths[1:])
    r = ns.simulate(net, duration=L + 1.0, integrator="euler", dt=1.0,
                    record=[f"x{i}" for i in range(width)])
    expected = forward_pass(layers, mus, nus, x)
    np.testing.assert_allclose(r.V[L + 1, :widths[-1]], expected[-1], rtol=0, atol=1e-12)
    for k in range(1, L):                      # hidden layers: σ of the state after step k
        got = sigma(nus[k - 1] * (r.V[k, :widths[k]] - mus[k - 1]))
        np.testing.assert_allclose(got, expected[k], rtol=0, atol=1e-12)
    assert ml.restriction_of(net).family == "dnn"


def test_nrn_is_seed_equation_9():
    w = rng.uniform(0, 1, (N, N)) * (rng.random((N, N)) < 0.6)
    E = rng.choice([0.0, -90.0], (N, N))
    C, g_L = rng.uniform(1, 5, N), rng.uniform(0.2, 1, N)
    circuit = ml.nrn(w, E, mu=-40.0, nu=0.1, C=C, g_L=g_L, E_L=-70.0, V0=rng.uniform(-80, -20, N))
    V0 = np.array([n.initial_V for n in circuit.neurons])
    f = lambda t, V: (g_L * (-70.0 - V) + np.sum(w * sigma(0.1 * (V[None, :] + 40.0))  # noqa: E731
                                                 * (E - V[:, None]), axis=1)) / C
    r = ns.simulate(circuit, duration=10.0, integrator="rk4", dt=0.01, dt_out=0.01)
    np.testing.assert_allclose(r.V, rk4(f, V0, 0.01, 1000), rtol=0, atol=1e-10)
    assert ml.restriction_of(circuit).family == "nrn"


def test_kappa_one_differs_from_kappa_zero_by_the_driving_force_term():
    w = rng.uniform(0, 1, (N, N))
    E = rng.choice([0.0, -90.0], (N, N))
    with_force = ml.nrn(w, E, C=2.0, V0=rng.uniform(-80, -20, N))
    without = with_force.replace(synapses=tuple(
        ns.Synapse(s.pre, s.post, s.w, s.E, s.mu, s.nu, kappa=0.0) for s in with_force.synapses))
    one = ns.simulate(with_force, duration=0.1, integrator="euler", dt=0.1)
    zero = ns.simulate(without, duration=0.1, integrator="euler", dt=0.1)
    V = one.V[0]
    term = np.zeros(N)
    for s in with_force.synapses:
        i, j = int(s.post[1:]), int(s.pre[1:])
        term[i] -= s.w * sigma(s.nu * (V[j] - s.mu)) * V[i]
    np.testing.assert_allclose(one.V[1] - zero.V[1], 0.1 / 2.0 * term, rtol=1e-9, atol=1e-12)


def test_euler_unfolded_nrn_is_a_resnet_with_state_dependent_weights():
    """Grosu's 'each input unfolds into its own ResNet', checked numerically."""
    n, dt, steps = 4, 0.05, 40
    w = rng.uniform(0, 1, (n, n))
    E = rng.choice([0.0, -90.0], (n, n))
    C, g_L = 2.0, 0.5
    circuit = ml.nrn(w, E, mu=-40.0, nu=0.1, C=C, g_L=g_L, E_L=-70.0,
                     V0=rng.uniform(-80, -20, n))
    nrn_run = ns.simulate(circuit, duration=steps * dt, integrator="euler", dt=dt)
    weights, keys = ml.effective_weights(circuit, nrn_run)
    schedule = []
    for t in range(steps):
        Wt = np.zeros((n, n))
        for k, s in enumerate(circuit.synapses):
            Wt[int(s.post[1:]), int(s.pre[1:])] = dt / C * weights[t, k]
        schedule.append(Wt)
    # the leak becomes a per-step bias dt/C·g_L·(E_L − V_i^t)
    bias = [ns.Stimulus("steps", f"x{i}", times=tuple(float(t) for t in range(steps)),
                        values=tuple(dt / C * g_L * (-70.0 - nrn_run.V[:steps, i])))
            for i in range(n)]
    net = ml.resnet(schedule, mu=-40.0, nu=0.1, x0=nrn_run.V[0])
    res = ns.simulate(net, duration=float(steps), stimuli=bias, integrator="euler", dt=1.0)
    np.testing.assert_allclose(res.V, nrn_run.V, rtol=0, atol=1e-10)


W2 = np.array([[0.0, 1.5], [-2.0, 0.5]])
CT = ml.ctrnn(W2, 1.0)


def test_restriction_of_explains_why_not():
    tw = ml.restriction_of(ns.load_circuit(TW))
    assert tw.family == "nrn" and "gap junctions" in tw.terms and "driving force" in tw.terms
    # its junctions all join a clamped sensory neuron to a state neuron: biases and decays
    assert tw.reasons["ctrnn"] == "synapses are not all current-based (κ ∈ [1.0])"
    mixed = ml.nrn(np.ones((2, 2)), 0.0).replace(synapses=(
        ns.Synapse("x0", "x1", kappa=0.5),))
    assert ml.restriction_of(mixed).family == "general"
    driven = ml.restriction_of(CT.replace(stimuli={"I": ns.Stimulus("step", "x0")}))
    assert driven.terms == ("leak", "synapses", "input current")
    assert ml.restriction_of(ml.neural_ode(np.zeros((2, 2)))).terms == ()


def with_synapse(circuit, synapse):
    return circuit.replace(synapses=circuit.synapses + (synapse,))


@pytest.mark.parametrize("circuit,family,reason", [
    (ml.ctrnn(W2, [0.0, 1.0]), "ctrnn", None),                       # some decays 0
    (ml.ctrnn(W2, 0.0), "neural_ode", None),
    (ml.neural_ode(W2), "neural_ode", None),
    (ml.augmented_neural_ode(np.ones((3, 3)), extra=1), "neural_ode", None),
    (CT.replace(gap_junctions=(ns.GapJunction("x0", "x1", 0.2),)), "general",
     ("ctrnn", "gap junctions")),
    (CT.replace(gap_junctions=(ns.GapJunction("x0", "x1", 0.0),)), "ctrnn", None),  # g = 0
    (CT.replace(neurons=CT.neurons + (ns.Neuron("in", clamp=-20.0),),
                gap_junctions=(ns.GapJunction("in", "x0", 0.2),)), "ctrnn", None),  # an input
    (ml.neural_ode(W2).replace(neurons=ml.neural_ode(W2).neurons + (ns.Neuron("in", clamp=1.0),),
                               gap_junctions=(ns.GapJunction("x1", "in", 0.2),)), "ctrnn",
     ("neural_ode", "gap junction to an input")),
    (CT.replace(neurons=tuple(ns.Neuron(n.name, C=2.0, g_L=1.0, E_L=0.5, V0=0.0)
                              for n in CT.neurons)), "ctrnn", None),  # C, E_L: scale, bias
    (with_synapse(CT, ns.Synapse("x0", "x0", w=0.0, kappa=1.0)), "ctrnn", None),  # w = 0
    (with_synapse(CT, ns.Synapse("x0", "x0", w=1.0, kappa=1.0)), "general",
     ("ctrnn", "not all current-based")),
    (with_synapse(CT.replace(neurons=CT.neurons + (ns.Neuron("in", clamp=-20.0),)),
                  ns.Synapse("x0", "in", w=1.0, kappa=1.0)), "ctrnn", None),  # onto a clamp
    (with_synapse(CT.replace(neurons=CT.neurons + (ns.Neuron("in", clamp=-20.0),)),
                  ns.Synapse("in", "x0", w=1.0, E=1.0, kappa=0.0)), "ctrnn", None),  # an input
    (CT.replace(stimuli={"I": ns.Stimulus("step", "x0", amplitude=1.0)}), "ctrnn", None),
    (ml.nrn(np.ones((2, 2)), 0.0), "nrn", None),
    (ml.nrn(np.ones((2, 2)), 0.0, g_L=0.0), "nrn", None),
    (ml.resnet([W2, -W2]), "resnet", None),
    (ml.resnet([W2, -W2]).replace(schedule=Schedule(
        2.0, ml.resnet([W2, -W2]).schedule.values)), "general", ("resnet", "interval 1")),
    (ml.dnn([np.ones((2, 3)), np.ones((1, 2))], x=[1.0, -1.0, 0.5]), "dnn", None),
    (ml.dnn([np.ones((2, 3))]).replace(schedule=Schedule(1.0, {
        **ml.dnn([np.ones((2, 3))]).schedule.values,
        "gap_junctions[in0-x0].g": [1.0, 1.0]})), "general", ("dnn", "after the first")),
])
def test_restriction_of_decides_by_the_terms_present(circuit, family, reason):
    found = ml.restriction_of(circuit)
    assert found.family == family, str(found)
    if reason:
        assert reason[1] in found.reasons[reason[0]], str(found)


def test_a_ctrnn_with_capacitance_and_leak_reversal_is_a_rescaled_ctrnn():
    """What restriction_of calls a CT-RNN computes seed eq. 8 with decay g_L/C, weights
    wE/C and bias g_L·E_L/C (planted C = 2, E_L = 0.5)."""
    circuit = CT.replace(neurons=tuple(ns.Neuron(n.name, C=2.0, g_L=1.0, E_L=0.5, V0=0.3)
                                       for n in CT.neurons))
    r = ns.simulate(circuit, duration=3.0, integrator="rk4", dt=0.01, dt_out=0.01)
    f = lambda t, x: -0.5 * x + (W2 / 2.0) @ sigma(x) + 0.25  # noqa: E731
    np.testing.assert_allclose(r.V, rk4(f, np.full(2, 0.3), 0.01, 300), rtol=0, atol=1e-10)


def test_a_gap_junction_from_an_input_is_a_ctrnns_bias_and_decay():
    """What restriction_of calls a CT-RNN when a gap junction joins a clamped input to a
    state neuron computes eq. 8 with that neuron's decay g_L + ĝ and bias ĝ·V_in."""
    circuit = CT.replace(neurons=CT.neurons + (ns.Neuron("in", clamp=-0.7),),
                         gap_junctions=(ns.GapJunction("in", "x0", 0.3),))
    assert ml.restriction_of(circuit).family == "ctrnn"
    r = ns.simulate(circuit, duration=3.0, integrator="rk4", dt=0.01, dt_out=0.01,
                    record=["x0", "x1"], initial="as_given")
    decay, bias = np.array([1.3, 1.0]), np.array([0.3 * -0.7, 0.0])
    f = lambda t, x: -decay * x + W2 @ sigma(x) + bias  # noqa: E731
    np.testing.assert_allclose(r.V, rk4(f, np.zeros(2), 0.01, 300), rtol=0, atol=1e-10)


def test_the_seeds_decreasing_sigmoid_is_a_negative_slope():
    """The seed writes σ(x) = 1/(1 + e^{ν(x−μ)}) (decreasing in x); neurosim's increasing
    logistic of ν(V − μ) gives it with ν → −ν.  An NRN transcribed with the seed's σ."""
    w = rng.uniform(0, 1, (N, N))
    E = rng.choice([0.0, -90.0], (N, N))
    seed_sigma = lambda x, nu, mu: 1.0 / (1.0 + np.exp(nu * (x - mu)))  # noqa: E731
    circuit = ml.nrn(w, E, mu=-40.0, nu=-0.1, C=1.0, g_L=0.5, E_L=-70.0, V0=np.full(N, -50.0))
    f = lambda t, V: 0.5 * (-70.0 - V) + np.sum(  # noqa: E731
        w * seed_sigma(V[None, :], 0.1, -40.0) * (E - V[:, None]), axis=1)
    r = ns.simulate(circuit, duration=2.0, integrator="rk4", dt=0.01, dt_out=0.01)
    np.testing.assert_allclose(r.V, rk4(f, np.full(N, -50.0), 0.01, 200), rtol=0, atol=1e-10)


@pytest.mark.parametrize("call,match", [
    (lambda: ml.ctrnn(np.ones((2, 3)), 1.0), "square matrix"),
    (lambda: ml.ctrnn(np.ones((2, 2)), -1.0), "decay must be >= 0"),
    (lambda: ml.nrn(-np.ones((2, 2)), 0.0), "conductances w must be >= 0"),
    (lambda: ml.dnn([np.ones((3, 2)), np.ones((2, 4))]), "layer 1 takes 4 inputs"),
    (lambda: ml.dnn([np.ones((3, 2))], x=[1.0]), "x \\(the input\\) must have shape \\(2,\\)"),
    (lambda: ml.dnn([np.ones((3, 2))], mu=[np.zeros(2)]), r"mu\[0\] must be a float or 3"),
    (lambda: ml.dnn([np.ones((3, 2)), np.ones((1, 3))], nu=[1.0]), "nu has 1 per-layer entries"),
    (lambda: ml.resnet([]), "at least one weight matrix"),
])
def test_bad_model_definitions_are_refused(call, match):
    with pytest.raises(ns.CircuitError, match=match):
        call()


def ncps_ltc_update(p, v, x, elapsed=1.0, unfolds=6, epsilon=0.0):
    """ncps LTCCell._ode_solver transcribed in NumPy (identity parameter constraints)."""
    sensory = p["sensory_w"] * sigma(p["sensory_sigma"] * (x[:, None] - p["sensory_mu"]))
    sensory = sensory * p.get("sensory_sparsity_mask", 1.0)
    num_sensory = np.sum(sensory * p["sensory_erev"], axis=0)
    den_sensory = np.sum(sensory, axis=0)
    cm_t = p["cm"] / (elapsed / unfolds)
    for _ in range(unfolds):
        act = p["w"] * sigma(p["sigma"] * (v[:, None] - p["mu"])) * p.get("sparsity_mask", 1.0)
        numerator = cm_t * v + p["gleak"] * p["vleak"] + np.sum(act * p["erev"], axis=0) + num_sensory
        denominator = cm_t + p["gleak"] + np.sum(act, axis=0) + den_sensory
        v = numerator / (denominator + epsilon)
    return v


def random_ltc(units=6, inputs=3):
    g = np.random.default_rng(11)
    return {"gleak": g.uniform(0.001, 1, units), "vleak": g.uniform(-0.2, 0.2, units),
            "cm": g.uniform(0.4, 0.6, units), "w": g.uniform(0.001, 1, (units, units)),
            "sigma": g.uniform(3, 8, (units, units)), "mu": g.uniform(0.3, 0.8, (units, units)),
            "erev": g.choice([-1.0, 1.0], (units, units)),
            "sparsity_mask": (g.random((units, units)) < 0.7).astype(float),
            "sensory_w": g.uniform(0.001, 1, (inputs, units)),
            "sensory_sigma": g.uniform(3, 8, (inputs, units)),
            "sensory_mu": g.uniform(0.3, 0.8, (inputs, units)),
            "sensory_erev": g.choice([-1.0, 1.0], (inputs, units)),
            "sensory_sparsity_mask": np.ones((inputs, units))}


def softplus(x):
    return np.log1p(np.exp(x))


@pytest.mark.parametrize("epsilon,tolerance,implicit", [(0.0, 1e-10, False), (1e-8, 1e-7, False),
                                                        (0.0, 1e-10, True)])
def test_ltc_cell_update_is_the_fused_solver_with_six_unfolds(epsilon, tolerance, implicit):
    """With implicit_param_constraints the cell passes gleak, cm, w, sensory_w through
    softplus at every step (raw values may then be negative)."""
    p = random_ltc()
    if implicit:
        p = {k: (v - 0.8 if k in ml.LTC_POSITIVE else v) for k, v in p.items()}
    xs = np.random.default_rng(2).normal(0, 1, (8, 3))
    circuit = ml.ltc_cell_to_circuit(p, implicit_param_constraints=implicit)
    assert ml.restriction_of(circuit).family == "nrn"
    if implicit:
        p = {k: (softplus(v) if k in ml.LTC_POSITIVE else v) for k, v in p.items()}
    r = ns.simulate(circuit, duration=8.0, stimuli=ml.ltc_input_stimuli(xs, 1.0, input_w=[1.0] * 3),
                    integrator="ltc", dt=1.0 / 6, dt_out=1.0, record=[f"u{i}" for i in range(6)])
    v = np.zeros(6)
    for k, x in enumerate(xs):
        v = ncps_ltc_update(p, v, x, epsilon=epsilon)
        np.testing.assert_allclose(r.V[k + 1], v, rtol=0, atol=tolerance)


def test_ltc_parameters_round_trip():
    p = random_ltc()
    back = ml.circuit_to_ltc_cell(ml.ltc_cell_to_circuit(p))
    mask = p["sparsity_mask"]
    for key in ("gleak", "vleak", "cm", "sensory_w", "sensory_mu"):
        np.testing.assert_array_equal(back[key], p[key])
    np.testing.assert_array_equal(back["w"], p["w"] * mask)
    np.testing.assert_array_equal(back["sparsity_mask"], mask)
    with pytest.raises(ns.CircuitError, match="LTC parameters lack gleak"):
        ml.ltc_cell_to_circuit({})
    raw = {k: (v - 0.8 if k in ml.LTC_POSITIVE else v) for k, v in p.items()}
    circuit = ml.ltc_cell_to_circuit(raw, implicit_param_constraints=True)
    back = ml.circuit_to_ltc_cell(circuit, implicit_param_constraints=True)
    for key in ("gleak", "cm"):
        np.testing.assert_allclose(back[key], raw[key], rtol=0, atol=1e-12)
    np.testing.assert_allclose(back["w"], raw["w"] * mask, rtol=0, atol=1e-12)
    with pytest.raises(ns.CircuitError, match="LTC parameter gleak has negative entries .*"
                                              "apply_weight_constraints"):
        ml.ltc_cell_to_circuit(raw)


def script(name: str):
    """A script of scripts/ as a module (they import their sibling doc_sections)."""
    folder = str(ROOT / "scripts")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def central_differences(f, x, step=1e-6):
    return np.array([(f(x + e) - f(x - e)) / (2 * step) for e in np.eye(x.size) * step]).T


def test_succinctness_resnet_gradient_and_circuit_agree():
    """scripts/succinctness.py trains its ResNet family by hand-written backpropagation:
    the gradient must match central differences, and the trained network simulated as a
    neurosim circuit (ml.resnet, Euler dt = 1) must give the NumPy forward pass."""
    succinctness = script("succinctness")
    xs = np.linspace(-1, 1, 7)
    task = succinctness.ResNetTask(3, 4, xs, 0.5 * np.sin(np.pi * xs), seed=0)
    x = task.x0 + np.random.default_rng(2).normal(0, 0.3, task.n_free)
    value, grad = task.value_and_grad(x)
    fd = central_differences(lambda v: task.value_and_grad(v)[0], x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    assert task.mse(x, xs, 0.5 * np.sin(np.pi * xs)) == pytest.approx(value, rel=1e-9)


def test_succinctness_static_task_gradient_is_finite_differences():
    """The public-API path (ns.sensitivities, one circuit per input) against central
    differences of its own loss."""
    succinctness = script("succinctness")
    xs = np.linspace(-1, 1, 3)
    circuit, free = succinctness.network("nrn", 2, 0)
    task = succinctness.StaticTask(circuit, free, xs, 0.5 * np.sin(np.pi * xs))
    x = task.par.x0
    grad = task.value_and_grad(x)[1]
    fd = central_differences(lambda v: task.value_and_grad(v)[0], x)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)


# --- capacity (scripts/capacity.py) -----------------------------------------------------

def test_capacity_resnet_is_its_neurosim_circuit_and_its_gradient_is_exact():
    """The capacity ResNet: NumPy forward = the network simulated by neurosim (ml.resnet
    with per-layer μ^t, ν^t, a clamped input and a bias neuron), gradient = central
    differences."""
    capacity = script("capacity")
    u, y = capacity.pairs(0, 5)
    task = capacity.ResNetTask(2, 3, u, y, seed=1)
    x = task.x0 + np.random.default_rng(3).normal(0, 0.3, task.x0.size)
    out, grad = task.outputs(x)
    np.testing.assert_allclose(task.simulated(x, u), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad, central_differences(lambda v: task.outputs(v)[0], x),
                               rtol=1e-6, atol=1e-8)


def test_capacity_circuit_gradient_is_finite_differences():
    capacity = script("capacity")
    u, y = capacity.pairs(0, 3)
    for family in ("nrn", "ctrnn"):
        task = capacity.CircuitTask(family, 1, u, y, seed=0)
        grad = task.outputs(task.x0)[1]
        fd = central_differences(lambda v: task.outputs(v)[0], task.x0)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_a_one_neuron_ctrnn_responds_monotonically_to_its_input():
    """Why capacity.py checks fits at dt/10: a scalar ODE driven by a·σ(ν(u − μ)) has x(T1)
    monotone in u (comparison theorem) for any parameters in the bounds, so a one-neuron
    CT-RNN fits at most one sign change; integrated finely it is monotone."""
    capacity = script("capacity")
    u = np.linspace(-1, 1, 7)
    task = capacity.CircuitTask("ctrnn", 1, u, np.ones_like(u), seed=0)
    g = np.random.default_rng(5)
    for _ in range(4):
        fine = np.diff(task.outputs(g.uniform(task.lower, task.upper), dt=capacity.DT / 10)[0])
        assert np.all(fine >= -1e-9) or np.all(fine <= 1e-9), fine


def test_capacity_read_out_is_least_squares():
    """Planted: y = 2v + 1 is read out exactly; the read-out scales dv by a = 2."""
    capacity = script("capacity")
    v, dv = np.array([-1.0, 0.0, 0.5, 2.0]), np.ones((4, 3))
    out, grad = capacity.read_out(v, dv, 2 * v + 1)
    np.testing.assert_allclose(out, 2 * v + 1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad, 2 * dv, rtol=0, atol=1e-12)
    row = {"fits": [{"S": 4, "fitted_at": 3, "holds_at_fine_dt": True},
                    {"S": 6, "fitted_at": 9, "holds_at_fine_dt": False},
                    {"S": 8, "fitted_at": None, "holds_at_fine_dt": None},
                    {"S": 11, "fitted_at": 80, "holds_at_fine_dt": True}]}
    assert [capacity.capacity(row, 75), capacity.capacity(row, 75, fine=True),
            capacity.capacity(row, 200)] == [6, 4, 11]


def documented_section(name: str) -> str:
    text = (ROOT / "docs" / "ml_restrictions.md").read_text()
    start, end = f"<!-- generated by scripts/{name}: start -->\n", f"<!-- generated by scripts/{name}: end -->"
    return text[text.index(start) + len(start):text.index(end)]


def test_capacity_docs_are_the_data_and_a_cell_reruns():
    """The documented table is the one docs/data/capacity.json gives, and one cell of it
    (CT-RNN, 1 neuron, seed 0) rerun fits the same S values at iterations within 20 %
    (+2) of the stored ones: another machine's rounding may move an optimiser's path."""
    capacity = script("capacity")
    data = json.loads((ROOT / "docs" / "data" / "capacity.json").read_text())
    assert documented_section("capacity.py") == capacity.markdown(data["rows"], data["seconds"],
                                                                  data["command"])
    stored = next(r for r in data["rows"] if (r["family"], r["neurons"], r["seed"]) == ("ctrnn", 1, 0))
    fresh = capacity.scan(("ctrnn", 1, None), 0)
    assert [f["S"] for f in fresh["fits"]] == [f["S"] for f in stored["fits"]]
    for new, old in zip(fresh["fits"], stored["fits"]):
        assert (new["fitted_at"] is None) == (old["fitted_at"] is None), (new, old)
        assert new["holds_at_fine_dt"] == old["holds_at_fine_dt"], (new, old)
        if old["fitted_at"] is not None:
            assert abs(new["fitted_at"] - old["fitted_at"]) <= 0.2 * old["fitted_at"] + 2
    assert capacity.capacity(fresh, max(capacity.BUDGETS)) == capacity.capacity(
        stored, max(capacity.BUDGETS))


def test_expressivity_docs_are_the_data_and_a_cell_reruns():
    """The documented table is the one docs/data/expressivity.json gives; one cell (CT-RNN,
    2 neurons, filter, seed 0) retrained gives its training and validation MSE within
    make_docs' rtol 0.25 for this step."""
    expressivity = script("expressivity")
    data = json.loads((ROOT / "docs" / "data" / "expressivity.json").read_text())
    assert documented_section("expressivity.py") == expressivity.markdown(
        data["rows"], data["seconds"], data["command"])
    task = "noisy two-input filter"
    stored = next(r for r in data["rows"] if (r["task"], r["family"], r["neurons"], r["seed"])
                  == (task, "ctrnn", 2, 0))
    fresh = expressivity.train("ctrnn", 2, expressivity.tasks(0)[task], 0,
                               expressivity.QUICK_MAXITER)
    assert fresh["mse"] == pytest.approx(stored["mse"], rel=0.25)
    assert fresh["validation_mse"] == pytest.approx(stored["validation_mse"], rel=0.25)


@pytest.mark.parametrize("build,match", [
    (lambda: ml.ctrnn(np.ones((2, 2)), 1.0, x0=[1.0]), r"x0 must have shape \(2,\)"),
    (lambda: ml.ctrnn(np.ones((2, 2)), [1, 2, 3]), r"decay must be a float or an array of shape"),
    (lambda: ml.ctrnn(np.ones((2, 2)), 1.0, mu=np.ones(3)), r"mu must be a float or an array"),
    (lambda: ml.nrn(np.ones((2, 2)), np.zeros((3, 3))), r"E must be a float or an array"),
    (lambda: ml.resnet([np.ones((2, 2))], x0=[1, 2, 3]), r"x0 must have shape \(2,\)"),
    (lambda: ml.augmented_neural_ode(np.ones((3, 3)), extra=1, x0=[1, 2, 3]),
     r"augmentation neurons start at 0\) must have shape \(2,\)"),
    (lambda: ml.dnn([[["a"]]]), r"layers\[0\] must be numbers"),
    (lambda: ml.dnn([np.ones((2, 3))], x=[1, np.nan, 2]), r"x \(the input\) must be finite"),
    (lambda: ml.dnn([np.ones((2, 3))], nu=np.nan), r"nu\[0\] must be finite"),
    (lambda: ml.ctrnn(np.ones((2, 2)), -1.0), r"decay must be >= 0"),
])
def test_constructors_refuse_bad_shapes_and_values_in_one_line(build, match):
    with pytest.raises(ns.CircuitError, match=match):
        build()
