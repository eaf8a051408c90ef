"""Batches streamed to HDF5 (neurosim.io.batch_file): the file read back with h5py equals
the in-memory batch bit for bit; and the data-safety rules of result files hold for it
(an existing file, two writers, a full disk, a write error, an interrupt)."""

import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit
from neurosim.errors import ResourceError, ResultFileError, StorageError
from neurosim.io import batch_file
from helpers import TW, run_main

# the module, not the function neurosim.simulate that the package exports under its name
simulate_module = importlib.import_module("neurosim.simulate")

PROTOCOLS = ["tap", "tap_no_AVA"]
OPTIONS = dict(rtol=1e-6, atol=1e-6, dt_out=25.0)


@pytest.fixture(scope="module")
def tw_batch():
    """The TW circuit, 70 parameter sets (set 5 leaves v_bound) and their batch in memory."""
    circuit = ns.load_circuit(TW)
    compiled = compile_circuit(circuit)
    rng = np.random.default_rng(3)
    params = np.tile(compiled.theta, (70, 1))
    weights = compiled.layout.block("synapses.w")
    params[:, weights] *= rng.uniform(0.5, 1.5, (70, compiled.n_synapses))
    params[5, compiled.layout.block("synapses.E").start] = 5e5
    memory = ns.simulate_batch(circuit, params, PROTOCOLS, **OPTIONS)
    return circuit, params, memory


def recorder(path, sets_per_call=16, **options):
    """A recorder that cuts the batch into calls of ``sets_per_call`` sets (several
    calls and a partial last chunk on a small batch)."""
    rec = ns.HDF5BatchRecorder(path, **options)
    rec.sets_per_call = lambda *shape_and_unit: sets_per_call
    return rec


def test_the_file_holds_the_batch_bit_for_bit(tw_batch, tmp_path):
    circuit, params, memory = tw_batch
    assert memory.failed[0, 5] and memory.failed.sum() >= 1  # set 5 leaves v_bound
    out = ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5"),
                            **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5"]
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f["V"].shape == memory.V.shape and f["V"].chunks is None  # contiguous
        np.testing.assert_array_equal(f["V"][()], memory.V)  # NaN where AVA is ablated
        np.testing.assert_array_equal(f["time"][()], memory.t)
        np.testing.assert_array_equal(f["stats"][()], memory.stats)
        np.testing.assert_array_equal(f["initial_V"][()], memory.initial_V)
        assert f.attrs["complete"] and f.attrs["runs_written"] == 140
        assert [x.decode() for x in f["protocols"][()]] == PROTOCOLS
        assert f["status"][()].tolist() == np.where(memory.failed, 1, 0).tolist()
        assert f.attrs["circuit_yaml"] == ns.dump_circuit(circuit)
    np.testing.assert_array_equal(out.V, memory.V)
    assert out.messages == memory.messages and (out.status == memory.status).all()
    np.testing.assert_array_equal(out.result("tap", 7).V, memory.result("tap", 7).V)
    parts = batch_file.read_batch_parts(tmp_path / "b.h5")  # a later process reads them so
    assert parts["messages"] == memory.messages
    np.testing.assert_array_equal(parts["stats"], memory.stats)
    np.testing.assert_array_equal(parts["rest_reports"], memory.rest_reports)


def test_float32_storage_is_the_batch_rounded_once(tw_batch, tmp_path):
    circuit, params, memory = tw_batch
    ns.simulate_batch(circuit, params[:20], PROTOCOLS,
                      recorder=recorder(tmp_path / "b.h5", dtype="float32"), **OPTIONS)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f["V"].dtype == np.float32
        np.testing.assert_array_equal(f["V"][()], memory.V[:, :20].astype(np.float32))


