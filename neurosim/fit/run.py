"""A whole fit from a circuit, targets and a specification: what `neurosim fit` runs."""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurosim._version import __version__
from neurosim.errors import CircuitError
from neurosim.fit.identify import Identifiability, identifiability
from neurosim.fit.objective import Objective
from neurosim.fit.optimize import FitResult, fit, progress_display
from neurosim.fit.parameters import Parameterization
from neurosim.fit.signs import TIE_THRESHOLD, SignPattern, enumerate_signs
from neurosim.fit.spec import FitSpec
from neurosim.fit.targets import BehaviourTarget
from neurosim.io.hdf5 import HDF5Recorder
from neurosim.io.yaml import dump_circuit, write_text_atomically
from neurosim.model import Circuit, Protocol
from neurosim.simulate import SENSITIVITY_METHODS, simulate

#: the control target's standard error, as a fraction of the read-out's threshold: a
#: score at the threshold (a behaviour without a stimulus) costs a loss of 2
CONTROL_SE = 0.5


def with_rest_control(circuit: Circuit, targets, readout: str = "behaviour"):
    """(circuit, targets) with the control "no stimulus → no behaviour" added.

    The control is a ``score`` target of 0 (standard error half the read-out's
    threshold) on a protocol without stimuli, ablations or lesions that starts at rest and
    lasts to the end of the read-out's windows: the circuit's own (``rest`` first), or a
    protocol added to the circuit (``rest``, else ``rest_control``) as long as the longest
    target protocol.  Runs start at rest, so a circuit with a stable rest meets it exactly;
    it penalises parameters whose rest is unstable or oscillating, where a score would be
    drift.  Targets that already include such a protocol, or no behavioural target at all,
    are returned unchanged.
    """
    if not any(isinstance(t, BehaviourTarget) for t in targets):
        return circuit, list(targets)
    spec = circuit.readout(readout)
    needed = max(spec.window[1], spec.baseline[1] if spec.baseline else 0.0)
    quiet = [name for name, p in circuit.protocols.items()
             if not (p.stimuli or p.ablate or p.scale) and p.duration >= needed
             and circuit.initial_state(p) == "rest"]
    if any(t.protocol in quiet for t in targets):
        return circuit, list(targets)
    if quiet:
        name = "rest" if "rest" in quiet else quiet[0]
    else:
        name = next(n for n in ("rest", "rest_control", *(f"rest_control_{k}" for k in range(2, 99)))
                    if n not in circuit.protocols)
        duration = max([needed] + [circuit.protocol(t.protocol).duration for t in targets])
        protocols = dict(circuit.protocols, **{name: Protocol(
            duration, description="no stimulus (the fit's control)", initial="rest")})
        circuit = circuit.replace(protocols=protocols)
    control = BehaviourTarget(name, "score", 0.0, se=CONTROL_SE * spec.threshold,
                              source="control",
                              note="no stimulus -> no behaviour (added by neurosim fit)")
    return circuit, list(targets) + [control]


@dataclass
class FitReport:
    """Everything a fit produced."""

    result: FitResult
    parameterization: Parameterization
    objective: Objective
    circuit: Circuit
    predictions: list
    signs: list[SignPattern] | None = None
    sign_threshold: float = TIE_THRESHOLD
    identifiability: Identifiability | None = None

    def provenance(self, data_source: str = "") -> str:
        """YAML comment lines recording how the fitted circuit was made."""
        r = self.result
        lines = [f"fitted by neurosim {__version__} on "
                 f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
                 f"data: {data_source or '(in memory)'}; method: {r.method}; loss {r.loss:.6g} "
                 f"after {r.evaluations} evaluations ({r.simulations} simulations, {r.wall_s:.1f} s)",
                 f"free parameters ({self.parameterization.n_free}):"]
        for name, start, end in self.parameterization.table(r.x):
            lines.append(f"  {name}: {start:.6g} -> {end:.6g}")
        for p in self.predictions:
            lines.append(f"  {p['protocol']} {p['measure']}: observed {p['observed']:.3g}, "
                         f"fitted {p['predicted']:.3g}")
        if self.identifiability is not None:
            lines += self.identifiability.summary()
        return "".join(f"# {line}\n" for line in lines)

    def fitted_yaml(self, data_source: str = "") -> str:
        return self.provenance(data_source) + dump_circuit(self.circuit)

    def write(self, out, data_source: str = "", dt_out: float = 5.0) -> list[Path]:
        """The fitted circuit (``out``), ``<stem>_predictions.csv``, ``<stem>_signs.csv``
        when signs were enumerated, and ``<stem>_traces/<protocol>.h5``; returns the paths."""
        out = Path(out)
        stem = out.with_suffix("")
        write_text_atomically(out, self.fitted_yaml(data_source))
        written = [out, Path(f"{stem}_predictions.csv")]
        with open(written[1], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["protocol", "measure", "observed", "predicted",
                                                   "score", "initial", "n", "se"])
            writer.writeheader()
            writer.writerows(self.predictions)
        if self.signs:
            written.append(Path(f"{stem}_signs.csv"))
            best = self.signs[0].loss
            with open(written[-1], "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["rank", *self.signs[0].signs, "loss", "delta_log_likelihood",
                                 "tie", "converged"])
                for k, pattern in enumerate(self.signs, 1):
                    delta = pattern.loss - best
                    writer.writerow([k, *pattern.signs.values(), f"{pattern.loss:.6g}",
                                     f"{delta:.6g}", "yes" if delta < self.sign_threshold else "no",
                                     "yes" if pattern.converged else "no"])
        traces = Path(f"{stem}_traces")
        traces.mkdir(exist_ok=True)
        for protocol in self.objective.protocols:
            simulate(self.circuit, protocol, dt_out=dt_out,
                     recorder=HDF5Recorder(traces / f"{protocol}.h5", overwrite=True))
        return written + [traces]


