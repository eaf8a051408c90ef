"""Succinctness: how many neurons each family needs to approximate a static function.

Seed eq. 7 setting: the input x ∈ [−1, 1] is the initial state of neuron 0 (the other
neurons start at 0), the network runs to t1 = 5, and the output is neuron 0's final state.
For target functions sin(kπx)/2 of increasing complexity k and training sets of S points,
each family (NRN, CT-RNN, Neural ODE, and a ResNet of N residual layers) grows from 1
neuron until its validation MSE drops below a threshold; the smallest size that gets there
is recorded, for several seeds.  The seed's claim to test: NRNs are M·N times more
succinct than ResNets, with M growing with S.

The ResNet x^{t+1} = x^t + W^t·σ(ν(x^t − μ)) (seed eqs. 2–3, ``neurosim.ml.resnet``) is
trained by backpropagation written out in NumPy, because its per-layer weights are a
parameter schedule and the engine's sensitivities do not cover schedules; its validation
error is then measured by simulating the trained network as a neurosim circuit (Euler,
dt = 1, one layer per step), which must agree with the NumPy forward pass to 1e-9.

    python scripts/succinctness.py --quick   # k = 1, 2; S = 8, 32; 2 seeds; n ≤ 4
    python scripts/succinctness.py           # k = 1, 2, 3; S = 8 … 512; 3 seeds; n ≤ 6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import neurosim as ns
from neurosim.compile import compile_circuit, compile_drive
from neurosim.ml import resnet
from neurosim.fit import Parameterization
from neurosim.integrators import integrate_with_sensitivity, make_integrator
from neurosim.plot import save_figure

T1, DT = 5.0, 0.25
THRESHOLD = 0.01          # validation MSE that counts as "approximates"
FAMILIES = ("nrn", "ctrnn", "neural_ode", "resnet")
RESNET_LAYERS = 20        # = T1 / DT: as many layers as the other families take steps
LABELS = {"nrn": "NRN", "ctrnn": "CT-RNN", "neural_ode": "Neural ODE",
          "resnet": f"ResNet ({RESNET_LAYERS} layers)"}
NU = 2.0


def network(family: str, n: int, seed: int):
    """Fully connected n-neuron circuit of a family and its free parameters."""
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(n)]
    pairs = [(a, b) for a in names for b in names]
    if family == "nrn":
        neurons = tuple(ns.Neuron(nm, C=1.0, g_L=0.5, E_L=0.0, V0=0.0) for nm in names)
        synapses = tuple(ns.Synapse(a, b, w=float(rng.uniform(0.1, 1)),
                                    E=float(rng.uniform(-2, 2)), mu=0.0, nu=2.0) for a, b in pairs)
        free = [{"select": "synapses[*].w", "bounds": [0, 5]},
                {"select": "synapses[*].E", "bounds": [-3, 3]},
                {"select": "synapses[*].mu", "bounds": [-2, 2]},
                {"select": "synapses[*].nu", "bounds": [0.1, 10]}]
        free += [{"select": f"neurons[{nm}].{f}", "bounds": b} for nm in names
                 for f, b in (("C", [0.2, 5]), ("g_L", [0.01, 2]), ("E_L", [-2, 2]))]
    else:
        decay = 0.5 if family == "ctrnn" else 0.0
        neurons = tuple(ns.Neuron(nm, C=1.0, g_L=decay, E_L=0.0, V0=0.0) for nm in names)
        synapses = tuple(ns.Synapse(a, b, w=1.0, E=float(rng.normal(0, 0.5)), mu=0.0, nu=2.0,
                                    kappa=0.0) for a, b in pairs)
        free = [{"select": "synapses[*].E", "bounds": [-5, 5]},
                {"select": "synapses[*].mu", "bounds": [-2, 2]}]
        if family == "ctrnn":
            free += [{"select": f"neurons[{nm}].g_L", "bounds": [0.01, 2]} for nm in names]
    return ns.Circuit(f"{family}{n}", neurons, synapses), free


class StaticTask:
    """Mean squared error of y(x) = V_0(t1 | V_0(0) = x) against a target, with gradient."""

    def __init__(self, circuit, free, xs, ys):
        self.par = Parameterization(circuit, free)
        self.compiled = compile_circuit(circuit)
        self.drive = compile_drive(self.compiled, [], T1)
        self.method = make_integrator("rk4", dt=DT)
        self.v0 = 3 * self.compiled.n_neurons  # θ index of neuron 0's V0
        self.xs, self.ys = xs, ys

    def value_and_grad(self, x):
        # one validated copy of θ per evaluation; only neuron 0's V0 changes per sample
        compiled = self.compiled.with_theta(self.par.theta(x))
        total, grad = 0.0, np.zeros(self.par.indices.size)
        record = np.array([0], dtype=np.int64)
        for xin, yout in zip(self.xs, self.ys):
            compiled.theta[self.v0] = xin
            status, V, S, _ = integrate_with_sensitivity(
                self.method, compiled, self.drive, self.par.indices, record, T1, 1, 1e4)
            if status != 0:
                return 1e6, np.zeros(self.par.n_free)
            r = V[-1, 0] - yout
            total += r * r / len(self.xs)
            grad += 2 * r / len(self.xs) * S[-1, 0]
        return total, self.par.chain(x, grad)

    def mse(self, x, xs, ys):
        saved = self.xs, self.ys
        self.xs, self.ys = xs, ys
        value = self.value_and_grad(x)[0]
        self.xs, self.ys = saved
        return value


class ResNetTask:
    """Mean squared error of a ResNet of ``layers`` layers and width n, with its gradient.

    Parameters: the weights W (layers, n, n) and one sigmoid midpoint per connection μ
    (n, n), shared by the layers as in ``neurosim.ml.resnet``; ν = NU.
    """

    def __init__(self, n, layers, xs, ys, seed):
        rng = np.random.default_rng(seed)
        self.n, self.layers, self.xs, self.ys = n, layers, xs, ys
        size = layers * n * n
        self.x0 = np.concatenate([rng.normal(0, 0.3 / layers, size), rng.uniform(-1, 1, n * n)])
        self.lower = np.concatenate([np.full(size, -5.0), np.full(n * n, -2.0)])
        self.upper = -self.lower
        self.n_free = self.x0.size

    def unpack(self, x):
        size = self.layers * self.n * self.n
        return x[:size].reshape(self.layers, self.n, self.n), x[size:].reshape(self.n, self.n)

    def forward(self, x, inputs):
        W, mu = self.unpack(x)
        X = np.zeros((inputs.size, self.n))
        X[:, 0] = inputs
        states, sigmoids = [], []
        for t in range(self.layers):
            Z = 1.0 / (1.0 + np.exp(-NU * (X[:, None, :] - mu[None])))  # (S, post i, pre j)
            states.append(X)
            sigmoids.append(Z)
            X = X + np.einsum("ij,sij->si", W[t], Z)
        return X, states, sigmoids

    def value_and_grad(self, x):
        W, _ = self.unpack(x)
        X, states, sigmoids = self.forward(x, self.xs)
        r = X[:, 0] - self.ys
        G = np.zeros_like(X)
        G[:, 0] = 2 * r / self.xs.size
        dW, dmu = np.zeros_like(W), np.zeros((self.n, self.n))
        for t in range(self.layers - 1, -1, -1):
            Z = sigmoids[t]
            dW[t] = np.einsum("si,sij->ij", G, Z)
            dpre = G[:, :, None] * W[t][None] * Z * (1 - Z) * NU
            dmu -= dpre.sum(axis=0)
            G = G + dpre.sum(axis=1)
        return float(np.mean(r * r)), np.concatenate([dW.ravel(), dmu.ravel()])

    def mse(self, x, xs, ys):
        """Validation error of the trained ResNet simulated as a neurosim circuit."""
        W, mu = self.unpack(x)
        circuit = resnet(list(W), mu=mu, nu=NU)
        names = [f"x{i}" for i in range(self.n)]
        got = np.array([ns.simulate(circuit, duration=float(self.layers), integrator="euler",
                                    dt=1.0, dt_out=float(self.layers), record=["x0"],
                                    v0={nm: (v if nm == "x0" else 0.0) for nm in names}).V[-1, 0]
                        for v in xs])
        numpy_out = self.forward(x, xs)[0][:, 0]
        if not np.allclose(got, numpy_out, rtol=0, atol=1e-9):
            raise AssertionError("the ResNet's NumPy forward pass and its neurosim circuit "
                                 f"disagree by {np.abs(got - numpy_out).max():.3g}")
        return float(np.mean((got - ys) ** 2))


def train(family, n, xs, ys, xv, yv, seed, maxiter):
    if family == "resnet":
        task = ResNetTask(n, RESNET_LAYERS, xs, ys, seed)
        lower, upper, x0 = task.lower, task.upper, task.x0
    else:
        circuit, free = network(family, n, seed)
        task = StaticTask(circuit, free, xs, ys)
        lower, upper, x0 = task.par.lower, task.par.upper, task.par.x0
    span = upper - lower
    best = (np.inf, None)
    rng = np.random.default_rng(seed)
    for start in (x0, rng.uniform(lower, upper)):
        z0 = (start - lower) / span
        res = minimize(lambda z: (lambda v, g: (v, g * span))(*task.value_and_grad(lower + span * z)),
                       z0, jac=True, method="L-BFGS-B", bounds=[(0, 1)] * len(z0),
                       options={"maxiter": maxiter})
        x = lower + span * res.x
        val = task.mse(x, xv, yv)
        if val < best[0]:
            best = (val, x)
    return best[0], len(x0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="out/succinctness")
    parser.add_argument("--replot", metavar="JSON", nargs="+",
                        help="redraw the figure from results files (merged) into --out")
    parser.add_argument("--S", type=int, nargs="+", help="training-set sizes (override)")
    parser.add_argument("--k", type=int, nargs="+", help="target complexities (override)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (override)")
    parser.add_argument("--maxiter", type=int, help="L-BFGS-B iterations per start (override)")
    parser.add_argument("--neurons", type=int, nargs="+", help="network sizes to try (override)")
    args = parser.parse_args(argv)
    if args.replot:
        rows = [row for path in args.replot for row in json.loads(Path(path).read_text())]
        cap = max(r["neurons"] or 0 for r in rows)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(rows, indent=2))
        plot(rows, out / "succinctness.png", max(cap, 4 if args.quick else 6))
        print(table(rows))
        return
    ks = tuple(args.k) if args.k else (1, 2) if args.quick else (1, 2, 3)
    sizes_S = tuple(args.S) if args.S else (8, 32) if args.quick else (8, 32, 128, 512)
    seeds = tuple(args.seeds) if args.seeds else (0, 1) if args.quick else (0, 1, 2)
    neurons = tuple(args.neurons) if args.neurons else (1, 2, 4) if args.quick else (1, 2, 3, 4, 6)
    maxiter = args.maxiter or (80 if args.quick else 200)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xv = np.linspace(-1, 1, 101)
    rows = []
    started = time.perf_counter()
    print(f"{'k':>2} {'S':>4} {'seed':>4} {'family':10s} {'neurons':>7} {'params':>6} {'val MSE':>9}")
    for k in ks:
        f = lambda x: 0.5 * np.sin(k * np.pi * x)  # noqa: E731
        for S in sizes_S:
            for seed in seeds:
                xs = np.random.default_rng(100 + seed).uniform(-1, 1, S)
                for family in FAMILIES:
                    found = {"k": k, "S": S, "seed": seed, "family": family,
                             "neurons": None, "params": None, "val_mse": None}
                    for n in neurons:
                        val, n_params = train(family, n, xs, f(xs), xv, f(xv), seed, maxiter)
                        found.update(val_mse=float(val))
                        if val < THRESHOLD:
                            found.update(neurons=n, params=n_params)
                            break
                    rows.append(found)
                    (out / "results.json").write_text(json.dumps(rows, indent=2))  # as it goes
                    print(f"{k:2d} {S:4d} {seed:4d} {family:10s} {str(found['neurons']):>7} "
                          f"{str(found['params']):>6} {found['val_mse']:9.3g}", flush=True)
    plot(rows, out / "succinctness.png", max(neurons))
    print(table(rows))
    print(f"{time.perf_counter() - started:.0f} s -> {out / 'results.json'}, {out / 'succinctness.png'}")


def table(rows) -> str:
    """Markdown: per (k, S) and family, the neurons needed per seed ("–": not reached)
    and, in brackets, the validation MSE per seed (at that size, or at the largest tried;
    "fail": the trained network's validation run blew up)."""
    head = ["k", "S"] + [LABELS[f] for f in FAMILIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, S in sorted({(r["k"], r["S"]) for r in rows}):
        cells = [str(k), str(S)]
        for family in FAMILIES:
            at = sorted((r for r in rows if (r["k"], r["S"], r["family"]) == (k, S, family)),
                        key=lambda r: r["seed"])
            sizes = ", ".join("–" if r["neurons"] is None else f"**{r['neurons']}**" for r in at)
            errors = ", ".join("fail" if r["val_mse"] >= 1e5 else f"{r['val_mse']:.2g}" for r in at)
            cells.append(f"{sizes} ({errors})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path, cap):
    """Per target (columns): neurons needed (cap + 1 = not reached), parameters needed (runs
    that reached the threshold) and validation MSE at that size (failed runs at 1)."""
    from matplotlib.figure import Figure
    ks = sorted({r["k"] for r in rows})
    fig = Figure(figsize=(4.2 * len(ks), 8.6), layout="constrained")
    axes = fig.subplots(3, len(ks), squeeze=False, sharex=True)
    colors = {"nrn": "#c0392b", "ctrnn": "#2c6fbb", "neural_ode": "#27ae60", "resnet": "#8e44ad"}
    for col, k in enumerate(ks):
        top, middle, bottom = axes[:, col]
        for j, family in enumerate(FAMILIES):
            sel = [r for r in rows if r["k"] == k and r["family"] == family]
            S_values = sorted({r["S"] for r in sel})
            shift = 1 + 0.08 * (j - 1.5)
            style = dict(color=colors[family], alpha=0.7, s=20)
            for S in S_values:
                at = [r for r in sel if r["S"] == S]
                top.scatter([S * shift] * len(at), [r["neurons"] or cap + 1 for r in at],
                            label=LABELS[family] if S == S_values[0] else None, **style)
                reached = [r["params"] for r in at if r["params"] is not None]
                middle.scatter([S * shift] * len(reached), reached, **style)
                bottom.scatter([S * shift] * len(at), [min(r["val_mse"], 1.0) for r in at], **style)
            bottom.plot(S_values, [np.median([min(r["val_mse"], 1.0) for r in sel if r["S"] == S])
                                   for S in S_values], color=colors[family])
        top.axhline(cap + 1, ls=":", color="k", lw=0.8)
        top.set_yticks(range(1, cap + 2))
        top.set_ylabel(f"neurons to reach MSE < {THRESHOLD}\n({cap + 1} = not reached)")
        top.set_title(f"0.5 sin({k}πx)", fontsize=10)
        if any(r["params"] for r in rows if r["k"] == k):
            middle.set_yscale("log")
        else:
            middle.text(0.5, 0.5, "no run reached the threshold", ha="center",
                        transform=middle.transAxes)
        middle.set_ylabel("parameters at that size")
        bottom.axhline(THRESHOLD, ls=":", color="k", lw=0.8)
        bottom.set_yscale("log")
        bottom.set_xscale("log", base=2)
        bottom.set_xlabel("training set size S")
        bottom.set_ylabel("validation MSE at that size")
        for ax in (top, middle, bottom):
            ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(0.02, 0.62))
    save_figure(fig, path)


if __name__ == "__main__":
    main()