def test_an_existing_file_is_kept_unless_overwrite(tw_batch, tmp_path):
    circuit, params, memory = tw_batch
    path = tmp_path / "b.h5"
    ns.simulate_batch(circuit, params[:4], "tap", recorder=recorder(path), **OPTIONS)
    before = path.read_bytes()
    with pytest.raises(ResultFileError, match="exists; pass overwrite=True"):
        ns.HDF5BatchRecorder(path)
    assert path.read_bytes() == before
    ns.simulate_batch(circuit, params[4:6], "tap", recorder=recorder(path, overwrite=True),
                      **OPTIONS)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["V"][0], memory.V[0, 4:6])


def test_a_second_writer_is_refused_and_touches_nothing(tw_batch, tmp_path):
    circuit, params, _ = tw_batch
    path = tmp_path / "b.h5"
    first = recorder(path)
    second = recorder(path)
    calls = []

    def and_a_second_writer(*args, **kwargs):
        if not calls:  # while the first batch writes: a second one on the same output
            with pytest.raises(ResultFileError, match="being written by another run"):
                ns.simulate_batch(circuit, params[:2], "tap", recorder=second, **OPTIONS)
        calls.append(1)
        return run_grid(*args, **kwargs)

    run_grid = simulate_module.BatchPlan._grid
    try:
        simulate_module.BatchPlan._grid = and_a_second_writer
        ns.simulate_batch(circuit, params[:20], "tap", recorder=first, **OPTIONS)
    finally:
        simulate_module.BatchPlan._grid = run_grid
    assert len(calls) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["b.h5"]
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"] and f["V"].shape[1] == 20


def interrupt_kernel_call(monkeypatch, number):
    """A batch's kernel call ``number`` (1, 2, …) raises KeyboardInterrupt (as Ctrl-C
    there would)."""
    run_grid = simulate_module.BatchPlan._grid
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return run_grid(*args, **kwargs)

    monkeypatch.setattr(simulate_module.BatchPlan, "_grid", interrupted)


def test_an_interrupt_leaves_a_file_that_says_so(tw_batch, tmp_path, monkeypatch):
    circuit, params, memory = tw_batch
    interrupt_kernel_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5"),
                          **OPTIONS)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f["V"].attrs["units"] == "mV" and f["time"].attrs["units"] == "ms"
        np.testing.assert_array_equal(f["theta"][()], params)  # what reruns each run
        names = [x.decode() for x in f["parameter_names"][()]]
        assert names == list(compile_circuit(circuit).layout.names)
        assert not f.attrs["complete"] and f.attrs["status"] == "interrupted"
        assert f.attrs["runs_written"] == 2 * 32
        # the runs in the file, not the parameter sets of the calls finished (it said 0
        # of 6000 sets with 1,152 runs written)
        assert f.attrs["message"] == ("interrupted (KeyboardInterrupt): 64 of 140 runs are "
                                      "in the file")
        status = f["status"][()]
    assert (status[:, :32] >= 0).all() and (status[:, 32:] == batch_file.NOT_RUN).all()
    V = batch_file.load_batch_V(tmp_path / "b.h5")
    np.testing.assert_array_equal(V[:, :32], memory.V[:, :32])
    assert np.isnan(V[:, 32:]).all()  # never the file's undefined bytes


def test_an_interrupted_batch_does_not_replace_a_finished_file(tw_batch, tmp_path,
                                                                monkeypatch):
    """overwrite=True replaces a file with a complete batch only: interrupted, the new
    batch stays in the partial and the finished file keeps every byte."""
    circuit, params, _ = tw_batch
    path = tmp_path / "b.h5"
    ns.simulate_batch(circuit, params[:4], "tap", recorder=recorder(path), **OPTIONS)
    before = path.read_bytes()
    interrupt_kernel_call(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="left as it was"):
        ns.simulate_batch(circuit, params, PROTOCOLS,
                          recorder=recorder(path, overwrite=True), **OPTIONS)
    assert path.read_bytes() == before
    with h5py.File(tmp_path / "b.h5.partial", "r") as f:
        assert f.attrs["status"] == "interrupted" and f.attrs["runs_written"] > 0


