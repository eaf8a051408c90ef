"""Input edges: where a stimulus jumps, every integrator keeps its accuracy.

The waveform the kernels evaluate must jump exactly at the breakpoints the steps land
on (from both sides), and fixed-step methods must split their steps there.  References
are independent of the kernels: closed-form solutions of a passive neuron under
piecewise-affine current, and scipy's Radau on the plain-NumPy model of reference.py,
integrated piece by piece between the edges.
"""

import math
import time
import tracemalloc

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import neurosim as ns
from neurosim.compile import MAX_BREAKPOINTS, compile_circuit, compile_drive
from neurosim.integrators import METHODS, integrate_with_sensitivity, make_integrator
from neurosim.kernels.network import waveform
from reference import ReferenceModel, random_circuit

PASSIVE = ns.Circuit("one", (ns.Neuron("A", C=1.0, g_L=1.0, E_L=0.0),))


def pulse_current(start, duration, amplitude=100.0):
    """I(t) of a pulse, written out: amplitude on [start, start + duration)."""
    return lambda t: amplitude * ((t >= start) & (t < start + duration))


def passive_trace(current, edges, t_eval, C=1.0, g_L=1.0, E_L=0.0, V0=0.0):
    """V(t) of one passive neuron under a current affine between ``edges``, in closed form.

    On a piece [a, b] with I = I0 + s (t − a), u = V − E_L obeys C u' = −g_L u + I and
    u = u_p + (u(a) − u_p(a)) e^{−(t−a)/τ}, u_p = (I0 + s (t − a))/g_L − s C/g_L², τ = C/g_L.
    The current is read at two inner points of each piece, never at an edge.
    """
    t_end = float(t_eval[-1])
    edges = np.unique(np.concatenate([[0.0, t_end], [e for e in edges if 0 < e < t_end]]))
    tau = C / g_L
    out = np.empty(len(t_eval))
    u = V0 - E_L
    for a, b in zip(edges, edges[1:]):
        q1, q3 = a + 0.25 * (b - a), a + 0.75 * (b - a)
        slope = (float(current(q3)) - float(current(q1))) / (q3 - q1)
        I0 = float(current(q1)) - slope * (q1 - a)
        u_a = u

        def u_at(t, a=a, I0=I0, slope=slope, u_a=u_a):
            particular = (I0 + slope * (t - a)) / g_L - slope * C / g_L ** 2
            return particular + (u_a - (I0 / g_L - slope * C / g_L ** 2)) * np.exp(-(t - a) / tau)

        inside = (t_eval >= a) & (t_eval <= b)
        out[inside] = E_L + u_at(t_eval[inside])
        u = u_at(b)
    return out


def max_error(stimuli, current, edges, integrator, duration=3.0, dt_out=0.04):
    r = ns.simulate(PASSIVE, duration=duration, stimuli=stimuli, integrator=integrator,
                    dt_out=dt_out)
    return float(np.abs(r.V[:, 0] - passive_trace(current, edges, r.t)).max())


RNG = np.random.default_rng(2024)
RANDOM_PULSES = [(float(s), float(d)) for s, d in zip(RNG.uniform(0.01, 1.5, 12),
                                                        RNG.uniform(0.01, 1.2, 12))]
PULSES = [(0.3, 0.6), (0.1, 0.2), (0.7, 0.1), (1.1, 0.7), *RANDOM_PULSES]


@pytest.mark.parametrize("start,duration", PULSES)
def test_dopri5_keeps_its_tolerance_at_pulse_ends_that_floats_cannot_represent(start, duration):
    """0.3 + 0.6 rounds to 0.8999999999999999: the pulse must end exactly there, on the
    breakpoint the step lands on, or the step's last stages read it still on (1.8e-7 mV
    at rtol 1e-10 before, for 1.4e-9 with a representable end)."""
    stim = ns.Stimulus("pulse", "A", amplitude=100.0, start=start, duration=duration)
    err = max_error([stim], pulse_current(start, duration), [start, start + duration],
                    METHODS["dopri5"](rtol=1e-10, atol=1e-10), dt_out=0.01)
    assert err <= 1e-8


