"""HDF5 recording: equality with memory, metadata, interruption, refusal to overwrite."""

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim.errors import ResultFileError
from helpers import EXAMPLE


def test_hdf5_content_equals_the_in_memory_result(tmp_path):
    c = ns.load_circuit(EXAMPLE)
    memory = ns.simulate(c, "baseline", dt_out=0.5)
    streamed = ns.simulate(c, "baseline", dt_out=0.5, recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    again = ns.load_result(tmp_path / "r.h5")
    for r in (streamed, again):
        np.testing.assert_array_equal(r.t, memory.t)
        np.testing.assert_array_equal(r.V, memory.V)
        assert r.neuron_names == memory.neuron_names and r.status == "complete"
    assert again.stats["steps"] == memory.stats["steps"]
    # the recorder builds its Result without reading the file back: it must be the file's
    assert (streamed.message, streamed.stats, streamed.metadata) == (again.message, again.stats,
                                                                     again.metadata)
    assert streamed.metadata["complete"] and "circuit_yaml" in streamed.metadata
    compressed = ns.simulate(c, "baseline", dt_out=0.5, recorder=ns.HDF5Recorder(
        tmp_path / "z.h5", compression="gzip", dtype="float32"))
    np.testing.assert_allclose(compressed.V, memory.V, rtol=1e-6)
    np.testing.assert_array_equal(compressed.V, ns.load_result(tmp_path / "z.h5").V)


def test_a_killed_run_leaves_the_rows_it_wrote(tmp_path, monkeypatch):
    """While a run goes the datasets have the run's full length; a reader of a file whose
    writer died (no close) takes the rows counted in ``samples_written``, no more."""
    import time
    from neurosim.io import hdf5
    from neurosim.record import RunHeader
    monkeypatch.setattr(hdf5, "FLUSH_INTERVAL_S", 0.0)  # count the rows after every chunk
    recorder = ns.HDF5Recorder(tmp_path / "r.h5")
    recorder.open(RunHeader(("A", "B"), 10**7, 0.1, {"protocol": "p"}, None))
    rows = hdf5.CHUNK_VALUES // 2
    for k in range(3):
        t = np.arange(k * rows, (k + 1) * rows) * 0.1
        recorder.append(t, np.column_stack([t, -t]))
    recorder.append(np.arange(3 * rows, 3 * rows + 10) * 0.1, np.zeros((10, 2)))  # buffered
    while recorder._written < 3 * rows:
        time.sleep(0.01)
    time.sleep(0.05)
    # what a killed writer leaves is the file as it is on disk now (the writer's lock
    # goes with its process; here the recorder lives on, so a copy stands in for it)
    left = tmp_path / "left.h5"
    shutil.copy(tmp_path / "r.h5.partial", left)
    with h5py.File(left, "r") as f:  # the datasets run ahead of the valid rows
        assert f["V"].shape[0] >= 3 * rows and f.attrs["samples_written"] == 3 * rows
    killed = ns.load_result(left)
    assert killed.status == "interrupted" and killed.t.size == 3 * rows
    np.testing.assert_array_equal(killed.V[:, 0], np.arange(3 * rows) * 0.1)
    assert hdf5.result_summary(left)["samples"] == 3 * rows
    closed = recorder.close("interrupted", "stopped", {})
    assert closed.t.size == 3 * rows + 10
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["V"].shape == (3 * rows + 10, 2) and f["time"].shape == (3 * rows + 10,)
    # a run cut short keeps no room for the samples it never wrote (1e7 x 3 x 8 B), only
    # the rest of its last chunk
    assert (tmp_path / "r.h5").stat().st_size < 5 * rows * 3 * 8


def test_file_holds_everything_needed_to_rerun(tmp_path):
    c = ns.load_circuit(EXAMPLE)
    ns.simulate(c, "no_A", integrator="rk4", dt=0.05, dt_out=0.5, record=["B"],
                recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    with h5py.File(tmp_path / "r.h5", "r") as f:
        attrs = f.attrs
        assert attrs["complete"] and attrs["status"] == "complete"
        assert list(f["neuron_names"].asstr()[()]) == ["B"]
        # the axes of /V are labelled with standard HDF5 dimension scales
        assert f["V"].dims[0][0] == f["time"] and f["V"].dims[1][0] == f["neuron_names"]
        assert f["time"].attrs["units"] == "ms" and f["V"].attrs["units"] == "mV"
        text = attrs["circuit_yaml"]
        assert hashlib.sha256(text.encode()).hexdigest() == attrs["circuit_sha256"]
        assert attrs["integrator"] == "rk4"
        assert json.loads(attrs["integrator_options"]) == {"dt": 0.05}
        assert attrs["protocol"] == "no_A" and attrs["neurosim_version"] == ns.__version__
        meta = json.loads(attrs["metadata"])
        assert meta["ablated"] == ["A"] and meta["record"] == ["B"]
        stored_V = f["V"][...]
    rerun = ns.simulate(ns.loads_circuit(text), meta["protocol"], integrator=attrs_integrator(tmp_path),
                        dt=0.05, dt_out=meta["dt_out_ms"], record=meta["record"])
    np.testing.assert_array_equal(rerun.V, stored_V)


def attrs_integrator(tmp_path):
    with h5py.File(tmp_path / "r.h5", "r") as f:
        return str(f.attrs["integrator"])


class InterruptAfter(ns.HDF5Recorder):
    """A recorder whose callback raises KeyboardInterrupt after a few chunks."""

    def __init__(self, path, chunks):
        super().__init__(path)
        self.left = chunks

    def append(self, t, V):
        super().append(t, V)
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt


def test_interrupted_run_leaves_a_valid_incomplete_file(tmp_path):
    c = ns.load_circuit(EXAMPLE)
    with pytest.raises(KeyboardInterrupt):
        ns.simulate(c, "baseline", dt_out=0.01, recorder=InterruptAfter(tmp_path / "r.h5", 3))
    r = ns.load_result(tmp_path / "r.h5")
    assert r.status == "interrupted" and not r.metadata["complete"]
    assert 1 < r.t.size < 50001 and np.all(np.isfinite(r.V))
    full = ns.simulate(c, "baseline", dt_out=0.01)
    np.testing.assert_array_equal(r.V, full.V[:r.t.size])
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert not f.attrs["complete"]


def test_failed_run_is_recorded_as_failed(tmp_path):
    c = ns.Circuit("stiff", (ns.Neuron("A", C=1e-3, g_L=10.0, V0=0.0),))
    with pytest.raises(ns.SimulationError) as info, pytest.warns(RuntimeWarning):
        ns.simulate(c, duration=5.0, integrator="euler", dt=0.1,
                    recorder=ns.HDF5Recorder(tmp_path / "r.h5"))
    r = ns.load_result(tmp_path / "r.h5")
    assert r.status == "failed" and "neuron 'A'" in r.message
    assert info.value.result.status == "failed"


def test_existing_file_directory_and_foreign_file_are_refused(tmp_path):
    (tmp_path / "r.h5").write_text("x")
    with pytest.raises(ResultFileError, match="exists; pass overwrite=True"):
        ns.HDF5Recorder(tmp_path / "r.h5")
    with pytest.raises(ResultFileError, match="is a directory"):
        ns.HDF5Recorder(tmp_path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ResultFileError, match="not a neurosim result"):
        ns.load_result(tmp_path / "other.h5")
    with pytest.raises(ResultFileError, match="cannot read"):
        ns.load_result(tmp_path / "r.h5")


def test_long_run_streams_in_bounded_chunks(tmp_path):
    c = ns.Circuit("one", (ns.Neuron("A"),))
    sizes = []

    class Spy(ns.HDF5Recorder):
        def append(self, t, V):
            sizes.append(t.size)
            super().append(t, V)

    ns.simulate(c, duration=2000.0, integrator="euler", dt=0.01,
                recorder=Spy(tmp_path / "r.h5", dtype="float32"))
    assert sum(sizes) == 200001 and max(sizes) <= 4096  # bounded chunks, ~2 % of the run
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["V"].dtype == np.float32 and f["V"].chunks[0] <= 1 << 17