def test_a_write_error_stops_the_batch_and_keeps_what_was_written(tw_batch, tmp_path,
                                                                   monkeypatch):
    circuit, params, memory = tw_batch
    real = batch_file.HDF5BatchRecorder._write_runs

    def disk_full_from_set_32(self, protocol, first, V, summary):
        if first >= 32:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, protocol, first, V, summary)

    monkeypatch.setattr(batch_file.HDF5BatchRecorder, "_write_runs", disk_full_from_set_32)
    with pytest.raises(StorageError, match="No space left on device.*written before are in"):
        ns.simulate_batch(circuit, params, "tap", recorder=recorder(tmp_path / "b.h5"),
                          **OPTIONS)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert not f.attrs["complete"] and f.attrs["status"] == "failed"
        assert f.attrs["runs_written"] == 32
    V = batch_file.load_batch_V(tmp_path / "b.h5")
    np.testing.assert_array_equal(V[:, :32], memory.V[:1, :32])
    assert np.isnan(V[:, 32:]).all()


def test_a_real_full_disk(tw_batch, small_disk):
    circuit, params, _ = tw_batch
    many = np.repeat(params, 30, axis=0)  # 2,100 runs x 1,501 samples x 11: 28 MB
    with pytest.raises(ResourceError, match="would take .* MB, but only"):
        ns.simulate_batch(circuit, many, "tap", rtol=1e-6, atol=1e-6, dt_out=1.0,
                          recorder=recorder(small_disk / "b.h5"))
    assert list(small_disk.iterdir()) == []
    # past the free-space check, the blocks are taken while the first call computes:
    # refused there, nothing left
    with pytest.raises(StorageError, match="cannot write .*No space left on device"):
        ns.simulate_batch(circuit, many, "tap", rtol=1e-6, atol=1e-6, dt_out=1.0,
                          recorder=recorder(small_disk / "b.h5", check_space=False))
    assert list(small_disk.iterdir()) == []


def test_a_recorder_writes_one_batch_and_a_replaced_file_is_not_read_as_its_traces(tw_batch,
                                                                                  tmp_path):
    """A reused recorder is refused (it once returned the first batch's traces under the
    second's labels); a batch's lazily read traces are refused once its file has been
    replaced by another batch (they once showed the new file's runs)."""
    circuit, params, _ = tw_batch
    path = tmp_path / "b.h5"
    used = recorder(path)
    first = ns.simulate_batch(circuit, params[:3], "tap", recorder=used, **OPTIONS)
    with pytest.raises(ResultFileError, match="writes one batch"):
        ns.simulate_batch(circuit, params[:2], "tap_no_PLM", recorder=used, **OPTIONS)
    with pytest.raises(ResultFileError, match=r"b\.h5 is closed"):  # it once dropped them
        used.append(0, 0, np.zeros((1, 1, 1)), np.zeros(1), np.zeros((1, 4)),
                    np.zeros((1, 11)), np.zeros((1, 1)), {})
    ns.simulate_batch(circuit, params[:3], "tap", recorder=recorder(path, overwrite=True),
                      **OPTIONS)
    with pytest.raises(ResultFileError, match="replaced or rewritten"):
        first.V
    with pytest.raises(ns.CircuitError, match="takes an HDF5BatchRecorder"):
        ns.simulate_batch(circuit, params[:2], "tap", recorder=str(path), **OPTIONS)


def test_the_space_check_counts_what_is_known_of_each_run(tw_batch, small_disk, monkeypatch):
    """Statuses, stats, starts and rest reports take ~170 bytes a run: a batch of one
    sample per run is refused before any work when they do not fit (it once computed
    everything and then kept nothing)."""
    circuit, params, _ = tw_batch
    many = np.repeat(params[:1], 40_000, axis=0)

    def no_work(*args, **kwargs):
        raise AssertionError("the batch ran before its file was refused")

    monkeypatch.setattr(simulate_module.BatchPlan, "_grid", no_work)
    with pytest.raises(ns.ResourceError, match="free"):
        ns.simulate_batch(circuit, many, "tap", dt_out=1500.0, record=["REV"],
                          recorder=recorder(small_disk / "c.h5"))
    assert list(small_disk.iterdir()) == []


