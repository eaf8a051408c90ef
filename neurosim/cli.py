"""``neurosim``: run, validate, inspect and plot circuits from the shell.

A thin shell over the Python API.  Exit status: 0 ok, 1 the run failed numerically,
2 bad usage or bad input (also a run refused because its output would not fit), 74 an
output could not be written (a full disk, an I/O error), 130 interrupted (Ctrl-C or
SIGTERM).  Errors are one line on stderr unless
``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from neurosim._version import __version__
from neurosim.errors import CircuitError, NeurosimError, SimulationError, StorageError
from neurosim.simulate import METHODS

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 74, 130


def _interrupt_on_sigterm(signum, frame):
    # SIGTERM takes the same path as Ctrl-C: recorders close their files (complete = False)
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _output_paths(out: str, protocols: list[str]) -> dict[str, Path]:
    """One file per protocol: OUT itself for one, OUT_<protocol>.h5 for several, and
    FOLDER/<protocol>.h5 when OUT names a folder."""
    path = Path(out)
    in_folder = path.is_dir() or out.endswith(("/", os.sep))
    if len(protocols) == 1 and not in_folder:
        return {protocols[0]: path}
    for p in protocols:  # a name from the circuit file must not lead out of the folder
        if p in (".", "..") or any(c in p for c in "/\\\0"):
            raise CircuitError(f"protocol {p!r} cannot name an output file (it is '.' or '..' "
                               "or holds a path separator); run it alone with -p and -o")
    if in_folder:
        return {p: path / f"{p}.h5" for p in protocols}
    return {p: path.with_name(f"{path.stem}_{p}{path.suffix or '.h5'}") for p in protocols}


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _amount(x: float) -> str:
    whole = round(x)
    return f"{whole:,}" if abs(x - whole) <= 1e-9 * max(1.0, abs(x)) and abs(x) < 1e15 \
        else f"{x:.4g}"


class _Lines:
    """Progress where no terminal shows a bar: a line on stderr at most every 5 s, with
    the time taken and, from the pace so far, the time left, and a line at the end
    (unless ``last_line`` is False and no line was printed before: a short run that
    reports itself stays quiet).  Has tqdm's update, set_postfix and close."""

    EVERY_S = 5.0

    def __init__(self, total: float, what: str, unit: str = "", last_line: bool = True):
        self.total, self.what, self.unit, self.last_line = total, what, unit, last_line
        self.done, self.extra, self.printed = 0, "", False
        self.first = None  # (time, amount) of the first report

    def update(self, k=1):
        self.done += k
        now = time.monotonic()
        if self.first is None:
            # the clock starts with the first report: compiling and setting up, before
            # it, are neither the work's time nor its pace
            self.first, self.last = (now, self.done), now
        end = self.done >= self.total and (self.last_line or self.printed)
        if now - self.last > self.EVERY_S or end:
            elapsed = now - self.first[0]
            pace = (self.done - self.first[1]) / elapsed if elapsed > 0 else 0.0
            left = (f", about {_seconds((self.total - self.done) / pace)} left"
                    if pace > 0 and self.done < self.total else "")
            print(f"{self.what}: {_amount(self.done)} of {_amount(self.total)}{self.unit} "
                  f"({_seconds(elapsed)}{left}){self.extra}", file=sys.stderr, flush=True)
            self.last, self.printed = now, True

    def set_postfix(self, **values):
        self.extra = "".join(f", {k} {v}" for k, v in values.items())

    def close(self):
        pass


def _progress(total: float, what: str, unit: str = "", last_line: bool = True):
    """A progress display (update, set_postfix, close): a bar on a terminal, else lines."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=what, unit=unit.strip() or "it", leave=False)
    return _Lines(total, what, unit, last_line)


#: names of result files, and of circuit files
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
YAML_SUFFIXES = (".yaml", ".yml")


def _check_suffix(path, suffixes, what: str) -> None:
    """A one-line error unless ``path`` ends in one of ``suffixes``."""
    if Path(path).suffix.lower() not in suffixes:
        raise CircuitError(f"{path}: {what}; end its name in {suffixes[0]}")


def _plot_path(plot: str, protocol: str, runs: int) -> Path:
    """The picture of one protocol's run: PNG itself, or PNG_<protocol> for several."""
    path = Path(plot)
    return path if runs == 1 else path.with_name(f"{path.stem}_{protocol}{path.suffix}")


#: picture formats the figures can be saved in (matplotlib's, without its rarer ones)
FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff",
                   ".webp")


