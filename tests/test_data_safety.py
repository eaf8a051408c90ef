"""Result files at the edges: two writers, device files, full disks, failures and
interrupts that keep every sample, thousands of recorded neurons, runs too big to fit.

Disk-full tests use a real size-limited tmpfs where this machine lets the tests mount one
(root on Linux), and a fault-injecting ``os.pwrite`` everywhere."""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.errors import ResourceError, ResultFileError, StorageError
from neurosim.io import hdf5
from helpers import EXAMPLE, LONG, start, wait_for

# V = 10 pA · t / 1 pF: a potential that grows by 10 mV/ms and leaves the default bound of
# 10⁴ mV at t = 1000 ms; every method integrates it exactly
RUNAWAY = ns.Circuit("runaway", (ns.Neuron("A", C=1.0, g_L=0.0, E_L=0.0, V0=0.0),),
                     stimuli={"push": ns.Stimulus("step", "A", amplitude=10.0)},
                     protocols={"p": ns.Protocol(2000.0, ("push",))})


def one_neuron(duration=100.0):
    return ns.Circuit("one", (ns.Neuron("A", C=1.0, g_L=1.0, E_L=-70.0),),
                      stimuli={"drive": ns.Stimulus("step", "A", amplitude=10.0, start=1.0)},
                      protocols={"p": ns.Protocol(duration, ("drive",))})


# ---------------------------------------------------------------- one writer per output

def test_a_second_writer_is_refused_and_touches_nothing(tmp_path):
    c = one_neuron()
    first = ns.HDF5Recorder(tmp_path / "out.h5")
    first.open(ns.record.RunHeader(("A",), 3, 1.0, {}, c))
    first.append(np.array([0.0, 1.0]), np.array([[1.0], [2.0]]))
    # (the first's file is still being created on its writer thread: its size may change;
    # what the second must not do is replace it, or cut or write it, which the rows read
    # back below would show)
    inode = os.stat(tmp_path / "out.h5.partial").st_ino
    for overwrite in (False, True):
        second = ns.HDF5Recorder(tmp_path / "out.h5", overwrite=overwrite)
        with pytest.raises(ResultFileError, match="being written by another run"):
            second.open(ns.record.RunHeader(("A",), 3, 1.0, {}, c))
    assert os.stat(tmp_path / "out.h5.partial").st_ino == inode
    first.append(np.array([2.0]), np.array([[3.0]]))
    result = first.close("complete", "completed", {})
    assert result.complete
    back = ns.load_result(tmp_path / "out.h5")
    np.testing.assert_array_equal(back.V[:, 0], [1.0, 2.0, 3.0])
    assert not (tmp_path / "out.h5.partial").exists()


@pytest.mark.slow
def test_two_processes_writing_one_output(tmp_path):
    """The first run goes on and its file stays whole, whatever HDF5's own locking is."""
    (tmp_path / "long.yaml").write_text(LONG)
    args = ["run", "long.yaml", "-i", "euler", "--dt", "0.01", "--dt-out", "1.0", "-o", "out.h5"]
    first = start(args, tmp_path)
    wait_for(tmp_path / "out.h5.partial")
    time.sleep(1.0)
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE")
    for extra in ([], ["--overwrite"]):
        second = subprocess.run([sys.executable, "-m", "neurosim.cli", *args, *extra],
                                cwd=tmp_path, capture_output=True, text=True, env=env)
        assert second.returncode == 2, second.stderr
        assert "being written by another run" in second.stderr
        assert "Traceback" not in second.stderr
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    result = ns.load_result(tmp_path / "out.h5")
    assert result.status == "interrupted" and result.t.size > 10
    np.testing.assert_array_equal(result.t, np.arange(result.t.size) * 1.0)