def direct_io_works(folder) -> bool:
    """Whether ``folder``'s file system takes O_DIRECT writes (tmpfs on older kernels
    does not: the recorder then writes through the page cache)."""
    probe = folder / "probe"
    probe.write_bytes(b"")
    fd = batch_file._open_direct(probe, os.open(probe, os.O_RDONLY))
    if fd is None:
        return False
    memory = batch_file._page_aligned(batch_file.PAGE)
    try:
        os.pwrite(fd, memory, 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", [
    # 3 of 11 neurons: runs of 1,464 bytes, so blocks begin and end inside pages; the
    # second protocol's runs lie in the call buffer after the first's (other alignment)
    dict(sets=70, per_call=24, record=["AVA", "AVB", "PVD"]),
    # a batch smaller than a call of whole lockstep units (the recorder's own cut)
    dict(sets=45, per_call=None, record=None),
    # item-by-item kernels: ranges of items that cross from one protocol to the next
    dict(sets=21, per_call=8, record=["REV", "FWD"], integrator="rk4", dt=0.5)])
def test_the_pages_written_directly_and_the_fragments_make_the_batch_bit_for_bit(
        tw_batch, tmp_path, monkeypatch, dtype, case):
    circuit, params, _ = tw_batch
    options = ({**OPTIONS} if "integrator" not in case else
               dict(integrator=case["integrator"], dt=case["dt"], dt_out=OPTIONS["dt_out"]))
    options["record"] = case["record"]
    memory = ns.simulate_batch(circuit, params[:case["sets"]], PROTOCOLS, **options)
    direct = []
    real = batch_file._pwrite_direct

    def counted(fd, data, offset):
        direct.append(data.nbytes)
        return real(fd, data, offset)

    monkeypatch.setattr(batch_file, "_pwrite_direct", counted)
    rec = (ns.HDF5BatchRecorder(tmp_path / "b.h5", dtype=dtype) if case["per_call"] is None
           else recorder(tmp_path / "b.h5", case["per_call"], dtype=dtype))
    out = ns.simulate_batch(circuit, params[:case["sets"]], PROTOCOLS, recorder=rec, **options)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        np.testing.assert_array_equal(f["V"][()], memory.V.astype(dtype))
        assert f["status"][()].tolist() == np.where(memory.failed, 1, 0).tolist()
        np.testing.assert_array_equal(f["stats"][()], memory.stats)
        np.testing.assert_array_equal(f["initial_V"][()], memory.initial_V)
        np.testing.assert_array_equal(f["theta"][()], params[:case["sets"]])
    assert out.messages == memory.messages
    if direct_io_works(tmp_path) and "integrator" not in case:
        assert sum(direct) > 0  # the aligned pages did go around the page cache


@pytest.mark.parametrize("refused", ["open", "write"])
def test_a_file_system_without_o_direct_gets_the_same_bytes_through_the_page_cache(
        tw_batch, tmp_path, monkeypatch, refused):
    circuit, params, memory = tw_batch
    reference = recorder(tmp_path / "reference.h5", 24)
    ns.simulate_batch(circuit, params, PROTOCOLS, recorder=reference, **OPTIONS)
    direct_fds = []
    open_direct, real_open, real_pwrite = batch_file._open_direct, os.open, os.pwrite

    def no_direct_open(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_open(path, flags, *args, **kwargs)

    def recorded(path, fd):
        direct_fds.append(open_direct(path, fd))
        return direct_fds[-1]

    def no_direct_write(fd, data, offset):
        if fd in direct_fds:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_pwrite(fd, data, offset)

    if refused == "open":
        monkeypatch.setattr(os, "open", no_direct_open)
    else:
        monkeypatch.setattr(batch_file, "_open_direct", recorded)
        monkeypatch.setattr(os, "pwrite", no_direct_write)
    ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5", 24),
                      **OPTIONS)
    with h5py.File(tmp_path / "b.h5", "r") as f, h5py.File(tmp_path / "reference.h5", "r") as g:
        np.testing.assert_array_equal(f["V"][()], memory.V)
        np.testing.assert_array_equal(f["V"][()], g["V"][()])
        assert f.attrs["complete"] and f.attrs["runs_written"] == 140
    if refused == "write" and direct_io_works(tmp_path):
        assert direct_fds[0] is not None  # opened, then refused at the first write