def _check_output(path, figure: bool = False, overwrite: bool = False) -> None:
    """A one-line error now, before any work, if ``path`` cannot be written, exists
    (without ``overwrite``) or, for a ``figure``, has no picture format."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir() and not overwrite:
        raise CircuitError(f"{path} exists; pass --overwrite to replace it")
    folder = target.resolve().parent
    if not folder.is_dir():
        raise CircuitError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CircuitError(f"cannot write {path}: folder {folder} is not writable")
    if target.is_dir():
        raise CircuitError(f"cannot write {path}: it is a folder")
    if figure and target.suffix.lower() not in FIGURE_SUFFIXES:
        raise CircuitError(f"cannot tell the picture format of {path}: end it in one of "
                           f"{', '.join(FIGURE_SUFFIXES)}")


def _interrupted(protocol: str, out: Path) -> str:
    """Where an interrupted run got to, as its file says (if it has one yet)."""
    from neurosim.io.hdf5 import result_summary
    try:
        return f"{protocol}: {result_summary(out)['message']}, kept in {out}"
    except NeurosimError:  # stopped before its file was opened
        return f"{protocol}: before the run started"


def cmd_run(args) -> int:
    from neurosim.io.hdf5 import HDF5Recorder
    from neurosim.io.yaml import load_circuit
    from neurosim.simulate import simulate

    circuit = load_circuit(args.circuit)
    if args.all:
        protocols = list(circuit.protocols)
        if not protocols:
            raise CircuitError("--all: the circuit defines no protocols", file=args.circuit)
    elif args.protocol:
        circuit.protocol(args.protocol)  # an unknown name fails here, with the known ones
        protocols = [args.protocol]
    elif len(circuit.protocols) == 1:
        protocols = list(circuit.protocols)
    else:
        raise CircuitError(f"choose --protocol (one of: {', '.join(circuit.protocols) or 'none'}) "
                           "or --all", file=args.circuit)
    outputs = _output_paths(args.output, protocols)
    for out in outputs.values():
        _check_suffix(out, HDF5_SUFFIXES, "a result file is HDF5")
    plots = {p: _plot_path(args.plot, p, len(outputs)) for p in outputs} if args.plot else {}
    for plot_out in plots.values():
        _check_output(plot_out, figure=True, overwrite=args.overwrite)
    # every output is checked before the first run starts
    recorders = {p: HDF5Recorder(out, overwrite=args.overwrite,
                                 dtype="float32" if args.float32 else "float64",
                                 check_space=not args.no_space_check)
                 for p, out in outputs.items()}
    status = EXIT_OK
    for protocol, out in outputs.items():
        recorder = recorders[protocol]
        try:
            result = simulate(circuit, protocol, integrator=args.integrator, dt=args.dt,
                              rtol=args.rtol, atol=args.atol, dt_out=args.dt_out,
                              record=_names(args.record) if args.record is not None else None,
                              recorder=recorder,
                              progress=sys.stderr.isatty() or _Lines(
                                  circuit.protocol(protocol).duration, f"simulating {protocol}",
                                  " ms", last_line=False).update)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupted(protocol, out)) from None
        except SimulationError as exc:
            print(f"neurosim: {protocol}: run failed: {_in_flags(str(exc))} (partial result in "
                  f"{out})", file=sys.stderr)
            status = EXIT_RUN_FAILED
            result = exc.result  # its plot shows what the run computed, and says it failed
        else:
            s = result.stats
            print(f"{protocol}: {result.t.size} samples x {len(result.neuron_names)} neurons, "
                  f"{result.t[-1]:g} ms in {s['wall_time_s']:.3g} s ({args.integrator}: "
                  f"{s['steps']} steps, {s['rejected']} rejected) -> {out}")
        if args.plot:
            from neurosim.plot import plot_traces, save_figure
            save_figure(plot_traces(result), plots[protocol])
            print(f"traces -> {plots[protocol]}")
    return status


def cmd_validate(args) -> int:
    from neurosim.io.yaml import load_circuit

    c = load_circuit(args.circuit)
    clamped = [n.name for n in c.neurons if n.clamp is not None]
    print(f"{args.circuit}: OK: '{c.name}'")
    print(f"  neurons       {c.n_neurons}: {', '.join(c.neuron_names)}")
    if clamped:
        print(f"  clamped       {', '.join(clamped)}")
    exc = sum(s.E > -50.0 for s in c.synapses)
    print(f"  synapses      {len(c.synapses)} ({exc} excitatory, {len(c.synapses) - exc} inhibitory)")
    print(f"  gap junctions {len(c.gap_junctions)}")
    print(f"  stimuli       {len(c.stimuli)}: {', '.join(c.stimuli) or '-'}")
    print(f"  protocols     {len(c.protocols)}")
    for name, p in c.protocols.items():
        extra = f", ablate {', '.join(p.ablate)}" if p.ablate else ""
        extra += f", starts {'at rest' if c.initial_state(p) == 'rest' else 'as given'}"
        print(f"    {name}: {p.duration:g} ms, stimuli {', '.join(map(str, p.stimuli)) or '-'}{extra}")
    return EXIT_OK


def cmd_info(args) -> int:
    from neurosim.io import batch_file, sweep_file
    from neurosim.io.hdf5 import file_format, result_summary

    kind = file_format(args.result)
    if kind == batch_file.FORMAT:
        info = batch_file.batch_summary(args.result)
        if args.json:
            print(json.dumps(_json_safe(info), indent=2, allow_nan=False))
            return EXIT_OK
        print(f"{args.result}: batch, {info['status']}"
              f"{'' if info['complete'] else ' (INCOMPLETE)'}")
        runs = len(info["protocols"]) * info["sets"]
        counted = (f"{info['completed']:,} completed, {info['failed']:,} failed, "
                   f"{info['not_run']:,} not written" if info["completed"] is not None
                   else "which were written was never recorded (read as NaN)")
        print(f"  runs      {info['sets']:,} parameter sets x {len(info['protocols'])} "
              f"protocols = {runs:,}: {counted}")
        print(f"  protocols {', '.join(info['protocols'])}")
        print(f"  samples   {info['samples']} up to t = {info['t_end_ms']:g} ms, {info['dtype']}")
        print(f"  neurons   {len(info['neurons'])}: {', '.join(info['neurons'])}")
        print(f"  circuit   {info['circuit']} (sha256 {info['circuit_sha256'][:12]}...)")
        opts = ", ".join(f"{k}={v}" for k, v in info["integrator_options"].items())
        print(f"  integrator {info['integrator']} ({opts})")
        if info["message"]:
            print(f"  message   {info['message']}")
        print(f"  neurosim  {info['neurosim_version']}")
        return EXIT_OK

    if kind == sweep_file.FORMAT:
        info = sweep_file.load_sweep(args.result, traces=False).summary()
        if args.json:
            print(json.dumps(info, indent=2))
            return EXIT_OK
        print(f"{args.result}: sweep{'' if info['complete'] else ' (INCOMPLETE: --resume it)'}")
        print(f"  runs      {info['runs']:,} x {len(info['protocols'])} protocols: "
              f"{info['completed']:,} completed, {info['failed']:,} failed, "
              f"{info['not_run']:,} not run")
        print(f"  protocols {', '.join(info['protocols'])}")
        print(f"  parameters {', '.join(info['parameters'])}")
        kept = (f"read-out '{info['readout']}' scores" if info["readout"] else
                f"{info['samples']} samples x {len(info['neurons'])} neurons")
        print(f"  kept      {kept}")
        print(f"  neurosim  {info['neurosim_version']}")
        return EXIT_OK
    info = result_summary(args.result)
    if args.json:
        print(json.dumps(_json_safe(info), indent=2, allow_nan=False))
        return EXIT_OK
    print(f"{args.result}: {info['status']}{'' if info['complete'] else ' (INCOMPLETE)'}")
    print(f"  circuit   {info['circuit']} (sha256 {info['circuit_sha256'][:12]}...)")
    print(f"  protocol  {info['protocol']}")
    print(f"  samples   {info['samples']} up to t = {info['t_end_ms']:g} ms")
    print(f"  neurons   {len(info['neurons'])}: {', '.join(info['neurons'])}")
    opts = ", ".join(f"{k}={v}" for k, v in info["integrator_options"].items())
    print(f"  integrator {info['integrator']} ({opts})")
    print(f"  stats     {', '.join(f'{k}={v}' for k, v in info['stats'].items())}")
    print(f"  message   {info['message']}")
    if info.get("initial"):
        print(f"  start     {info['initial']['message']}")
        shown = list(info["initial"]["V"].items())
        more = f", ... ({len(shown) - 8} more; --json lists all)" if len(shown) > 8 else ""
        print("  V0        " + ", ".join(f"{k} {v:.4g}" for k, v in shown[:8]) + " mV" + more)
    print(f"  neurosim  {info['neurosim_version']}")
    return EXIT_OK


def cmd_plot(args) -> int:
    from neurosim.io.hdf5 import load_result
    from neurosim.plot import plot_traces, save_figure

    _check_output(args.output, figure=True, overwrite=args.overwrite)
    result = load_result(args.result)
    save_figure(plot_traces(result, _names(args.neurons) if args.neurons else None), args.output)
    print(f"traces -> {args.output}")
    return EXIT_OK


def cmd_graph(args) -> int:
    from neurosim.io.yaml import load_circuit
    from neurosim.plot import plot_graph, save_figure

    _check_output(args.output, figure=True, overwrite=args.overwrite)
    save_figure(plot_graph(load_circuit(args.circuit)), args.output)
    print(f"graph -> {args.output}")
    return EXIT_OK


def _reversal_pairs(items) -> dict:
    """--reversal NAME=MV ... as {NAME: MV}."""
    out = {}
    for item in items or ():
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise CircuitError(f"--reversal takes NAME=MV (e.g. AVA=-90), got {item!r}") from None
        if not name.strip() or not math.isfinite(out[name.strip()]):
            raise CircuitError(f"--reversal takes NAME=MV with a finite MV, got {item!r}")
    return out


def cmd_connectome(args) -> int:
    from neurosim.connectome import build_circuit, circuit_yaml, load_connectome
    from neurosim.io.yaml import loads_circuit, write_text_atomically

    _check_output(args.output, overwrite=args.overwrite)
    _check_suffix(args.output, YAML_SUFFIXES, "a circuit is a YAML file")
    if args.unknown == "drop":
        unknown = "drop"
    else:
        try:
            unknown = float(args.unknown)
        except ValueError:
            raise CircuitError(f"--unknown takes a reversal potential in mV or 'drop', got "
                               f"{args.unknown!r}") from None
    neurons = _names(args.neurons) if "," in args.neurons else args.neurons
    circuit, report = build_circuit(
        load_connectome(args.source), neurons, merge_classes=args.merge_classes,
        chemical_weight=args.chemical_weight, gap_weight=args.gap_weight,
        glutamate=args.glutamate, unknown=unknown, reversal=_reversal_pairs(args.reversal),
        autapses=args.autapses, name=args.name)
    # how to make the file again (--overwrite is how it was written, not what it holds)
    command = "neurosim " + shlex.join(a for a in args.argv if a != "--overwrite")
    text = circuit_yaml(circuit, report, command)
    loads_circuit(text, args.output)  # what is written reads back
    write_text_atomically(args.output, text)
    for line in report.lines():
        print(_in_flags(line))
    print(f"circuit -> {args.output}")
    return EXIT_OK


def cmd_sweep(args) -> int:
    from neurosim.io.yaml import load_circuit
    from neurosim.sweep import sweep

    _check_suffix(args.output, HDF5_SUFFIXES, "a sweep is an HDF5 file")
    bar, shown = None, 0

    def progress(done, total):
        nonlocal bar, shown
        if bar is None:  # the first report comes once the sweep is planned and checked
            bar = _progress(total, "sweep", " chunks")
        bar.update(done - shown)
        shown = done

    try:
        summary = sweep(load_circuit(args.circuit), args.spec, args.output,
                        workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                        overwrite=args.overwrite, progress=progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"sweep interrupted; finished chunks are kept in "
                                f"{args.output}.partial: continue with --resume") from None
    finally:
        if bar is not None:
            bar.close()
    print(summary.line())
    return EXIT_OK


def cmd_behave(args) -> int:
    from neurosim.behaviour import (check_facts, facts_summary, format_table, load_facts,
                                    run_experiments, write_table)
    from neurosim.io.yaml import load_circuit
    from neurosim.plot import plot_experiments, save_figure

    circuit = load_circuit(args.circuit)
    facts = load_facts(args.facts, protocols=circuit.protocols) if args.facts else None
    _check_output(args.output, overwrite=args.overwrite)
    _check_output(args.plot, figure=True, overwrite=args.overwrite)
    protocols = _names(args.protocols) if args.protocols else None
    bar = _progress(len(protocols or circuit.protocols), "protocols")
    try:
        rows, results = run_experiments(circuit, protocols, readout=args.readout,
                                        integrator=args.integrator, dt_out=args.dt_out,
                                        progress=bar.update)
    finally:
        bar.close()
    spec = circuit.readout(args.readout)
    checks = check_facts(facts, rows, spec.threshold) if facts else None
    print(format_table(rows, checks))
    if checks:
        print(facts_summary(checks))
        for c in checks:
            if c.reproduced is False:
                print(f"  not reproduced: {c.fact.id}: {c.fact.protocol} expected "
                      f"{c.fact.expected}, found {c.evidence}")
    if args.output:
        write_table(rows, args.output, checks)
        print(f"table -> {args.output}")
    if args.plot:
        key = [n for n in ("AVA", "AVB") if n in circuit.neuron_names] + list(spec.neurons)
        shown = [p for p in ("tap", "anterior", "posterior_gentle") if p in results] or None
        save_figure(plot_experiments(rows, results, threshold=spec.threshold, neurons=key,
                                     trace_protocols=shown, title=circuit.name, checks=checks,
                                     circuit=circuit),
                    args.plot)
        print(f"figure -> {args.plot}")
    return EXIT_OK


def cmd_fit(args) -> int:
    from neurosim.distributed import Executor
    from neurosim.fit.identify import ensemble, profile
    from neurosim.fit.parameters import Parameterization
    from neurosim.fit.run import run_fit
    from neurosim.fit.signs import sign_association, ties
    from neurosim.fit.spec import DEFAULT_FIT, load_fit_spec, loads_fit_spec
    from neurosim.fit.targets import load_data
    from neurosim.io.yaml import load_circuit
    from neurosim.model import unknown_name_message
    from neurosim.plot import plot_fit, plot_profile, plot_signs, save_figure

    circuit = load_circuit(args.circuit)
    spec = load_fit_spec(args.fit) if args.fit else loads_fit_spec(DEFAULT_FIT, "(default fit)")
    _check_output(args.output, overwrite=args.overwrite or args.resume)
    _check_suffix(args.output, YAML_SUFFIXES, "the fitted circuit is a YAML file")
    targets = load_data(args.data, circuit, spec.indicator, args.sigma)
    if args.starts is not None and args.starts < 1:
        raise CircuitError(f"--starts must be at least 1, got {args.starts}")
    par = Parameterization(circuit, spec.free)
    if args.starts and not (np.all(np.isfinite(par.lower)) and np.all(np.isfinite(par.upper))):
        raise CircuitError("--starts draws starting points within the bounds: give every free "
                           "parameter finite bounds in the fit file")
    for name in spec.signs.classes if spec.signs else ():
        circuit.neuron(name)  # an unknown name fails here, with the known ones
        if not any(s.pre == name for s in circuit.synapses):
            raise CircuitError(f"signs.classes: {name!r} has no outgoing chemical synapse: its "
                               "sign is undefined", file=args.fit)
    if args.profile:
        names = par.names
        for name in args.profile:
            if name not in names:
                raise CircuitError(unknown_name_message("free parameter", name, names)
                                   + " (--profile takes a free parameter of the fit)")
    out = Path(args.output)
    stem = out.with_suffix("")
    existing = [str(p) for p in (out, Path(f"{stem}_report.png"), Path(f"{stem}_predictions.csv"),
                                 Path(f"{stem}_traces")) if p.exists()]
    if existing and not (args.overwrite or args.resume):
        raise CircuitError(f"{', '.join(existing)} exist; pass --overwrite to replace them")
    checkpoint = Path(f"{stem}_checkpoint.json")
    signs_checkpoint = Path(f"{stem}_signs_checkpoint.json")
    if args.resume and not (checkpoint.exists() or signs_checkpoint.exists()):
        raise CircuitError(f"--resume: no checkpoint {checkpoint} to resume from")
    if not args.resume:
        signs_checkpoint.unlink(missing_ok=True)  # a fresh fit starts a fresh enumeration
    if (args.workers is not None or args.scheduler) and not (spec.signs or args.starts):
        raise CircuitError("--workers and --scheduler spread sign patterns (signs: in the fit "
                           "file) and --starts over a cluster; this fit has neither")
    executor = Executor(workers=args.workers, scheduler=args.scheduler)
    with executor:
        try:
            report = run_fit(circuit, targets, spec, progress=_progress,
                             checkpoint=str(checkpoint), resume=args.resume,
                             signs_checkpoint=str(signs_checkpoint), compile_ahead=True,
                             executor=executor)
        except KeyboardInterrupt:
            saved = [str(p) for p in (checkpoint, signs_checkpoint) if p.exists()]
            where = f"; resume with --resume (saved in {', '.join(saved)})" if saved else ""
            raise KeyboardInterrupt(f"fit interrupted{where}") from None
        fits = (ensemble(report.objective, args.starts, seed=spec.optimizer.seed,
                         progress=_progress(args.starts, "starts").update, executor=executor)
                if args.starts else None)
    r = report.result
    products = report.write(out, ", ".join(args.data), dt_out=spec.simulation.dt_out)
    products.append(Path(f"{stem}_report.png"))
    save_figure(plot_fit(r.history, report.predictions, title=f"fit of {circuit.name}"), products[-1])
    print(f"{r.method}: loss {r.loss:.6g} after {r.evaluations} evaluations, {r.simulations} "
          f"simulations in {r.wall_s:.1f} s ({r.simulations_per_s:.0f} simulations/s)")
    for p in report.predictions:
        if p["observed"] != p["observed"]:  # traces and imaging: no single number
            print(f"  {p['protocol']:<16} {p['measure']:<22} loss {p['score']:.3g}")
        else:
            print(f"  {p['protocol']:<16} {p['measure']:<22} observed {p['observed']:.3g}  "
                  f"fitted {p['predicted']:.3g}")
    if report.identifiability is not None:
        print("\n".join(report.identifiability.summary()))
    if fits is not None:
        print("\n".join(fits.summary()))
        products.append(Path(f"{stem}_starts.csv"))
        fits.write(products[-1])
    for name in args.profile or ():
        curve = profile(report.objective, r.x, name)
        low, high = curve.interval()
        print(f"profile of {name}: fitted {curve.fitted:.4g}, 95 % interval {low:.4g} .. {high:.4g}"
              + ("" if np.isfinite(low) and np.isfinite(high) else
                 " (unbounded within the bounds: the data do not confine it)"))
        safe = re.sub(r"[^A-Za-z0-9-]+", "_", name.replace("->", "-to-")).strip("_")
        products.append(Path(f"{stem}_profile_{safe}.png"))
        save_figure(plot_profile(curve), products[-1])
    if report.signs:
        threshold = report.sign_threshold
        save_figure(plot_signs(report.signs, threshold=threshold), Path(f"{stem}_signs.png"))
        tied = ties(report.signs, threshold)
        print(f"sign enumeration: {len(tied)} of {len(report.signs)} patterns within "
              f"{threshold:g} of the best log-likelihood (ties the data cannot tell apart)")
        stopped = sum(not p.converged for p in report.signs)
        if stopped:
            print(f"  {stopped} pattern fit(s) stopped at signs.maxiter before converging: their "
                  "losses are upper bounds, and signs they could tie on are undetermined; "
                  "raise signs.maxiter")
        print(f"  {'class':<6} {'best loss +':>12} {'best loss -':>12} {'log LR':>8}  sign")
        for name, row in sign_association(report.signs, threshold).items():
            print(f"  {name:<6} {row['best_loss_excitatory']:>12.4g} "
                  f"{row['best_loss_inhibitory']:>12.4g} {row['log_likelihood_ratio']:>8.3g}  "
                  f"{'supported ' + row['predicted'] if row['predicted'] != 'undetermined' else 'undetermined'}")
        products.append(Path(f"{stem}_signs.png"))
    print("wrote " + ", ".join(str(p) for p in products))
    return EXIT_OK


def cmd_explain(args) -> int:
    from neurosim.explain import (circuit_as_run, clamped_in_run, control_result, decompose,
                                  dominant_pathways)
    from neurosim.io.hdf5 import load_result
    from neurosim.io.yaml import loads_circuit
    from neurosim.plot import plot_currents, plot_graph, save_figure

    if args.graph and not args.source:
        raise CircuitError("--graph draws the dominant pathway: give --source too")
    for path in (args.output, args.graph):
        _check_output(path, figure=True, overwrite=args.overwrite)
    result = load_result(args.result)
    if "circuit_yaml" not in result.metadata:
        raise CircuitError(f"{args.result} does not hold its circuit; rerun with neurosim run")
    circuit = loads_circuit(result.metadata["circuit_yaml"], f"{args.result}:circuit_yaml")
    run = circuit_as_run(circuit, result)
    for name in (args.neuron, args.source):
        if name is not None and name not in run.neuron_names:
            circuit.neuron(name)  # an unknown name fails here, with the known ones
            raise CircuitError(f"neuron {name!r} was ablated in this run")
    if args.control is not None:
        circuit.protocol(args.control)  # an unknown name fails here, with the known ones
    control = control_result(circuit, result, args.control)
    against = f"protocol '{args.control}'" if args.control else "the stimulus-free rest"
    d = decompose(circuit, result, args.neuron)
    base = decompose(circuit, control, args.neuron, stimuli=[] if args.control is None else None)
    total, change = d.charges, d.evoked_charges(base)
    print(f"currents into {args.neuron}: |charge| over the run, and its change from "
          f"{against} (pC):")
    for k in np.argsort(-np.abs(change)):
        print(f"  {d.names[k]:<28} {total[k]:10.4g} {change[k]:+10.4g}")
    if args.neuron in clamped_in_run(circuit, result):
        print(f"  ({args.neuron} is voltage-clamped: the clamp supplies whatever these currents "
              "do not, so they do not sum to C·dV/dt)")
    print(f"liquid time constant C/G: {d.tau.min():.4g} .. {d.tau.max():.4g} ms")
    if args.output:
        save_figure(plot_currents(d), args.output)
        print(f"figure -> {args.output}")
    if args.source:
        paths = dominant_pathways(circuit, result, args.source, args.neuron, control=control)
        print(f"pathways {args.source} -> {args.neuron} that carried the evoked response "
              f"(bottleneck transmitted charge, pC; + depolarising, - hyperpolarising):")
        for p in paths:
            print(f"  {' -> '.join(p.neurons):<40} {p.charge:+.4g}")
        if not paths:
            print(f"  none: no chain from {args.source} passes its evoked signal on to "
                  f"{args.neuron}" + (" (so no graph is drawn)" if args.graph else ""))
        if args.graph and paths:
            best = paths[0].neurons
            save_figure(plot_graph(circuit, highlight=list(zip(best, best[1:]))), args.graph)
            print(f"graph -> {args.graph}")
    return EXIT_OK


def cmd_motifs(args) -> int:
    from neurosim.explain import motif_table
    from neurosim.io.yaml import load_circuit

    print(motif_table(load_circuit(args.circuit)))
    return EXIT_OK


def cmd_export(args) -> int:
    from neurosim.io.yaml import load_circuit
    from neurosim.neuroml import export

    circuit = load_circuit(args.circuit)
    try:
        files = export(circuit, args.neuroml, args.protocol, dt=args.dt,
                       overwrite=args.overwrite)
    except CircuitError as err:  # about the circuit: say which file it came from
        if err.file is None and err.path is not None:
            err.file = str(args.circuit)
        raise
    for item in files.left_out:
        print(f"  not exported (no NeuroML counterpart): {item}")
    print("wrote " + ", ".join(str(p) for p in files.paths))
    return EXIT_OK


def cmd_import_neuroml(args) -> int:
    from neurosim.io.yaml import save_circuit
    from neurosim.neuroml import import_network

    _check_output(args.output, overwrite=args.overwrite)
    _check_suffix(args.output, YAML_SUFFIXES, "a circuit is a YAML file")
    circuit = import_network(args.network)
    save_circuit(circuit, args.output, f"# imported from {args.network} by neurosim import-neuroml\n")
    print(f"circuit '{circuit.name}': {circuit.n_neurons} neurons, {len(circuit.synapses)} "
          f"synapses, {len(circuit.gap_junctions)} gap junctions -> {args.output}")
    return EXIT_OK


def cmd_crosscheck(args) -> int:
    from neurosim.io.yaml import load_circuit
    from neurosim.neuroml import crosscheck

    check = crosscheck(load_circuit(args.circuit), args.protocol, dt=args.dt,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(check.lines()))
    return EXIT_OK


def cmd_warmup(args) -> int:
    from neurosim.warmup import default_jobs, warmup

    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise CircuitError(f"--jobs must be at least 1, got {jobs}")

    started = time.perf_counter()

    def report(what, seconds, compiling):
        done = f"compiled in {compiling:.1f} s" if compiling else "already compiled"
        print(f"{what:<32} {done}", flush=True)

    compiled = sum(compiling for _, _, compiling in warmup(report, jobs=jobs))
    print(f"every kernel ready in {time.perf_counter() - started:.1f} s "
          f"({compiled:.1f} s compiling in {jobs} process{'es' if jobs > 1 else ''})")
    return EXIT_OK


def _add_cluster_options(parser, what: str) -> None:
    """--workers N | --scheduler ADDRESS: where ``what`` run (default: this process)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help=f"run {what} on a local Dask cluster of N worker processes "
                            "(default: in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help=f"run {what} on the cluster of a running Dask scheduler, e.g. "
                            "tcp://host:8786")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurosim", description="Simulate circuits of nonspiking conductance-based neurons.")
    parser.add_argument("--version", action="version", version=f"neurosim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="simulate a protocol and record to HDF5",
                         description="Simulate one protocol (or all) and stream traces to HDF5.")
    run.add_argument("circuit", help="circuit YAML file")
    which = run.add_mutually_exclusive_group()
    which.add_argument("--protocol", "-p", help="protocol name")
    which.add_argument("--all", action="store_true",
                       help="run every protocol; OUT gets the protocol name appended")
    run.add_argument("--integrator", "-i", default="dopri5", choices=list(METHODS))
    run.add_argument("--dt", type=float, help="step (fixed-step) or first step (adaptive), ms")
    run.add_argument("--rtol", type=float, help="relative tolerance (adaptive)")
    run.add_argument("--atol", type=float, help="absolute tolerance in mV (adaptive)")
    run.add_argument("--dt-out", type=float, help="output sampling interval, ms")
    run.add_argument("--record", help="comma-separated neurons to record (default: all)")
    run.add_argument("--float32", action="store_true", help="store V as float32")
    run.add_argument("--plot", metavar="PNG", help="also save the traces as a picture")
    run.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    run.add_argument("--no-space-check", action="store_true",
                     help="run even if the output, uncompressed, exceeds the free disk space")
    run.add_argument("-o", "--output", required=True, metavar="OUT.h5")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a circuit file and summarise it")
    validate.add_argument("circuit")
    validate.set_defaults(func=cmd_validate)

    info = sub.add_parser("info", help="describe a result, batch or sweep file")
    info.add_argument("result")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=cmd_info)

    plot = sub.add_parser("plot", help="plot the traces of a result file")
    plot.add_argument("result")
    plot.add_argument("--neurons", help="comma-separated subset, in panel order")
    plot.add_argument("-o", "--output", required=True, metavar="PNG")
    plot.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    plot.set_defaults(func=cmd_plot)

    graph = sub.add_parser("graph", help="draw a circuit's connectivity")
    graph.add_argument("circuit")
    graph.add_argument("-o", "--output", required=True, metavar="PNG")
    graph.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    graph.set_defaults(func=cmd_graph)
    sw = sub.add_parser("sweep", help="run a parameter sweep into one HDF5 file",
                        description="Run every parameter set of a sweep specification under "
                                    "its protocols, in this process or on a Dask cluster, "
                                    "streaming chunks into one resumable HDF5 file.")
    sw.add_argument("circuit")
    sw.add_argument("spec", help="the sweep specification (YAML)")
    sw.add_argument("-o", "--output", required=True, metavar="H5")
    _add_cluster_options(sw, "the chunks")
    sw.add_argument("--resume", action="store_true",
                    help="continue a stopped sweep, skipping its finished chunks")
    sw.add_argument("--overwrite", action="store_true", help="replace an existing output")
    sw.set_defaults(func=cmd_sweep)
    conn = sub.add_parser(
        "connectome", help="build a circuit from the C. elegans connectome",
        description="Build a circuit of chosen neurons from a connectome table (weights "
                    "from counts, signs from transmitters) and write it as YAML.")
    conn.add_argument("source", help="cook2019, varshney2011, or a CSV "
                                     "(pre,post,count,kind,neurotransmitter)")
    conn.add_argument("-o", "--output", required=True, metavar="YAML")
    conn.add_argument("--neurons", default="all",
                      help="'all', a named set (tap_withdrawal), or comma-separated neurons "
                           "and classes (default: all)")
    conn.add_argument("--merge-classes", action="store_true",
                      help="one node per class (AVAL, AVAR -> AVA), counts summed")
    conn.add_argument("--chemical-weight", type=float, default=None, metavar="NS",
                      help="nS per count of a chemical synapse (default: the table's)")
    conn.add_argument("--gap-weight", type=float, default=None, metavar="NS",
                      help="nS per count of a gap junction (default: the table's)")
    conn.add_argument("--glutamate", type=float, default=0.0, metavar="MV",
                      help="reversal potential of glutamatergic synapses (default 0 mV)")
    conn.add_argument("--unknown", default="drop", metavar="MV|drop",
                      help="reversal potential of synapses from neurons with a monoamine or "
                           "no known transmitter, or 'drop' (default)")
    conn.add_argument("--reversal", nargs="+", metavar="NAME=MV",
                      help="reversal potential of a neuron's or class's synapses")
    conn.add_argument("--autapses", action="store_true", help="keep chemical autapses")
    conn.add_argument("--name", help="the circuit's name")
    conn.add_argument("--overwrite", action="store_true", help="replace an existing YAML")
    conn.set_defaults(func=cmd_connectome)
    behave = sub.add_parser("behave", help="run protocols and read out the behaviour",
                            description="Run every protocol (or some) and classify the "
                                        "behaviour with the circuit's read-out.")
    behave.add_argument("circuit")
    behave.add_argument("--protocols", help="comma-separated subset (default: all)")
    behave.add_argument("--readout", default="behaviour", help="read-out name in the circuit")
    behave.add_argument("--integrator", "-i", default="dopri5", choices=list(METHODS))
    behave.add_argument("--dt-out", type=float, default=1.0, help="output sampling, ms")
    behave.add_argument("-o", "--output", metavar="CSV", help="write the table as CSV")
    behave.add_argument("--plot", metavar="PNG", help="traces and a bar chart of the scores")
    behave.add_argument("--facts", metavar="FACTS.yaml",
                        help="what biology expects (e.g. circuits/data/tap_withdrawal_facts.yaml): "
                             "adds expected and match columns and counts the facts reproduced")
    behave.add_argument("--overwrite", action="store_true",
                        help="replace an existing CSV or figure")
    behave.set_defaults(func=cmd_behave)

    fitp = sub.add_parser("fit", help="fit circuit parameters to behavioural and trace data",
                          description="Fit the free parameters of a circuit to behavioural "
                                      "and trace data (their negative log-likelihoods add); "
                                      "writes the fitted circuit, a report figure, predictions "
                                      "and HDF5 traces, and says what the data determine.")
    fitp.add_argument("circuit")
    fitp.add_argument("data", nargs="+",
                      help="data files: behavioural CSV (protocol, measure, observed, n, se), "
                           "trace CSV (protocol, neuron, time, value[, sigma]), imaging CSV "
                           "(protocol, neuron, time, dff[, sigma]; the indicator in the fit "
                           "file) or a result file (.h5) whose traces are the data; their "
                           "likelihoods add up")
    fitp.add_argument("--sigma", type=float, metavar="SD",
                      help="noise of trace (mV) or imaging (ΔF/F) samples where the data do "
                           "not give it")
    fitp.add_argument("--fit", metavar="FIT.yaml",
                      help="fit specification (default: all synaptic weights and gap "
                           "conductances in 0..3 nS, CMA-ES then L-BFGS-B)")
    fitp.add_argument("--starts", type=int, metavar="K",
                      help="after the fit, refit from K starting points (the first the "
                           "circuit's own) and report how far equally good fits lie apart")
    fitp.add_argument("--profile", action="append", metavar="PARAMETER",
                      help="profile likelihood of a free parameter, e.g. "
                           "'synapses[AVD->AVA].w' (repeatable): figure and 95 %% interval")
    _add_cluster_options(fitp, "sign patterns and --starts")
    fitp.add_argument("--overwrite", action="store_true")
    fitp.add_argument("--resume", action="store_true",
                      help="start from the checkpoint an interrupted fit left (OUT_checkpoint.json)")
    fitp.add_argument("-o", "--output", required=True, metavar="FITTED.yaml")
    fitp.set_defaults(func=cmd_fit)

    explain = sub.add_parser("explain", help="decompose a neuron's currents in a result file")
    explain.add_argument("result")
    explain.add_argument("--neuron", required=True)
    explain.add_argument("--source", help="also rank the pathways from this neuron that carried "
                                          "the evoked response")
    explain.add_argument("--control", metavar="PROTOCOL",
                         help="measure evoked currents against this protocol (default: the "
                              "stimulus-free rest of the run's own protocol)")
    explain.add_argument("-o", "--output", metavar="PNG", help="stacked-current figure")
    explain.add_argument("--graph", metavar="PNG", help="graph with the dominant pathway")
    explain.add_argument("--overwrite", action="store_true", help="replace existing figures")
    explain.set_defaults(func=cmd_explain)

    motifs = sub.add_parser("motifs", help="count motif instances in a circuit")
    motifs.add_argument("circuit")
    motifs.set_defaults(func=cmd_motifs)

    exp = sub.add_parser("export", help="write a circuit as NeuroML 2 and LEMS files",
                         description="Write a circuit under one protocol as a NeuroML 2 network, "
                                     "a LEMS file of neurosim's component types and a LEMS "
                                     "simulation that jNeuroML runs.")
    exp.add_argument("circuit")
    exp.add_argument("--neuroml", required=True, metavar="OUT_DIR",
                     help="folder for the files (made if missing)")
    exp.add_argument("--protocol", "-p", help="protocol name (needed if there are several)")
    exp.add_argument("--dt", type=float, default=0.01, help="step of the LEMS simulation, ms "
                                                             "(default 0.01)")
    exp.add_argument("--overwrite", action="store_true", help="replace existing files")
    exp.set_defaults(func=cmd_export)
    imp = sub.add_parser("import-neuroml", help="read a NeuroML 2 network written by export",
                         description="Read a NeuroML 2 network of neurosim's component types "
                                     "(as neurosim export writes them) into a circuit YAML.")
    imp.add_argument("network", metavar="NETWORK.nml")
    imp.add_argument("-o", "--output", required=True, metavar="OUT.yaml")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing OUT.yaml")
    imp.set_defaults(func=cmd_import_neuroml)
    cross = sub.add_parser("crosscheck", help="compare neurosim with jNeuroML on a protocol",
                           description="Run a protocol in jNeuroML (through pyNeuroML, at steps "
                                       "dt and dt/2) and in neurosim, and print the largest "
                                       "difference per neuron and its ratio (2 for jNeuroML's "
                                       "first-order method).")
    cross.add_argument("circuit")
    cross.add_argument("--protocol", "-p", help="protocol name (needed if there are several)")
    cross.add_argument("--dt", type=float, default=0.01,
                       help="jNeuroML's larger step, ms (default 0.01)")
    cross.set_defaults(func=cmd_crosscheck)

    warm = sub.add_parser("warmup", help="compile every simulation kernel now (first use only)",
                          description="Compile the kernels of every feature (single runs, "
                                      "batches, gradients) into the disk cache, so that no "
                                      "later command or API call waits for compilation.")
    warm.add_argument("-j", "--jobs", type=int, default=None,
                      help="processes compiling at once (default: one per processor)")
    warm.set_defaults(func=cmd_warmup)
    for command in sub.choices.values():  # --debug before or after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks on errors")
    return parser