class Checkpoint:
    """Writes the best point so far to a JSON file (atomically, at most once a second),
    and the optimiser's whole state beside it (``.state``, after every CMA-ES
    generation), so that ``--resume`` continues the optimisation itself."""

    def __init__(self, path, names, setup: str = ""):
        self.path, self.names, self.last = Path(path), list(names), 0.0
        self.setup = setup  # a digest of circuit, data and specification
        self.state_path = self.path.with_suffix(".state")

    def save_state(self, state: dict) -> None:
        write_text_atomically(self.state_path, pickle.dumps(
            {"names": self.names, "setup": self.setup, "state": state}))

    def _check(self, data: dict, path) -> None:
        if data.get("names") != self.names:
            raise CircuitError(f"{path} was written for other free parameters; "
                               "delete it or fit without --resume")
        if data.get("setup") != self.setup:
            raise CircuitError(f"{path} was written by a fit of another circuit, data or "
                               "specification; delete it or fit without --resume")

    def load_state(self) -> dict | None:
        """The saved optimiser state, or None if there is none."""
        if not self.state_path.exists():
            return None
        try:
            data = pickle.loads(self.state_path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise CircuitError(f"cannot resume from {self.state_path}: {exc}") from None
        self._check(data, self.state_path)
        return data["state"]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def __call__(self, x, loss, evaluations):
        now = time.monotonic()
        if now - self.last < 1.0:
            return
        self.last = now
        self.write(x, loss, evaluations)

    def write(self, x, loss, evaluations):
        write_text_atomically(self.path, json.dumps(
            {"names": self.names, "setup": self.setup, "x": [float(v) for v in x],
             "loss": float(loss), "evaluations": int(evaluations)}))

    def load(self) -> np.ndarray:
        """The saved point; CircuitError if absent or made for other free parameters."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CircuitError(f"cannot resume from {self.path}: {exc}") from None
        self._check(data, self.path)
        return np.array(data["x"], dtype=np.float64)


def run_fit(circuit: Circuit, targets, spec: FitSpec, *, progress=False,
            checkpoint: str | None = None, resume: bool = False,
            signs_checkpoint: str | None = None, signs_progress=None,
            compile_ahead: bool = False, executor=None) -> FitReport:
    """Parameterise, build the objective, optimise, and (if asked) enumerate signs.

    With ``checkpoint`` the best point is saved there as the fit goes, and CMA-ES's whole
    state beside it; ``resume`` continues from that state (a CMA-ES fit then ends where
    the uninterrupted one would), or, for a gradient fit, from the saved point.  The
    files are removed when the fit completes.  With
    ``signs_checkpoint`` every fitted sign pattern is saved there, and patterns already
    saved are not fitted again (removed when the enumeration completes);
    ``signs_progress(k)`` is told of every pattern fitted (default: the display
    ``progress`` makes).  ``progress`` is True for tqdm's bars, or a callable
    ``progress(total, description)`` making a display with ``update``, ``set_postfix``
    and ``close`` (see :func:`neurosim.fit.optimize.progress_display`).
    """
    if spec.loss.control:
        circuit, targets = with_rest_control(circuit, targets, spec.loss.readout)
    sim = spec.simulation
    objective_options = dict(readout=spec.loss.readout, integrator=sim.integrator, dt=sim.dt,
                             rtol=sim.rtol, atol=sim.atol, dt_out=sim.dt_out,
                             prior=spec.loss.prior, precision=sim.precision)
    par = Parameterization(circuit, spec.free)
    objective = Objective(par, targets, **objective_options)
    ahead = _compile_ahead(spec) if compile_ahead else None
    if ahead is not None and sim.integrator in SENSITIVITY_METHODS:
        objective.before_gradients = lambda: ahead.wait(f"gradients, {sim.integrator}")
    # what defines the objective: a checkpoint of another is refused, while the optimiser
    # may change (a CMA-ES state is only reused by the same optimiser settings)
    setup = hashlib.sha256(repr((list(targets), spec.free, spec.loss, spec.simulation,
                                 spec.indicator, dump_circuit(circuit))).encode()).hexdigest()
    saver = Checkpoint(checkpoint, par.names, setup) if checkpoint else None
    x0 = saver.load() if (saver and resume and saver.path.exists()) else None
    opt = spec.optimizer
    if opt.method == "gradient":
        result = fit(objective, "gradient", x0=x0, restarts=opt.restarts, seed=opt.seed,
                     maxiter=opt.maxiter, progress=progress, checkpoint=saver)
    else:
        state = saver.load_state() if (saver and resume) else None
        if state is not None and state.get("optimizer") != repr(opt):
            state = None  # other optimiser settings: start them from the saved best point
        result = fit(objective, "cmaes", x0=x0, sigma0=opt.sigma0, popsize=opt.popsize,
                     generations=opt.generations, restarts=opt.restarts, seed=opt.seed,
                     polish=opt.polish, progress=progress, checkpoint=saver, state=state,
                     save_state=(lambda st: saver.save_state(dict(st, optimizer=repr(opt))))
                     if saver else None)
    if saver:
        saver.remove()
    if ahead is not None:
        ahead.wait()
    signs = None
    if spec.signs is not None:
        bar = None
        if progress and signs_progress is None:
            bar = progress_display(progress, 2 ** len(spec.signs.classes), "sign patterns")
            signs_progress = bar.update
        signs = enumerate_signs(circuit, targets, spec.signs.classes, spec.free,
                                maxiter=spec.signs.maxiter, objective_options=objective_options,
                                progress=signs_progress, checkpoint=signs_checkpoint,
                                executor=executor)
        if bar:
            bar.close()
        if signs_checkpoint:
            Path(signs_checkpoint).unlink(missing_ok=True)
    identified = (identifiability(objective, result.x)
                  if objective.method.name in SENSITIVITY_METHODS else None)
    return FitReport(result, par, objective, par.apply(result.x),
                     _predictions(objective, result.x, par.x0), signs,
                     spec.signs.threshold if spec.signs else TIE_THRESHOLD, identified)


def _compile_ahead(spec: FitSpec):
    """Start compiling, in a background process, the kernels a fit needs after its
    first batch: for CMA-ES the rests (while this process compiles the batch's own time
    loop), the gradients of the polish and the final single runs.  Where this process
    had to compile its time loop (a cold cache), it waits for the rests before the first
    batch rather than compiling them a second time.  Returns the CompileAhead."""
    from neurosim.simulate import compile_seconds
    from neurosim.warmup import compile_ahead, warmup  # warmup imports this package
    sim = spec.simulation
    later = ["single runs, dopri5"]
    if spec.optimizer.method != "cmaes":
        return compile_ahead(later)
    if sim.integrator in SENSITIVITY_METHODS:
        later.insert(0, f"gradients, {sim.integrator}")
    ahead = compile_ahead(["rest states"] + later)
    batches = ("batches, dopri5 float32" if sim.precision == "float32" else
               "batches, dopri5" if sim.integrator == "dopri5" else "batches, other integrators")
    before = compile_seconds()
    warmup(only=[batches])
    if compile_seconds() > before:
        ahead.wait("rest states")
    return ahead


def _predictions(objective: Objective, x, x_initial) -> list[dict]:
    """The fitted predictions with what the circuit as given predicted (``initial``) and
    each observation's animals ``n`` and standard error ``se`` (None where not given),
    so a report can show the fit's progress against the data's own uncertainty."""
    rows = objective.predictions(x)
    initial = objective.predictions(x_initial)
    for row, start, target in zip(rows, initial, objective.targets):
        row["initial"] = start["predicted"]
        row["n"] = getattr(target, "n", None)
        row["se"] = getattr(target, "se", None)
    return rows