def test_an_interrupt_between_groups_marks_only_the_runs_written(tw_batch, tmp_path,
                                                                 monkeypatch):
    """Runs reach the recorder a lockstep group at a time: an interrupt in the middle of a
    call keeps the groups handed over before it, and no other run says it is there."""
    circuit, params, memory = tw_batch
    real = batch_file.HDF5BatchRecorder.append
    handed = []

    def interrupted_at_the_fifth_group(self, protocol, first, V, *rest):
        if len(handed) == 4:
            raise KeyboardInterrupt
        handed.append((protocol, first, V.shape[0]))
        real(self, protocol, first, V, *rest)

    monkeypatch.setattr(batch_file.HDF5BatchRecorder, "append", interrupted_at_the_fifth_group)
    with pytest.raises(KeyboardInterrupt):
        ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5", 32),
                          **OPTIONS)
    written = np.zeros(memory.failed.shape, dtype=bool)
    for protocol, first, m in handed:
        written[protocol, first:first + m] = True
    assert 0 < written.sum() < 2 * 32  # within the first call (of 2 x 32 runs)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f.attrs["status"] == "interrupted" and f.attrs["runs_written"] == written.sum()
        assert ((f["status"][()] != batch_file.NOT_RUN) == written).all()
    V = batch_file.load_batch_V(tmp_path / "b.h5")
    np.testing.assert_array_equal(V[written], memory.V[written])
    assert np.isnan(V[~written]).all()


def test_a_failed_direct_write_leaves_its_runs_unmarked(tw_batch, tmp_path, monkeypatch):
    circuit, params, memory = tw_batch
    real = batch_file._pwrite_direct
    writes = []

    def disk_full_at_the_third_direct_write(fd, data, offset):
        writes.append(1)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(batch_file, "_pwrite_direct", disk_full_at_the_third_direct_write)
    with pytest.raises(StorageError, match="No space left on device.*written before are in"):
        ns.simulate_batch(circuit, params, "tap", recorder=recorder(tmp_path / "b.h5", 32),
                          **OPTIONS)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        status = f["status"][()]
        assert f.attrs["status"] == "failed" and f.attrs["runs_written"] < 70
    V = batch_file.load_batch_V(tmp_path / "b.h5")
    kept = status != batch_file.NOT_RUN
    np.testing.assert_array_equal(V[kept], memory.V[:1][kept])
    assert np.isnan(V[~kept]).all()


def test_run_items_fills_a_given_output_in_place_and_refuses_a_wrong_one(tw_batch):
    circuit, params, _ = tw_batch
    plan = simulate_module.BatchPlan(circuit, PROTOCOLS, **OPTIONS)
    _, _, _, fresh, _ = plan._grid(params[:9], "float64")
    given = np.full((2 * 9,) + fresh.shape[2:], 7.0)
    *_, filled, _ = plan._grid(params[:9], "float64", given)
    assert np.shares_memory(filled, given)
    np.testing.assert_array_equal(given.reshape(fresh.shape), fresh)
    for wrong in (given[:-1], given.astype(np.float32), given.transpose(0, 2, 1).copy().T):
        with pytest.raises(ValueError, match="out_V must be"):
            plan._grid(params[:9], "float64", wrong)