#: Python names in the API's messages, and the flags a command-line user types instead
FLAG_NAMES = ((re.compile(r"overwrite=True \(--overwrite\)"), "--overwrite"),
              (re.compile(r"resume=True \(--resume\)"), "--resume"),
              (re.compile(r"check_space=False \(--no-space-check\)"), "--no-space-check"),
              (re.compile(r"(?<![.\w])dt_out\b"), "--dt-out"),  # not simulation.dt_out
              (re.compile(r"integrator='(\w+)'"), r"-i \1"),
              (re.compile(r"(?<![-\w`/])dt\b"), "--dt"),
              (re.compile(r"\brecord= ?"), "--record "),
              (re.compile(r"\bautapses=True"), "--autapses"),
              (re.compile(r"\b(chemical|gap)_weight\b"), r"--\1-weight"),
              (re.compile(r"^(glutamate|unknown|workers) must"), r"--\1 must"),
              (re.compile(r"reversal=\{'([^']*)': \.\.\.\}"), r"--reversal \1=MV"),
              (re.compile(r"\(in reversal=\)"), "(in --reversal)"),
              (re.compile(r"`(rtol|atol|dt)`"), r"--\1"))


def _in_flags(message: str) -> str:
    """An API error as the command line says it: flags, not Python names."""
    for pattern, flag in FLAG_NAMES:
        message = pattern.sub(flag, message)
    return message