def test_dopri5_follows_trains_ramps_and_steps_tables_to_its_tolerance():
    train = ns.Stimulus("pulse_train", "A", amplitude=60.0, start=0.1, duration=0.2,
                        period=0.3, count=6)
    ramp = ns.Stimulus("ramp", "A", amplitude=70.0, start=0.3, duration=0.6)
    steps = ns.Stimulus("steps", "A", times=(0.1, 0.3, 0.7, 1.1, 2.3),
                        values=(40.0, -20.0, 90.0, 10.0, 0.0))
    onsets = [0.1 + k * 0.3 for k in range(6)]
    times, levels = [0.1, 0.3, 0.7, 1.1, 2.3], [0.0, 40.0, -20.0, 90.0, 10.0, 0.0]
    cases = [
        ([train], lambda t: 60.0 * any(o <= t < o + 0.2 for o in onsets),
         onsets + [o + 0.2 for o in onsets]),
        ([ramp], lambda t: 70.0 * (t - 0.3) / 0.6 if 0.3 <= t < 0.9 else 0.0, [0.3, 0.9]),
        ([steps], lambda t: levels[int(np.searchsorted(times, t, side="right"))], times),
    ]
    for stimuli, current, edges in cases:
        err = max_error(stimuli, current, edges, METHODS["dopri5"](rtol=1e-10, atol=1e-10),
                        dt_out=0.01)
        assert err <= 1e-8, stimuli[0].kind


EDGE_CASES = [
    ns.Stimulus("step", "A", amplitude=3.0, start=0.3 + 0.6, offset=1.0),
    ns.Stimulus("pulse", "A", amplitude=-2.0, start=0.3, duration=0.6),
    ns.Stimulus("pulse", "A", amplitude=4.0, start=0.1, duration=0.7),
    ns.Stimulus("pulse_train", "A", amplitude=4.0, start=0.1, duration=0.2, period=0.3),
    ns.Stimulus("pulse_train", "A", amplitude=4.0, start=0.7, duration=0.1, period=0.7, count=3),
    ns.Stimulus("ramp", "A", amplitude=5.0, start=0.3, duration=0.6),
    ns.Stimulus("sine", "A", amplitude=2.0, start=0.3, duration=0.6, frequency=250.0, phase=0.4),
    ns.Stimulus("steps", "A", amplitude=2.0, offset=0.5, times=(0.1, 0.3, 0.9), values=(1.0, 3.0, -1.0)),
    ns.Stimulus("table", "A", amplitude=2.0, times=(0.1, 0.3, 0.9), values=(0.0, 3.0, -1.0)),
    *[ns.Stimulus("pulse", "A", amplitude=1.0, start=s, duration=d) for s, d in RANDOM_PULSES],
]


@pytest.mark.parametrize("stim", EDGE_CASES, ids=lambda s: s.kind)
def test_kernel_waveform_jumps_exactly_at_the_breakpoints_from_both_sides(stim):
    """At each breakpoint b the kernel's right limit is the value at b and its left limit
    the value at the float just below b: the jump lies exactly on the breakpoint."""
    drive = compile_drive(compile_circuit(PASSIVE), [stim], 3.0)
    kind, _, _, par, ptr, tab_t, tab_v = drive.arrays[:7]
    assert drive.breakpoints.size
    for b in drive.breakpoints:
        right = waveform(kind[0], par, 0, b, False, tab_t, tab_v, ptr[0], ptr[1])
        left = waveform(kind[0], par, 0, b, True, tab_t, tab_v, ptr[0], ptr[1])
        below, above = np.nextafter(b, -math.inf), np.nextafter(b, math.inf)
        assert right == pytest.approx(float(stim.value(b)), abs=1e-12)
        assert right == pytest.approx(float(stim.value(above)), abs=1e-12)
        assert left == pytest.approx(float(stim.value(below)), abs=1e-12)
        # just off the edge both limits agree with the ordinary value
        for t in (below, above):
            for side in (False, True):
                got = waveform(kind[0], par, 0, t, side, tab_t, tab_v, ptr[0], ptr[1])
                assert got == pytest.approx(float(stim.value(t)), abs=1e-12)