def fill_from_another_process(folder):
    """Fill the disk of ``folder`` to the last byte, from a process of its own."""
    subprocess.run([sys.executable, "-c", "import sys\nf = open(sys.argv[1], 'wb')\ntry:\n"
                    "    while True:\n        f.write(b'x' * 4096)\n        f.flush()\n"
                    "except OSError:\n    pass", str(folder / "filler")], check=True)


def test_calls_and_the_memory_kept_stay_within_call_bytes(tw_batch, tmp_path, monkeypatch):
    """A set whose traces are large (the whole worm recorded every 1 ms: 2.4 MB) once got
    a call of a whole lockstep unit of sets (1.2 GB), and the spares kept 2.8 GB after
    the batch: a call now takes at most CALL_BYTES, idle lanes or not, and the memory
    kept for the next batch at most SPARE_CALLS x CALL_BYTES."""
    from neurosim.integrators.runs import lockstep_unit
    import numba
    # lanes that fit the circuit: 8 for 302 neurons in float64, not 64
    assert lockstep_unit(302, 8) == 4 * numba.get_num_threads() * 8
    circuit, params, memory = tw_batch
    call_bytes = 200_000  # a TW set under two protocols takes 53 KB at dt_out 5 ms
    monkeypatch.setattr(batch_file, "CALL_BYTES", call_bytes)
    taken = []
    real = batch_file.HDF5BatchRecorder.buffer

    def counted(self, shape, dtype):
        out = real(self, shape, dtype)
        taken.append(out.nbytes)
        return out

    monkeypatch.setattr(batch_file.HDF5BatchRecorder, "buffer", counted)
    options = {**OPTIONS, "dt_out": 5.0}
    expected = ns.simulate_batch(circuit, params[:20], PROTOCOLS, **options)
    for k in range(3):
        ns.simulate_batch(circuit, params[:20], PROTOCOLS,
                          recorder=ns.HDF5BatchRecorder(tmp_path / f"b{k}.h5"), **options)
        assert sum(memory.nbytes for memory in batch_file._spares) <= 2 * call_bytes
    assert len(taken) == 3 * 7 and max(taken) <= call_bytes  # 3 sets a call
    np.testing.assert_array_equal(batch_file.load_batch_V(tmp_path / "b2.h5"), expected.V)


def test_a_file_that_cannot_be_created_stops_the_batch_in_its_first_call(tw_batch, tmp_path,
                                                                         monkeypatch):
    """The file is created on the writer thread while the first call computes: where that
    fails, the batch stops there, in one line, and leaves nothing (the same output can
    be written next)."""
    circuit, params, memory = tw_batch
    real = h5py.File

    def unwritable(name, mode="r", **options):
        if mode == "w":
            raise OSError(errno.EIO, "Input/output error")
        return real(name, mode, **options)

    calls = []
    run_grid = simulate_module.BatchPlan._grid
    monkeypatch.setattr(simulate_module.BatchPlan, "_grid",
                        lambda *args, **kwargs: (calls.append(1), run_grid(*args, **kwargs))[1])
    monkeypatch.setattr(h5py, "File", unwritable)
    with pytest.raises(StorageError) as info:
        ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5", 16),
                          **OPTIONS)
    assert str(info.value) == f"cannot write {tmp_path / 'b.h5'}: Input/output error"
    assert len(calls) == 1 and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(h5py, "File", real)
    ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5", 16),
                      **OPTIONS)
    np.testing.assert_array_equal(batch_file.load_batch_V(tmp_path / "b.h5"), memory.V)


def test_the_file_is_its_data_without_padding(tw_batch, tmp_path):
    """513 sets in calls of 512 once took a second chunk of 512 sets for the last one."""
    circuit, params, memory = tw_batch
    many = np.repeat(params[:1], 513, axis=0)
    ns.simulate_batch(circuit, many, "tap", recorder=recorder(tmp_path / "b.h5", 512),
                      **OPTIONS)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        data = sum(f[name].nbytes for name in ("V", "status", "stats", "initial_V",
                                               "rest_reports", "theta"))
        np.testing.assert_array_equal(f["V"][0, 512], memory.V[0, 0])
    size = os.stat(tmp_path / "b.h5")
    assert data < size.st_size < data + (64 << 10)
    assert size.st_blocks * 512 < data + (64 << 10)  # the reserve for closing given back