def test_a_file_that_cannot_be_created_stops_the_run_at_once(tmp_path, monkeypatch):
    """The file is created on the writer thread while the first calls compute: where that
    fails, the run stops within its first calls, says why in one line, and leaves
    nothing behind (no partial, no lock: the same output can be written next)."""
    c = one_neuron(2000.0)
    real = h5py.File

    def unwritable(name, mode="r", **options):
        if mode == "w":
            raise OSError(errno.EIO, "Input/output error")
        return real(name, mode, **options)

    monkeypatch.setattr(h5py, "File", unwritable)
    advanced = []
    with pytest.raises(StorageError) as info:
        ns.simulate(c, "p", dt_out=0.01, progress=advanced.append,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    assert re.fullmatch(r"cannot write \S*r\.h5: Input/output error", str(info.value))
    # however late the writer thread gets to fail (a loaded machine): the calls queued
    # for it are bounded, and the run stops at the first append after the failure
    assert len(advanced) <= hdf5.BackgroundWriter.DEPTH + 2 and sum(advanced) < 2000.0
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(h5py, "File", real)
    assert ns.simulate(c, "p", dt_out=1.0, recorder=ns.HDF5Recorder(tmp_path / "r.h5")).complete


def exit_code_of_forked(child, timeout=120.0) -> int:
    """Fork; the child runs ``child()`` and exits 0 if it returns True; the test fails if
    the child is still running after ``timeout`` seconds (then it is killed)."""
    with warnings.catch_warnings():  # fork in a process with threads: what is tested
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if child() else 1)
        except BaseException:  # noqa: BLE001 - any failure is the test's failure
            os._exit(1)
    deadline = time.monotonic() + timeout
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if ended[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("a forked child waited for a writer thread it does not have")
    return os.waitstatus_to_exitcode(ended[1])


def test_runs_recorded_at_once_from_threads_and_forked_children(tmp_path):
    """Writers run on pooled threads: runs recording at the same time get one each, and a
    child forked while pooled threads wait (which the child does not have), or while one
    of them holds the pool's lock, records too."""
    c = one_neuron(2000.0)
    memory = ns.simulate(c, "p", dt_out=0.1)
    failures = []

    def record(k):
        try:
            ns.simulate(c, "p", dt_out=0.1, recorder=ns.HDF5Recorder(tmp_path / f"t{k}.h5"))
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            failures.append(f"{type(exc).__name__}: {exc}")
    threads = [threading.Thread(target=record, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    for k in range(3):
        np.testing.assert_array_equal(ns.load_result(tmp_path / f"t{k}.h5").V, memory.V)

    def child(name):
        return lambda: ns.simulate(c, "p", dt_out=0.1,
                                   recorder=ns.HDF5Recorder(tmp_path / name)).complete
    assert exit_code_of_forked(child("c.h5")) == 0
    np.testing.assert_array_equal(ns.load_result(tmp_path / "c.h5").V, memory.V)
    held, release = threading.Event(), threading.Event()

    def hold_the_pool():  # as a writer thread giving itself back at the moment of the fork
        with hdf5._PooledThread._idle_lock:
            held.set()
            release.wait(10)
    holder = threading.Thread(target=hold_the_pool)
    holder.start()
    held.wait(10)
    try:
        assert exit_code_of_forked(child("d.h5")) == 0
    finally:
        release.set()
        holder.join()
    np.testing.assert_array_equal(ns.load_result(tmp_path / "d.h5").V, memory.V)


UNCLOSED = """
import sys
import numpy as np
import neurosim as ns
from neurosim.record import RunHeader
recorder = ns.HDF5Recorder(sys.argv[1])
recorder.open(RunHeader(("A",), 100, 1.0, {}, None))
recorder.append(np.arange(3.0), np.ones((3, 1)))
if sys.argv[2] == "raise":
    raise RuntimeError("the script fails between open and close")
"""


@pytest.mark.parametrize("ending", ["ends", "raise"])
def test_a_recorder_never_closed_lets_the_interpreter_exit(tmp_path, ending):
    """A script that ends (or fails) between a recorder's open and close: the interpreter
    once hung or crashed at exit when the writer thread was still creating the file (a
    pooled thread frozen inside HDF5 kept its lock).  Now the exit waits for the writer,
    and the file is what a killed run leaves: a readable partial with the rows given."""
    for k in range(3):  # the race was lost about two times in three
        out = tmp_path / f"r{k}.h5"
        done = subprocess.run([sys.executable, "-c", UNCLOSED, str(out), ending],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == (0 if ending == "ends" else 1), done.stderr
        assert done.stderr.count("Traceback") == (0 if ending == "ends" else 1), done.stderr
        with h5py.File(out.with_name(out.name + ".partial"), "r") as f:
            assert f.attrs["status"] == "running" and f["V"].shape[1] == 1


def test_two_runs_racing_for_one_new_output_leave_one_file(tmp_path):
    """Both runs were once refused in about one race in twelve: the second locked the
    first's new partial before the first did, and took it for a killed run's.  The
    partial is now created locked: one run writes the file, the other is refused (being
    written, or it exists), and no partial is left."""
    c = one_neuron(5.0)
    for trial in range(60):
        out, outcomes = tmp_path / f"r{trial}.h5", []

        def run():
            try:
                outcomes.append(ns.simulate(c, "p", recorder=ns.HDF5Recorder(out)).status)
            except ResultFileError as exc:
                outcomes.append(str(exc))
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert outcomes.count("complete") == 1, outcomes
        refusal = next(text for text in outcomes if text != "complete")
        assert "being written by another run" in refusal or "exists" in refusal
        assert ns.load_result(out).complete and not out.with_name(out.name + ".partial").exists()
    # and no file the claims were made under
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"r{k}.h5" for k in range(60))


def test_an_output_finished_by_another_run_since_the_check_is_not_written(tmp_path):
    c = one_neuron()
    recorder = ns.HDF5Recorder(tmp_path / "r.h5")  # checked here: no such file yet
    ns.simulate(c, "p", recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    first = (tmp_path / "r.h5").read_bytes()
    with pytest.raises(ResultFileError, match=r"r\.h5 exists; pass overwrite=True"):
        ns.simulate(c, "p", recorder=recorder)
    assert (tmp_path / "r.h5").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_a_header_that_cannot_be_written_leaves_nothing(tmp_path, monkeypatch):
    """The file is created but its header fails (an attribute write, on the writer
    thread): the run stops as if the file could not be created; no failed, headerless
    file under the output's name."""
    real = h5py.AttributeManager.__setitem__

    def failing(self, name, value):
        if name == "integrator":
            raise OSError(errno.EIO, "Input/output error")
        return real(self, name, value)

    monkeypatch.setattr(h5py.AttributeManager, "__setitem__", failing)
    with pytest.raises(StorageError, match=r"^cannot write \S*r\.h5: Input/output error$"):
        ns.simulate(one_neuron(2000.0), "p", dt_out=0.01,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    assert list(tmp_path.iterdir()) == []


def test_a_recorder_writes_one_run(tmp_path):
    """A recorder given to a second run once returned the first run's result and left a
    locked partial; rows appended after close once blocked for good."""
    c = one_neuron()
    recorder = ns.HDF5Recorder(tmp_path / "r.h5")
    first = ns.simulate(c, "p", recorder=recorder)
    with pytest.raises(ResultFileError, match="a recorder writes one run: make a new one"):
        ns.simulate(c, "p", recorder=recorder)
    with pytest.raises(ResultFileError, match=r"r\.h5 is closed"):
        recorder.append(np.zeros(1), np.zeros((1, 1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    np.testing.assert_array_equal(ns.load_result(tmp_path / "r.h5").V, first.V)


def test_recorder_options_are_checked_before_anything_runs(tmp_path):
    """A filter name that is not one was once reported after the first call, as a failure
    to write the file."""
    for options, match in (({"compression": "bogus"}, "compression must be one of gzip, lzf "
                                                       "or None, got 'bogus'"),
                           ({"compression": False}, "got False"),
                           ({"dtype": "int8"}, "dtype must be float64 or float32")):
        with pytest.raises(ResultFileError, match=match):
            ns.HDF5Recorder(tmp_path / "r.h5", **options)
    assert list(tmp_path.iterdir()) == []
    lzf = ns.simulate(one_neuron(), "p", recorder=ns.HDF5Recorder(tmp_path / "r.h5",
                                                                  compression="lzf"))
    np.testing.assert_array_equal(ns.load_result(tmp_path / "r.h5").V, lzf.V)
    np.testing.assert_array_equal(lzf.V, ns.simulate(one_neuron(), "p").V)


@pytest.mark.parametrize("kind", ["run", "batch"])
def test_ctrl_c_while_the_recorder_opens_leaves_a_named_file(tmp_path, monkeypatch, kind):
    """Ctrl-C while the recorder takes its lock and starts its writer thread once left an
    empty partial, unlocked and unnamed, which every later run refused: now it is held
    until the recorder is open, and the run or batch stops before its first call with
    its file finished and named."""
    owner = ns.HDF5Recorder if kind == "run" else ns.HDF5BatchRecorder
    real = owner.open

    def ctrl_c_inside(self, header):
        signal.raise_signal(signal.SIGINT)
        return real(self, header)

    monkeypatch.setattr(owner, "open", ctrl_c_inside)
    c = one_neuron()
    with pytest.raises(KeyboardInterrupt):
        if kind == "run":
            ns.simulate(c, "p", recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
        else:
            ns.simulate_batch(c, None, "p", recorder=ns.HDF5BatchRecorder(tmp_path / "r.h5"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f.attrs["status"] == "interrupted"


def test_a_partial_left_by_a_killed_run_is_replaced_only_when_asked(tmp_path):
    (tmp_path / "r.h5.partial").write_bytes(b"what a killed run left")
    c = one_neuron()
    with pytest.raises(ResultFileError, match="left by an earlier run that did not finish it.*--overwrite"):
        ns.simulate(c, "p", recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    assert (tmp_path / "r.h5.partial").read_bytes() == b"what a killed run left"
    result = ns.simulate(c, "p", recorder=ns.HDF5Recorder(tmp_path / "r.h5", overwrite=True))
    assert result.complete and not (tmp_path / "r.h5.partial").exists()


def test_a_file_that_appears_during_the_run_is_not_replaced(tmp_path):
    c = one_neuron()

    class Intruder(ns.HDF5Recorder):
        def append(self, t, V):
            super().append(t, V)
            if not self.path.exists():
                self.path.write_text("someone else's result")

    with pytest.raises(StorageError, match=r"appeared while the run went.*r\.h5\.partial") as info:
        ns.simulate(c, "p", recorder=Intruder(tmp_path / "r.h5"))
    assert (tmp_path / "r.h5").read_text() == "someone else's result"
    kept = ns.load_result(tmp_path / "r.h5.partial")
    assert kept.complete and kept.t.size == info.value.result.t.size == 1001


# ---------------------------------------------------------------- only regular files

@pytest.mark.parametrize("kind", ["device", "fifo", "link to device"])
def test_non_regular_outputs_are_refused_even_with_overwrite(tmp_path, kind):
    target = tmp_path / "out.h5"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target = Path(os.devnull)
    else:
        target.symlink_to(os.devnull)
    with pytest.raises(ResultFileError, match="not a regular file"):
        ns.HDF5Recorder(target, overwrite=True)
    assert Path(os.devnull).is_char_device()


def test_a_symlink_is_written_through(tmp_path):
    c = one_neuron()
    ns.simulate(c, "p", dt_out=1.0, recorder=ns.HDF5Recorder(tmp_path / "real.h5"))
    (tmp_path / "link.h5").symlink_to("real.h5")
    ns.simulate(c, "p", dt_out=10.0,
                recorder=ns.HDF5Recorder(tmp_path / "link.h5", overwrite=True))
    assert (tmp_path / "link.h5").is_symlink()
    assert ns.load_result(tmp_path / "real.h5").t.size == 11


# ---------------------------------------------------------------- full disks

def failing_pwrite(allowed_bytes):
    """An os.pwrite that accepts ``allowed_bytes`` in all (in short writes), then fails
    as a full disk does."""
    real = os.pwrite
    left = [allowed_bytes]

    def pwrite(fd, data, offset):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = memoryview(data).cast("B")[:max(1, min(left[0], len(data) // 2 or 1))]
        written = real(fd, view, offset)
        left[0] -= written
        return written
    return pwrite


def test_short_writes_are_continued_and_never_counted_whole(tmp_path, monkeypatch):
    """Every write returns short (half of what it was given): the rows are still right."""
    c = one_neuron(2000.0)
    monkeypatch.setattr(hdf5.os, "pwrite", failing_pwrite(10**12))
    streamed = ns.simulate(c, "p", dt_out=0.01, recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    memory = ns.simulate(c, "p", dt_out=0.01)
    np.testing.assert_array_equal(ns.load_result(tmp_path / "r.h5").V, memory.V)
    assert streamed.t.size == 200001


def test_a_disk_that_fills_keeps_every_whole_row(tmp_path, monkeypatch):
    """The disk fills in the middle of a chunk: the rows before it are kept, exactly,
    and none of the rows the failing write did not finish is counted."""
    c = one_neuron(2000.0)
    chunk = hdf5.CHUNK_VALUES  # rows per chunk for one recorded neuron
    monkeypatch.setattr(hdf5.os, "pwrite", failing_pwrite(2 * 8 * chunk + 8 * 1000))
    with pytest.raises(StorageError, match=r"No space left on device.*the \d+ samples written "
                                           r"before are in .*r\.h5") as info:
        ns.simulate(c, "p", dt_out=0.01, recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    kept = ns.load_result(tmp_path / "r.h5")
    assert kept.status == "failed" and not kept.metadata["complete"]
    assert "recording stopped after" in kept.message
    assert kept.t.size == chunk == info.value.result.t.size  # the second chunk never finished
    memory = ns.simulate(c, "p", dt_out=0.01)
    np.testing.assert_array_equal(kept.V, memory.V[:chunk])
    np.testing.assert_array_equal(kept.t, memory.t[:chunk])


def test_the_command_line_reports_a_full_disk_as_an_io_failure(tmp_path, monkeypatch, capsys):
    from neurosim.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hdf5.os, "pwrite", failing_pwrite(0))
    code = main(["run", str(EXAMPLE), "-p", "baseline", "-o", "r.h5"])
    err = capsys.readouterr().err
    assert code == 74 and err.count("\n") == 1 and "No space left on device" in err


def test_a_real_full_disk(small_disk):
    c = one_neuron(20000.0)
    with pytest.raises(ResourceError, match=r"would take 33\.0 MB, but only [\d.]+ MB are free"
                                            r".*--no-space-check"):
        ns.simulate(c, "p", dt_out=0.01, recorder=ns.HDF5Recorder(small_disk / "a.h5"))
    assert list(small_disk.iterdir()) == []
    with pytest.raises(StorageError, match="No space left on device"):
        ns.simulate(c, "p", dt_out=0.01,
                    recorder=ns.HDF5Recorder(small_disk / "a.h5", check_space=False))
    kept = ns.load_result(small_disk / "a.h5")
    assert kept.status == "failed" and kept.t.size >= hdf5.CHUNK_VALUES
    memory = ns.simulate(c, "p", dt_out=0.01)
    np.testing.assert_array_equal(kept.V, memory.V[:kept.t.size])
    assert sorted(p.name for p in small_disk.iterdir()) == ["a.h5"]
    # a disk with no room left: a clear error and nothing left behind
    (small_disk / "a.h5").unlink()
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    with pytest.raises(StorageError, match="cannot write .*No space left on device"):
        ns.simulate(c, "p", dt_out=10.0,
                    recorder=ns.HDF5Recorder(small_disk / "b.h5", check_space=False))
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def sine_driven(n):
    """n neurons whose traces compress poorly (so that compressed files fill disks)."""
    return ns.Circuit("many", tuple(ns.Neuron(f"N{i}", C=1.0 + i, g_L=1.0, E_L=-70.0 + i)
                                    for i in range(n)),
                      stimuli={"drive": ns.Stimulus("sine", [f"N{i}" for i in range(n)],
                                                    amplitude=10.0, frequency=37.0)},
                      protocols={"p": ns.Protocol(10000.0, ("drive",))})


def test_a_compressed_run_on_a_filling_disk_keeps_its_rows(small_disk):
    """Compressed sizes are not known ahead, so nothing is refused up front; recording
    stops while there is still room for the chunks HDF5 holds and the metadata.  (A write
    failing inside HDF5 once left a file it could not close: nothing kept, and HDF5's
    tracebacks printed, which this test would turn into errors.)"""
    c = sine_driven(20)
    with pytest.raises(StorageError, match=r"No space left on device.*samples written before "
                                           r"are in \S*z\.h5$"):
        ns.simulate(c, "p", dt_out=0.05, recorder=ns.HDF5Recorder(small_disk / "z.h5",
                                                                  compression="gzip"))
    kept = ns.load_result(small_disk / "z.h5")
    rows = hdf5.CHUNK_VALUES // 20
    assert kept.status == "failed" and kept.t.size >= rows and kept.t.size % rows == 0
    memory = ns.simulate(c, "p", dt_out=0.05)
    np.testing.assert_array_equal(kept.V, memory.V[:kept.t.size])
    assert sorted(p.name for p in small_disk.iterdir()) == ["z.h5"]


# ---------------------------------------------------------------- failures and interrupts

@pytest.mark.parametrize("integrator", [
    ns.METHODS["dopri5"](max_step=1.0), ns.METHODS["rosenbrock23"](max_step=1.0),
    ns.METHODS["rk4"](dt=0.01), ns.METHODS["euler"](dt=0.01)], ids=lambda m: m.name)
def test_a_failed_run_keeps_every_sample_before_the_failure(tmp_path, integrator):
    """(Adaptive steps are bounded here: a step that jumps far past the bound has
    computed no sample inside it.)"""
    with pytest.raises(ns.SimulationError, match="beyond the bound") as info:
        ns.simulate(RUNAWAY, "p", integrator=integrator, dt_out=0.1,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    kept = ns.load_result(tmp_path / "r.h5")
    assert kept.status == "failed"
    # V = 10 t leaves the bound at t = 1000 ms: every row up to the last state that
    # passed the checks is kept, and right
    t_good, t_fail = map(float, re.search(r"in the step from t = ([\d.]+) to ([\d.]+) ms",
                                          kept.message).groups())
    assert 999.0 <= t_good < t_fail <= 1001.0 and t_fail >= 999.99
    assert t_good - 0.1 < kept.t[-1] <= t_good
    np.testing.assert_allclose(kept.V[:, 0], 10.0 * kept.t, rtol=1e-9, atol=1e-9)
    assert info.value.result.t.size == kept.t.size


def test_a_failed_run_keeps_the_same_rows_however_it_is_cut(tmp_path, monkeypatch):
    """One step of dopri5 jumps from ~300 ms far past the crossing of the bound (336 ms):
    the rows kept end at the last accepted state, in memory and on disk, whether the
    kernel calls hold one row or thousands."""
    c = ns.Circuit("runaway", (ns.Neuron("A", C=1.0, g_L=0.0, E_L=0.0, V0=-70.0),),
                   stimuli={"push": ns.Stimulus("step", "A", amplitude=30.0, start=0.7)},
                   protocols={"p": ns.Protocol(1000.0, ("push",))})
    simulate_module = sys.modules["neurosim.simulate"]  # the module, not the function
    kept = []
    for call_seconds in (0.2, 1e-9):  # calls as large as they grow, and one row each
        monkeypatch.setattr(simulate_module, "CALL_SECONDS", call_seconds)
        for recorder in (None, ns.HDF5Recorder(tmp_path / f"r{call_seconds}.h5")):
            result = ns.simulate(c, "p", dt_out=0.5, recorder=recorder, raise_on_failure=False)
            assert result.status == "failed"
            kept.append((result.t, result.V))
    for t, V in kept[1:]:
        np.testing.assert_array_equal(t, kept[0][0])
        np.testing.assert_array_equal(V, kept[0][1])
    t, V = kept[0]
    assert np.all(np.abs(V) <= 1e4) and t[-1] < 336.4
    np.testing.assert_allclose(V[t >= 0.7, 0], -70.0 + 30.0 * (t[t >= 0.7] - 0.7), atol=1e-6)


def test_an_interrupt_keeps_the_rows_of_the_call_in_flight(tmp_path):
    c = one_neuron(20000.0)
    calls = []

    def interrupt_at_the_third_call(advanced_ms):
        calls.append(advanced_ms)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        ns.simulate(c, "p", dt_out=0.01, progress=interrupt_at_the_third_call,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    kept = ns.load_result(tmp_path / "r.h5")
    assert kept.status == "interrupted"
    # the rows of all three calls are in, and the message names the time reached
    assert kept.t.size == 1 + round(sum(calls) / 0.01)
    assert kept.message == f"interrupted at t = {kept.t[-1]:g} ms (SIGINT)"
    memory = ns.simulate(c, "p", dt_out=0.01)
    np.testing.assert_array_equal(kept.V, memory.V[:kept.t.size])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_in_the_last_call_leaves_a_complete_run(tmp_path):
    c = one_neuron(100.0)
    done = []

    def interrupt_at_the_end(advanced_ms):
        done.append(advanced_ms)
        if abs(sum(done) - 100.0) < 1e-9:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        ns.simulate(c, "p", dt_out=0.1, progress=interrupt_at_the_end,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    kept = ns.load_result(tmp_path / "r.h5")
    assert kept.complete and kept.t.size == 1001


def test_an_interrupt_is_answered_within_a_call(tmp_path):
    """Rows of ~0.3 s each: the run stops within about a row of the signal, where it
    used to finish a call of thousands of rows first."""
    c = ns.Circuit("slow", (ns.Neuron("A", C=1.0, g_L=1.0, E_L=-70.0, V0=-70.0),))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        ns.simulate(c, duration=1e6, integrator="euler", dt=1e-5, dt_out=100.0,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    assert time.perf_counter() - started < 8.0
    kept = ns.load_result(tmp_path / "r.h5")
    assert kept.status == "interrupted" and kept.t.size >= 2


def test_a_second_ctrl_c_while_closing_waits_for_the_file(tmp_path, monkeypatch):
    """Ctrl-C pressed again while the file is finished once left a locked partial marked
    "running": the file is finished and named first, then KeyboardInterrupt goes on."""
    real = hdf5.HDF5Recorder._finish

    def and_ctrl_c(self, *args):
        signal.raise_signal(signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(hdf5.HDF5Recorder, "_finish", and_ctrl_c)
    recorder = ns.HDF5Recorder(tmp_path / "r.h5")
    recorder.open(ns.record.RunHeader(("A",), 1000, 1.0, {}, one_neuron()))
    recorder.append(np.arange(10.0), np.ones((10, 1)))
    with pytest.raises(KeyboardInterrupt):
        recorder.close("interrupted", "interrupted at t = 9 ms (KeyboardInterrupt)", {})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]  # named, lock released
    kept = ns.load_result(tmp_path / "r.h5")
    assert kept.status == "interrupted" and kept.t.size == 10


def test_another_program_filling_the_disk_leaves_a_file_that_closes(small_disk):
    """The disk filled to the last byte by another process in the middle of a run: the
    run stops at its next chunk, and the file closes with every whole chunk before."""
    c = one_neuron(20000.0)
    calls = []

    def filled_at_the_third_call(advanced_ms):
        calls.append(advanced_ms)
        if len(calls) == 3:
            fill(small_disk / "filler")

    with pytest.raises(StorageError, match="No space left on device.*written before are in"):
        ns.simulate(c, "p", dt_out=0.05, progress=filled_at_the_third_call,
                    recorder=ns.HDF5Recorder(small_disk / "a.h5"))
    kept = ns.load_result(small_disk / "a.h5")
    assert kept.status == "failed" and kept.t.size >= hdf5.CHUNK_VALUES
    memory = ns.simulate(c, "p", dt_out=0.05)
    np.testing.assert_array_equal(kept.V, memory.V[:kept.t.size])


def test_another_program_filling_the_disk_under_a_compressed_run(small_disk):
    """A compressed chunk's blocks are taken before HDF5 compresses and writes it: a disk
    filled by another program meanwhile once made HDF5 fail inside, and the whole file
    was lost."""
    c = sine_driven(20)
    advanced = []

    def filled_after_a_second(advanced_ms):
        advanced.append(advanced_ms)
        if sum(advanced) > 1000.0 and sum(advanced) - advanced_ms <= 1000.0:
            fill(small_disk / "filler")

    with pytest.raises(StorageError, match="No space left on device.*written before are in"):
        ns.simulate(c, "p", dt_out=0.05, progress=filled_after_a_second,
                    recorder=ns.HDF5Recorder(small_disk / "z.h5", compression="gzip"))
    kept = ns.load_result(small_disk / "z.h5")
    rows = hdf5.CHUNK_VALUES // 20
    assert kept.status == "failed" and kept.t.size >= rows and kept.t.size % rows == 0
    np.testing.assert_array_equal(kept.V, ns.simulate(c, "p", dt_out=0.05).V[:kept.t.size])
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "z.h5"]


def fill(path):
    """Fill the disk ``path`` is on to the last byte, from another process."""
    subprocess.run([sys.executable, "-c", "import sys\nf = open(sys.argv[1], 'wb')\n"
                    "try:\n    while True:\n        f.write(b'x' * 4096)\n"
                    "        f.flush()\nexcept OSError:\n    pass", str(path)], check=True)


# ---------------------------------------------------------------- size

def test_thousands_of_recorded_neurons(tmp_path):
    n = 5000
    names = [f"N{k}" for k in range(n)]
    c = ns.Circuit("wide", tuple(ns.Neuron(name, C=1.0, g_L=1.0, E_L=-70.0 + k % 7, V0=-70.0)
                                 for k, name in enumerate(names)))
    ns.simulate(c, duration=2.0, integrator="exp_euler", dt=0.1, dt_out=1.0,
                recorder=ns.HDF5Recorder(tmp_path / "wide.h5"))
    back = ns.load_result(tmp_path / "wide.h5")
    assert back.neuron_names == tuple(names) and back.V.shape == (3, n)
    expected = -70.0 + np.arange(n) % 7 * (1 - np.exp(-2.0))  # exact for exp_euler
    np.testing.assert_allclose(back.v("N6")[-1], expected[6], rtol=1e-12)
    assert hdf5.result_summary(tmp_path / "wide.h5")["neurons"][-1] == "N4999"


def test_format_1_files_are_still_read(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["format"] = "neurosim-result"
        f.attrs["format_version"] = 1
        f.attrs["neuron_names"] = np.array(["A", "B"], dtype=h5py.string_dtype())
        f.attrs["status"] = "complete"
        f.attrs["complete"] = True
        f["time"] = np.arange(3.0)
        f["V"] = np.ones((3, 2))
    old = ns.load_result(tmp_path / "old.h5")
    assert old.neuron_names == ("A", "B") and old.V.shape == (3, 2)


def test_runs_too_big_for_memory_or_disk_are_refused_before_they_start(tmp_path):
    c = one_neuron(1e12)
    started = time.perf_counter()
    with pytest.raises(ResourceError, match=r"run's output \(1,000,000,000,001 samples x 1 "
                                            r"neurons\) would take 16\.0 TB of memory"):
        ns.simulate(c, "p", dt_out=1.0)
    with pytest.raises(ResourceError, match=r"would take .* but only .* are free in .*"
                                            r"--no-space-check"):
        ns.simulate(c, "p", dt_out=1.0, recorder=ns.HDF5Recorder(tmp_path / "big.h5"))
    assert time.perf_counter() - started < 5.0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target,match", [
    ("not_hdf5", "not an HDF5 file, or a damaged one"),
    ("no_V", "damaged or not a complete neurosim result"),
])
def test_damaged_result_files_get_one_line(tmp_path, target, match):
    path = tmp_path / "r.h5"
    if target == "not_hdf5":
        path.write_bytes(b"\x89HDF\r\n" + os.urandom(500))
    else:
        with h5py.File(path, "w") as f:
            f.attrs["format"] = "neurosim-result"
            f["time"] = np.arange(3.0)
    for read in (ns.load_result, hdf5.result_summary):
        with pytest.raises(ResultFileError, match=match):
            read(path)


@pytest.mark.parametrize("integrator", ["dopri5", "rosenbrock23"])
def test_a_time_constant_of_1e_200_ms_fails_in_one_line(integrator):
    """|dV/dt| ~ 1e201 mV/ms: its error norm overflows; the run stops with the step-size
    underflow and the stiffness, not a division by zero."""
    c = ns.Circuit("tiny", (ns.Neuron("A", C=1e-200, g_L=1.0, E_L=-70.0, V0=-50.0),))
    with pytest.raises(ns.SimulationError, match=r"step size underflow at t = 0 ms .*"
                                                 r"1e-200 ms, neuron 'A': stiff"):
        ns.simulate(c, duration=1.0, integrator=integrator)


def test_a_tiny_probability_scale_saturates_without_overflow():
    from neurosim.behaviour import classify
    from neurosim.fit.targets import BehaviourTarget
    from neurosim.model import Readout
    readout = Readout("REV", "FWD", window=(0.0, 10.0), probability_scale=1e-6)
    r = ns.Result(np.array([0.0, 10.0]), np.array([[-45.0, -70.0], [-45.0, -70.0]]),
                  ("REV", "FWD"))
    assert classify(readout, r).p_reversal == 1.0  # score 0.5 / 1e-6: e^-500000
    target = BehaviourTarget("p", "reversal_probability", 0.3, n=10)
    assert target.predicted(readout, -0.5) == 0.0
    loss, grad = target.loss_from_score(readout, -0.5)
    assert np.isfinite(loss) and loss > 1e5 and np.isfinite(grad)


# ---------------------------------------------------------------- names and identities

def test_protocol_names_never_lead_out_of_the_output_folder(tmp_path, monkeypatch, capsys):
    from neurosim.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    for name in ("../escaped", "/tmp/abs", "a/b", ".."):
        text = ("name: x\nneurons: [{name: A}]\nprotocols:\n"
                f"  ok: {{duration: 1}}\n  '{name}': {{duration: 1}}\n")
        (tmp_path / "c.yaml").write_text(text)
        for out in ("out/", "r.h5"):
            assert main(["run", "c.yaml", "--all", "-o", out]) == 2
            err = capsys.readouterr().err
            assert "cannot name an output file" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "out"]
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name,match", [("q.h5.partial", "names ending in .partial"),
                                        ("loop", "symbolic link that loops")])
def test_outputs_that_would_clash_are_refused_before_the_run(tmp_path, name, match):
    if name == "loop":
        (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(ResultFileError, match=match):
        ns.HDF5Recorder(tmp_path / name, overwrite=True)


def test_a_result_read_lazily_refuses_a_file_replaced_since(tmp_path):
    c = one_neuron()
    first = ns.simulate(c, "p", recorder=ns.HDF5Recorder(tmp_path / "x.h5"))
    ns.simulate(c, "p", v0={"A": 0.0}, recorder=ns.HDF5Recorder(tmp_path / "x.h5", overwrite=True))
    with pytest.raises(ResultFileError, match="replaced or rewritten after this result"):
        first.V
    lazy = ns.load_result(tmp_path / "x.h5", lazy=True)
    (tmp_path / "x.h5").unlink()
    with pytest.raises(ResultFileError, match="removed, replaced"):
        lazy.t


def test_info_on_an_output_still_being_written_says_so(tmp_path):
    """A partial a run holds is being written; one nobody holds was left by a killed run;
    an empty one (a run killed before it wrote anything) holds nothing to read."""
    c = one_neuron()
    writing = ns.HDF5Recorder(tmp_path / "r.h5")
    writing.open(ns.record.RunHeader(("A",), 3, 1.0, {}, c))
    with pytest.raises(ResultFileError, match=r"no such result file yet; .*r\.h5\.partial is "
                                              r"being written by a run"):
        hdf5.result_summary(tmp_path / "r.h5")
    writing.append(np.array([0.0, 1.0, 2.0]), np.ones((3, 1)))
    writing.close("complete", "completed", {})
    (tmp_path / "k.h5.partial").write_bytes(b"")
    with pytest.raises(ResultFileError, match=r"k\.h5: no such result file; .*k\.h5\.partial "
                                              r"was left by a run that was killed"):
        ns.load_result(tmp_path / "k.h5")
    for read in (ns.load_result, hdf5.result_summary):
        with pytest.raises(ResultFileError, match=r"k\.h5\.partial is empty: left by a run "
                                                  r"killed before it wrote anything"):
            read(tmp_path / "k.h5.partial")
    from neurosim.cli import main
    assert main(["info", str(tmp_path / "k.h5.partial")]) == 2


def test_a_small_output_fits_a_small_disk(small_disk):
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as f:  # leave 400 KB: less than the 1 MiB kept for big files
        f.write(b"\0" * (free - 400_000))
    c = one_neuron()
    result = ns.simulate(c, "p", dt_out=1.0, recorder=ns.HDF5Recorder(small_disk / "s.h5"))
    assert result.complete and ns.load_result(small_disk / "s.h5").t.size == 101


def test_a_read_only_place_is_named_as_such(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    try:
        with pytest.raises(ResultFileError, match="Read-only file system"):
            ns.simulate(one_neuron(), "p", recorder=ns.HDF5Recorder(mount / "x.h5"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("damage,match", [
    (lambda f: f.attrs.__setitem__("samples_written", -5), "samples_written is negative"),
    (lambda f: f.attrs.__setitem__("stats", "[1, 2]"), "stats is not a JSON mapping"),
    (lambda f: (f.__delitem__("V"), f.create_dataset("V", data=np.ones(3))), "not a 2-D dataset"),
    (lambda f: (f.__delitem__("V"), f.create_dataset("V", data=np.ones((3, 2)))),
     "2 columns for 1 neuron names"),
    (lambda f: (f.__delitem__("time"), f.create_group("time")), "/time is not a 1-D dataset"),
])
def test_foreign_result_files_are_refused_in_one_line(tmp_path, damage, match):
    ns.simulate(one_neuron(), "p", dt_out=10.0, recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    with h5py.File(tmp_path / "r.h5", "a") as f:
        if "V" in f and f["V"].dims[0]:  # a dimension scale keeps its dataset alive
            f["V"].dims[0].detach_scale(f["time"])
            f["V"].dims[1].detach_scale(f["neuron_names"])
        damage(f)
    for read in (ns.load_result, hdf5.result_summary):
        with pytest.raises(ResultFileError, match=match):
            read(tmp_path / "r.h5")


def test_sample_counts_beyond_what_a_run_can_count_are_refused(capsys, tmp_path, monkeypatch):
    from neurosim.cli import main
    monkeypatch.chdir(tmp_path)
    for options in (["--dt-out", "1e-320"], ["-i", "euler", "--dt", "1e-300", "--dt-out", "1"]):
        assert main(["run", str(EXAMPLE), "-p", "baseline", "-o", "r.h5", *options]) == 2
        err = capsys.readouterr().err
        assert "more than the 2^53 a run can count" in err and err.count("\n") == 1
    assert main(["run", str(EXAMPLE), "-p", "baseline", "-o", "r.h5", "--record", ""]) == 2
    assert "nothing would be recorded" in capsys.readouterr().err