def test_pulse_train_breakpoints_are_its_onsets_and_ends_rounded_once():
    """Built with NumPy, the edges are start + k·period and that + duration, as a Python
    loop would round them, and the kernel switches exactly there (many pulses)."""
    stim = ns.Stimulus("pulse_train", "A", amplitude=1.0, start=0.013, duration=0.0031,
                       period=0.0071)
    points = stim.breakpoints(50.0)
    expected = []
    for k in range(int(50.0 // 0.0071) + 2):
        expected += [0.013 + k * 0.0071, 0.013 + k * 0.0071 + 0.0031]
    expected = np.array([p for p in expected if p < 50.0])
    np.testing.assert_array_equal(points, expected)
    drive = compile_drive(compile_circuit(PASSIVE), [stim], 50.0)
    kind, _, _, par, ptr, tab_t, tab_v = drive.arrays[:7]
    levels = [(waveform(kind[0], par, 0, b, True, tab_t, tab_v, 0, 0),
               waveform(kind[0], par, 0, b, False, tab_t, tab_v, 0, 0)) for b in points]
    assert levels == ([(0.0, 1.0), (1.0, 0.0)] * len(points))[:len(points)]


ORDER_CASES = {
    "aligned": ([ns.Stimulus("pulse", "A", amplitude=100.0, start=1.0, duration=1.0)],
                pulse_current(1.0, 1.0), [1.0, 2.0]),
    "not aligned": ([ns.Stimulus("pulse", "A", amplitude=100.0, start=1.013, duration=0.777),
                     ns.Stimulus("pulse_train", "A", amplitude=-50.0, start=0.33, duration=0.21,
                                 period=0.7, count=3)],
                    lambda t: (pulse_current(1.013, 0.777)(t)
                               - 50.0 * any(o <= t < o + 0.21 for o in (0.33, 1.03, 1.73))),
                    [1.013, 1.79, 0.33, 0.54, 1.03, 1.24, 1.73, 1.94]),
}


@pytest.mark.parametrize("case", ORDER_CASES)
@pytest.mark.parametrize("method,order", [("rk4", 4), ("euler", 1)])
def test_fixed_step_methods_keep_their_order_across_input_jumps(case, method, order):
    """Halving dt divides the error by 2^order whether the edges lie on the grid or
    between its points (rk4 fell to first order before: 0.667 → 0.083 mV over three
    halvings of a pulse on the grid)."""
    stimuli, current, edges = ORDER_CASES[case]
    errors = [max_error(stimuli, current, edges, METHODS[method](dt=dt))
              for dt in (0.04, 0.02, 0.01, 0.005)]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all(np.abs(np.log2(ratios) - order) < 0.3), (errors, ratios)
    if method == "rk4":
        assert errors[-1] < 1e-9


def test_exponential_euler_is_exact_for_a_passive_neuron_under_pulses():
    """Steps end on the edges, so each piece sees a constant current: exact at any dt."""
    stimuli, current, edges = ORDER_CASES["not aligned"]
    for dt in (0.1, 0.04):
        err = max_error(stimuli, current, edges, METHODS["exp_euler"](dt=dt), dt_out=0.2)
        assert err <= 1e-10


def test_sub_steps_are_counted_and_failures_name_their_grid_step():
    """Each edge inside a grid step adds one sub-step to stats['steps']."""
    stimuli, _, edges = ORDER_CASES["not aligned"]
    r = ns.simulate(PASSIVE, duration=3.0, stimuli=stimuli, integrator="rk4", dt=0.04,
                    dt_out=0.04)
    inside = sum(1 for e in edges if abs(e / 0.04 - round(e / 0.04)) > 1e-9)
    assert r.stats["steps"] == 75 + inside
    assert r.stats["rhs_evaluations"] == 4 * (75 + inside)


def unaligned_circuit(seed):
    """A small random circuit (one clamped neuron) under current and voltage pulses and a
    steps table whose edges fall between grid points."""
    circuit, _ = random_circuit(seed, 5, p_gap=0.4, n_clamped=1, kappa=0.6, with_stimuli=False)
    stimuli = [ns.Stimulus("pulse", "N4", amplitude=15.0, start=0.3, duration=0.6),
               ns.Stimulus("pulse", ("N2", "N3"), amplitude=-8.0, start=1.013, duration=1.777),
               ns.Stimulus("pulse", "N0", quantity="voltage", amplitude=25.0, start=0.517,
                           duration=2.21),
               ns.Stimulus("steps", "N1", times=(0.71, 2.33), values=(12.0, -6.0))]
    return circuit, stimuli


def radau_reference(circuit, stimuli, t_eval):
    """reference.py's plain-NumPy model by Radau (rtol = atol = 1e-12), one solve per piece
    between the edges, each reading the input inside its own piece only."""
    model = ReferenceModel(circuit, stimuli)
    t_end = float(t_eval[-1])
    edges = sorted({0.0, t_end, *[float(b) for s in stimuli for b in s.breakpoints(t_end)]})
    V = model.effective(0.0, model.V0)
    out = np.empty((len(t_eval), model.n))
    for a, b in zip(edges, edges[1:]):
        lo, hi = np.nextafter(a, math.inf), np.nextafter(b, -math.inf)
        sol = solve_ivp(lambda t, y: model.dVdt(min(max(t, lo), hi), y), (a, b), V,
                        method="Radau", rtol=1e-12, atol=1e-12, dense_output=True)
        assert sol.success, sol.message
        inside = (t_eval >= a) & (t_eval <= b)
        out[inside] = sol.sol(t_eval[inside]).T
        V = sol.y[:, -1]
    return np.array([model.effective(t, v) for t, v in zip(t_eval, out)])


@pytest.mark.parametrize("seed", [0, 1])
def test_random_circuit_with_pulses_matches_radau_split_at_the_edges(seed):
    """dopri5's error follows its tolerance, rk4's falls 16-fold per halving of dt."""
    circuit, stimuli = unaligned_circuit(seed)
    t = np.arange(0, 61) * 0.05
    expected = radau_reference(circuit, stimuli, t)

    def error(integrator):
        r = ns.simulate(circuit, duration=3.0, stimuli=stimuli, integrator=integrator,
                        dt_out=0.05)
        return float(np.abs(r.V - expected).max())

    assert error(METHODS["dopri5"](rtol=1e-10, atol=1e-10)) < 1e-7
    assert error(METHODS["dopri5"](rtol=1e-12, atol=1e-12)) < 2e-9
    coarse, fine = error(METHODS["rk4"](dt=0.01)), error(METHODS["rk4"](dt=0.005))
    assert fine < 5e-9 and 12 < coarse / fine < 20


@pytest.mark.parametrize("integrator,dt", [("rk4", 0.03), ("exp_euler", 0.03), ("euler", 0.03),
                                           ("ltc", 0.03), ("dopri5", None)])
def test_batch_equals_single_runs_bit_for_bit_with_edges(integrator, dt):
    """Fixed steps split at each protocol's own edges in the batch kernel; dopri5 lanes
    land on them as single runs do."""
    circuit, stimuli = unaligned_circuit(3)
    names = tuple(f"s{i}" for i in range(len(stimuli)))
    circuit = circuit.replace(stimuli=dict(zip(names, stimuli)),
                              protocols={"all": ns.Protocol(3.0, names, initial="as_given"),
                                         "some": ns.Protocol(2.4, names[1::2],
                                                             initial="as_given")})
    compiled = compile_circuit(circuit)
    params = np.tile(compiled.theta, (3, 1))
    params[1:, compiled.layout.block("synapses.w")] *= np.random.default_rng(4).uniform(
        0.5, 1.5, (2, compiled.n_synapses))
    batch = ns.simulate_batch(circuit, params, ["all", "some"], integrator=integrator, dt=dt,
                              dt_out=0.3)
    assert not batch.failed.any()
    for name in ("all", "some"):
        for k in range(3):
            one = ns.simulate(circuit, name, integrator=integrator, dt=dt, dt_out=0.3,
                              theta=params[k])
            got = batch.result(name, k)
            np.testing.assert_array_equal(got.V, one.V)
            assert got.stats["steps"] == one.stats["steps"]


@pytest.mark.parametrize("method,dt", [("euler", 0.01), ("rk4", 0.03), ("ltc", 0.03)])
def test_gradients_across_edges_match_finite_differences(method, dt):
    """The tangent kernel takes the same sub-steps as the run it differentiates."""
    circuit, stimuli = unaligned_circuit(5)
    compiled = compile_circuit(circuit)
    duration, dt_out = 3.0, 0.3
    drive = compile_drive(compiled, stimuli, duration)
    integrator = make_integrator(method, dt=dt)
    record = np.arange(compiled.n_neurons)
    free = np.arange(compiled.theta.size)
    status, V, S, stats = integrate_with_sensitivity(integrator, compiled, drive, free, record,
                                                     dt_out, int(round(duration / dt_out)), 1e5)
    assert status == 0
    one = ns.simulate(circuit, duration=duration, stimuli=stimuli, integrator=integrator,
                      dt_out=dt_out, initial="as_given")
    np.testing.assert_allclose(V, one.V, rtol=0, atol=1e-9)
    assert stats[0] == one.stats["steps"] > duration / dt
    checked = 0
    for p, name in enumerate(compiled.layout.names):
        field = name.rsplit(".", 1)[1]
        if field not in ("C", "g_L", "E_L", "w", "E"):
            continue
        h = 1e-4 * max(1.0, abs(compiled.theta[p]))
        runs = []
        for sign in (1, -1):
            theta = compiled.theta.copy()
            theta[p] += sign * h
            runs.append(ns.simulate(circuit, duration=duration, stimuli=stimuli,
                                    integrator=integrator, dt_out=dt_out, theta=theta,
                                    initial="as_given").V)
        fd = (runs[0] - runs[1]) / (2 * h)
        scale = np.linalg.norm(fd)
        if scale < 1e-6:
            continue
        assert np.linalg.norm(S[:, :, p] - fd) / scale < 1e-5, name
        checked += 1
    assert checked >= 10


def test_a_drive_with_too_many_edges_is_refused_at_once_without_building_them():
    """A train of period 2e-7 ms over 550 ms has 5.5e9 edges (a 5.5 GB list before):
    refused in one line naming the kind, the count and the limit, in bounded memory."""
    fast = ns.Stimulus("pulse_train", "A", amplitude=1.0, start=0.0, duration=1e-7,
                       period=2e-7)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ns.CircuitError) as caught:
            ns.simulate(PASSIVE, duration=550.0, stimuli=[fast], integrator="rk4", dt=0.05)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert time.perf_counter() - started < 5.0 and peak < 50e6
    assert "\n" not in message and "pulse_train" in message and f"{MAX_BREAKPOINTS:,}" in message
    assert "5,500,000,00" in message  # the edge count, as counted before building any
    circuit = PASSIVE.replace(stimuli={"fast": fast},
                              protocols={"run": ns.Protocol(550.0, ("fast",))})
    with pytest.raises(ns.CircuitError, match="pulse_train.*edges.*limit"):
        ns.simulate_batch(circuit, protocols="run", integrator="rk4", dt=0.05)
    # a train limited by its count is fine, however fast
    few = ns.Stimulus("pulse_train", "A", amplitude=1.0, start=1.0, duration=1e-7, period=2e-7,
                      count=1000)
    drive = compile_drive(compile_circuit(PASSIVE), [few], 550.0)
    assert drive.breakpoints.size == 2000