def test_a_disk_too_small_is_refused_before_any_run_and_one_that_fits_is_enough(
        tw_batch, small_disk, monkeypatch):
    """The file takes what the space check counts, no more: a batch that fits runs on a
    disk it nearly fills (513 sets in calls of 512 once needed twice the space, and
    failed after the check), one that does not is refused before any kernel runs."""
    circuit, params, memory = tw_batch
    options = dict(rtol=1e-6, atol=1e-6, dt_out=13.0)  # 10 KB a run: 5.3 MB, 8 MB free
    ns.simulate_batch(circuit, np.repeat(params[:1], 513, axis=0), "tap",
                      recorder=recorder(small_disk / "fits.h5", 512), **options)
    with h5py.File(small_disk / "fits.h5", "r") as f:
        assert f.attrs["complete"] and f.attrs["runs_written"] == 513

    def no_work(*args, **kwargs):
        raise AssertionError("the batch ran before its file was refused")

    monkeypatch.setattr(simulate_module.BatchPlan, "_grid", no_work)
    with pytest.raises(ResourceError, match=r"b\.h5 \(200 runs .* would take [\d.]+ MB, but "
                                            r"only [\d.]+ MB are free.*float32"):
        ns.simulate_batch(circuit, np.repeat(params[:1], 200, axis=0), "tap",
                          recorder=recorder(small_disk / "b.h5", 512), **options)
    assert sorted(p.name for p in small_disk.iterdir()) == ["fits.h5"]


@pytest.mark.parametrize("step", ["writer", "finish"])
@pytest.mark.parametrize("ending", ["complete", "interrupted"])
def test_a_second_ctrl_c_while_closing_waits_for_the_file(tw_batch, tmp_path, monkeypatch,
                                                          step, ending):
    """Ctrl-C pressed again while the file is finished (waiting for the writer thread, or
    writing the summaries) once left a locked partial marked "running", every run lost:
    the file is finished and named first, then KeyboardInterrupt goes on."""
    circuit, params, memory = tw_batch
    names = {"writer": (batch_file.BackgroundWriter, "finish"),
             "finish": (batch_file.HDF5BatchRecorder, "_finish")}
    owner, name = names[step]
    real = getattr(owner, name)

    def and_ctrl_c(*args):
        signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(owner, name, and_ctrl_c)
    if ending == "interrupted":
        interrupt_kernel_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5", 32),
                          **OPTIONS)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5"]  # named, lock released
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f.attrs["status"] == ending
        assert f.attrs["runs_written"] == (140 if ending == "complete" else 2 * 2 * 32)
    V = batch_file.load_batch_V(tmp_path / "b.h5")
    np.testing.assert_array_equal(V[:, :64], memory.V[:, :64])


def test_another_program_filling_the_disk_stops_nothing(tw_batch, small_disk, monkeypatch):
    """Every block of the file, and the room for closing it, is taken when the file is
    created: another process filling the disk mid-batch once made closing impossible,
    and the partial with every run written was deleted."""
    circuit, params, memory = tw_batch
    real = batch_file.HDF5BatchRecorder.append
    handed = []

    def filled_at_the_third_group(self, *args):
        handed.append(1)
        if len(handed) == 3:
            fill_from_another_process(small_disk)
            assert shutil.disk_usage(small_disk).free == 0
        real(self, *args)

    monkeypatch.setattr(batch_file.HDF5BatchRecorder, "append", filled_at_the_third_group)
    ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(small_disk / "b.h5", 32),
                      **OPTIONS)
    with h5py.File(small_disk / "b.h5", "r") as f:
        assert f.attrs["complete"] and f.attrs["runs_written"] == 140
    np.testing.assert_array_equal(batch_file.load_batch_V(small_disk / "b.h5"), memory.V)