def _json_safe(value):
    """``value`` with non-finite floats as strings ("inf", "-inf", "nan"): JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None):
    print(f"neurosim: warning: {_in_flags(' '.join(str(message).split()))}", file=sys.stderr)


class _StderrLines(logging.Handler):
    """The ``neurosim`` logger's records as lines on the stderr of the moment."""

    def emit(self, record):
        print(f"neurosim: {record.getMessage()}", file=sys.stderr, flush=True)


def _show_compilation() -> None:
    """Kernel compilations (first use only) are announced on stderr, before and after."""
    logger = logging.getLogger("neurosim")
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, _StderrLines) for handler in logger.handlers):
        logger.addHandler(_StderrLines())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for provenance
    if args.command is None:  # `neurosim` alone: what it can do
        parser.print_help()
        return EXIT_USAGE
    warnings.showwarning = _warn_in_one_line
    _show_compilation()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"neurosim: interrupted{detail}; files written so far are kept and marked "
              "incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NeurosimError as exc:
        if args.debug:
            traceback.print_exc()  # and the exit status stays what it says
        print(f"neurosim: error: {_in_flags(' '.join(str(exc).split()))}", file=sys.stderr)
        if isinstance(exc, SimulationError):
            return EXIT_RUN_FAILED
        return EXIT_IO if isinstance(exc, StorageError) else EXIT_USAGE
    except BrokenPipeError:  # `neurosim info run.h5 | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
