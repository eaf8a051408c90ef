"""Expressivity: NRN vs CT-RNN vs Neural ODE of the same size on time-series tasks.

Each family is trained with the fitting machinery (L-BFGS-B on forward-sensitivity
gradients) to make neuron 0 follow a target trace, for 2..16 neurons.  Prints a table,
writes JSON and a figure (final loss vs neurons and vs parameters).

    python scripts/expressivity.py --quick     # n = 2, 4, 8, 2 random restarts; ~1 minute
    python scripts/expressivity.py             # n = 2, 4, 8, 16, 4 restarts

Parameter counts follow Lemmel & Grosu: NRN 4 per synapse (w, E, μ, ν) + 3 per neuron
(C, g_L, E_L); CT-RNN 1 per synapse (signed weight) + 1 per neuron (decay); Neural ODE
1 per synapse.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import neurosim as ns
from neurosim.fit import Objective, Parameterization, TraceTarget
from neurosim.fit.optimize import fit_gradient
from neurosim.plot import save_figure

DURATION, DT_OUT = 120.0, 2.0
REST = {"nrn": -70.0, "ctrnn": 0.0, "neural_ode": 0.0}
SCALE = {"nrn": 20.0, "ctrnn": 1.0, "neural_ode": 1.0}   # mV per unit of target


def tasks(seed: int) -> dict:
    """name -> (input samples (12, n_inputs), one per 10 ms; target trace every DT_OUT)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, DURATION + DT_OUT / 2, DT_OUT)
    pulse = np.zeros((12, 1))
    pulse[1] = 1.0
    oscillator = np.where(t >= 10, np.exp(-(t - 10) / 40) * np.sin(2 * np.pi * (t - 10) / 35), 0.0)
    inputs = rng.choice([0.0, 1.0], (12, 2)) + rng.normal(0, 0.1, (12, 2))
    sample = np.minimum((t // 10).astype(int), 11)
    u = inputs[sample, 0] - inputs[sample, 1]
    filtered = np.zeros_like(u)
    for k in range(1, u.size):  # first-order low-pass, τ = 15 ms
        filtered[k] = filtered[k - 1] + DT_OUT / 15.0 * (u[k - 1] - filtered[k - 1])
    return {"damped oscillator": (pulse, oscillator), "noisy two-input filter": (inputs, 0.6 * filtered)}


def build(family: str, n: int, n_inputs: int, seed: int) -> tuple[ns.Circuit, list, int]:
    """A fully connected circuit of the family with clamped input neurons; free parameters."""
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(n)]
    inputs = [f"in{k}" for k in range(n_inputs)]
    rest = REST[family]
    neurons = [ns.Neuron(name, clamp=rest) for name in inputs]
    if family == "nrn":
        neurons += [ns.Neuron(nm, C=10.0, g_L=1.0, E_L=-70.0) for nm in names]
        synapses = [ns.Synapse(pre, post, w=float(rng.uniform(0.1, 1.0)),
                               E=float(rng.choice([0.0, -90.0])), mu=-50.0, nu=0.1)
                    for pre in names + inputs for post in names]
        free = [{"select": "synapses[*].w", "bounds": [0, 5]},
                {"select": "synapses[*].E", "bounds": [-90, 0]},
                {"select": "synapses[*].mu", "bounds": [-90, 0]},
                {"select": "synapses[*].nu", "bounds": [0.01, 1.0]}]
        free += [{"select": f"neurons[{nm}].{f}", "bounds": b} for nm in names
                 for f, b in (("C", [1, 50]), ("g_L", [0.05, 5]), ("E_L", [-90, -40]))]
        n_params = 4 * len(synapses) + 3 * n
    else:
        decay = 0.1 if family == "ctrnn" else 0.0
        neurons += [ns.Neuron(nm, C=1.0, g_L=decay, E_L=0.0, V0=0.0) for nm in names]
        # current-based synapses with w = 1: the reversal E is the signed weight
        synapses = [ns.Synapse(pre, post, w=1.0, E=float(rng.normal(0, 0.3)), mu=0.0, nu=1.0,
                               kappa=0.0) for pre in names + inputs for post in names]
        free = [{"select": "synapses[*].E", "bounds": [-5, 5]}]
        if family == "ctrnn":
            free += [{"select": f"neurons[{nm}].g_L", "bounds": [0.01, 2]} for nm in names]
        n_params = len(synapses) + (n if family == "ctrnn" else 0)
    return ns.Circuit(f"{family} {n}", tuple(neurons), tuple(synapses)), free, n_params


def train(family: str, n: int, task, seed: int, maxiter: int, restarts: int) -> dict:
    samples, target = task
    circuit, free, n_params = build(family, n, samples.shape[1], seed)
    rest, scale = REST[family], SCALE[family]
    times = tuple(float(10 * k) for k in range(samples.shape[0]))
    stimuli = {f"in{k}": ns.Stimulus("steps", f"in{k}", quantity="voltage", times=times,
                                     values=tuple(scale * samples[:, k]))
               for k in range(samples.shape[1])}
    circuit = circuit.replace(stimuli=stimuli,
                              protocols={"task": ns.Protocol(DURATION, tuple(stimuli))})
    t = np.arange(target.size) * DT_OUT
    goal = TraceTarget("task", "x0", tuple(t), tuple(rest + scale * target), sigma=scale)
    par = Parameterization(circuit, free)
    # RK4 at a fixed step keeps every evaluation's cost bounded: a random restart that makes
    # the circuit stiff fails fast (and is scored as failed) instead of crawling adaptively
    objective = Objective(par, [goal], integrator="rk4", dt=0.25, dt_out=DT_OUT)
    started = time.perf_counter()
    result = fit_gradient(objective, maxiter=maxiter, seed=seed, restarts=restarts)
    mse = 2 * result.loss / target.size  # loss = ½ Σ r², r in target units
    return {"family": family, "neurons": n, "parameters": n_params, "free": par.n_free,
            "mse": float(mse), "evaluations": result.evaluations,
            "seconds": time.perf_counter() - started}


def plot(rows, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4), layout="constrained")
    tasks_ = sorted({r["task"] for r in rows})
    axes = fig.subplots(1, 2 * len(tasks_), squeeze=False)[0]
    colors = {"nrn": "#c0392b", "ctrnn": "#2c6fbb", "neural_ode": "#27ae60"}
    for k, task in enumerate(tasks_):
        for family in colors:
            sel = sorted((r for r in rows if r["task"] == task and r["family"] == family),
                         key=lambda r: r["neurons"])
            if not sel:
                continue
            axes[2 * k].plot([r["neurons"] for r in sel], [r["mse"] for r in sel], "o-",
                             color=colors[family], label=family)
            axes[2 * k + 1].plot([r["parameters"] for r in sel], [r["mse"] for r in sel], "o-",
                                 color=colors[family], label=family)
        for ax, xlabel in ((axes[2 * k], "neurons"), (axes[2 * k + 1], "parameters")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_title(task, fontsize=9)
            ax.spines[["top", "right"]].set_visible(False)
        axes[2 * k].set_ylabel("training MSE (target units²)")
    axes[0].legend(frameon=False, fontsize=8)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2, 4, 8, fewer restarts")
    parser.add_argument("--out", default="out/expressivity")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [2, 4, 8] if args.quick else [2, 4, 8, 16]
    maxiter, restarts = (150, 2) if args.quick else (300, 4)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'task':24s} {'family':10s} {'n':>3s} {'params':>7s} {'MSE':>10s} {'s':>6s}")
    for task_name, task in tasks(args.seed).items():
        for n in sizes:
            for family in ("nrn", "ctrnn", "neural_ode"):
                row = dict(train(family, n, task, args.seed, maxiter, restarts), task=task_name)
                rows.append(row)
                print(f"{task_name:24s} {family:10s} {n:3d} {row['parameters']:7d} "
                      f"{row['mse']:10.4g} {row['seconds']:6.1f}", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "expressivity.png")
    print(f"-> {out / 'results.json'}, {out / 'expressivity.png'}")


if __name__ == "__main__":
    main()
