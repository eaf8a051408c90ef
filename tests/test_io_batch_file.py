"""Batches streamed to HDF5 (neurosim.io.batch_file): the file read back with h5py equals
the in-memory batch bit for bit; and the data-safety rules of result files hold for it
(an existing file, two writers, a full disk, a write error, an interrupt)."""

import errno
import importlib
import os

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.compile import compile_circuit
from neurosim.errors import ResourceError, ResultFileError, StorageError
from neurosim.io import batch_file
from helpers import TW

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
        assert f["V"].shape == memory.V.shape and f["V"].chunks == (1, 16) + memory.V.shape[2:]
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


def test_an_interrupt_leaves_a_file_that_says_so(tw_batch, tmp_path, monkeypatch):
    circuit, params, memory = tw_batch
    run_grid = simulate_module.BatchPlan._grid
    calls = []

    def interrupted_at_the_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_grid(*args, **kwargs)

    monkeypatch.setattr(simulate_module.BatchPlan, "_grid", interrupted_at_the_third_call)
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
    run_grid = simulate_module.BatchPlan._grid
    calls = []

    def interrupted_at_the_second_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_grid(*args, **kwargs)

    monkeypatch.setattr(simulate_module.BatchPlan, "_grid", interrupted_at_the_second_call)
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
    # past the free-space check, the blocks are taken before any run: refused at once
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