def test_neurosim_info_summarises_a_batch_file_and_one_left_by_a_killed_batch(
        tw_batch, tmp_path, monkeypatch):
    circuit, params, memory = tw_batch
    ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5"), **OPTIONS)
    code, out, _ = run_main(monkeypatch, tmp_path, "info", "b.h5")
    failed = int((memory.status == "failed").sum())
    assert code == 0 and "b.h5: batch, complete" in out
    assert (f"70 parameter sets x 2 protocols = 140: {140 - failed} completed, {failed} "
            "failed, 0 not written") in out
    assert "protocols tap, tap_no_AVA" in out and "up to t = 1500 ms" in out
    code, out, _ = run_main(monkeypatch, tmp_path, "info", "b.h5", "--json")
    info = json.loads(out)
    assert code == 0 and info["sets"] == 70 and info["failed"] == failed
    assert info["neurons"] == list(memory.neuron_names) and info["integrator"] == "dopri5"
    with h5py.File(tmp_path / "b.h5", "r+") as f:  # as a batch killed while it ran leaves it
        f.attrs["status"] = "running"
        f.attrs["complete"] = False
    code, out, _ = run_main(monkeypatch, tmp_path, "info", "b.h5")
    assert code == 0 and "batch, killed while running (INCOMPLETE)" in out
    assert "which were written was never recorded" in out


def test_an_interrupt_as_the_batch_starts_leaves_no_locked_file(tw_batch, tmp_path,
                                                                monkeypatch):
    """Ctrl-C between opening the file and the loop that closes it on any exit (the
    outside tester's window): nothing is left locked, and the next batch to the same path
    runs."""
    circuit, params, memory = tw_batch
    clock = simulate_module.running_clock
    ticks = []

    def interrupted_once():
        ticks.append(1)
        if len(ticks) == 1:
            raise KeyboardInterrupt
        return clock()

    monkeypatch.setattr(simulate_module, "running_clock", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5"),
                          **OPTIONS)
    assert not list(tmp_path.iterdir())
    again = ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5"),
                              **OPTIONS)
    np.testing.assert_array_equal(again.V, memory.V)


def test_a_disk_too_small_for_the_file_is_not_called_full(tmp_path, monkeypatch):
    """ENOSPC with room left (a file larger than the free space, the check skipped) says
    how much is free, not that the disk is full; below the reserve it is full."""
    from neurosim.io.hdf5 import write_failure_reason
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda folder: usage._replace(free=21_000_000))
    assert write_failure_reason(enospc, tmp_path, 1 << 20) == (
        f"No space left on device (only 21.0 MB free in {tmp_path})")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage._replace(free=0))
    assert write_failure_reason(enospc, tmp_path, 1 << 20) == (
        f"No space left on device (the disk is full: only 0 B free in {tmp_path})")


def test_one_run_of_a_batch_on_disk_is_read_alone(tw_batch, tmp_path):
    """result(p, k) of a streamed batch reads that run, not the whole file (the tester saw
    650 MB read for one 19 KB run), and equals the in-memory batch's, failures included."""
    circuit, params, memory = tw_batch
    stored = ns.simulate_batch(circuit, params, PROTOCOLS, recorder=recorder(tmp_path / "b.h5"),
                               **OPTIONS)
    for p, k in ((0, 0), (1, 5), ("tap_no_AVA", -1), (-2, 69)):
        got, expected = stored.result(p, k), memory.result(p, k)
        np.testing.assert_array_equal(got.V, expected.V)
        np.testing.assert_array_equal(got.t, expected.t)
        assert (got.status, got.message) == (expected.status, expected.message)
    assert callable(stored._V)  # no run read the whole /V
    with pytest.raises(IndexError):
        stored.result(0, 70)
