"""What a run keeps (neurosim/record.py): Result, read by name, and MemoryRecorder, which
builds it chunk by chunk.  (The HDF5 recorder is tested in test_io_hdf5 and
test_data_safety.)"""

import numpy as np
import pytest

import neurosim as ns
from neurosim.errors import ResourceError
from neurosim.record import RUN_STATUSES, MemoryRecorder, Result, RunHeader
from helpers import EXAMPLE


def two_traces(**options):
    t = np.array([0.0, 0.5, 1.0])
    V = np.array([[-70.0, -60.0], [-69.0, -59.0], [-68.0, -58.0]])
    return t, V, Result(t, V, ("AVA", "AVB"), **options)


def test_traces_are_read_by_neuron_name():
    t, V, r = two_traces()
    np.testing.assert_array_equal(r.v("AVB"), [-60.0, -59.0, -58.0])
    np.testing.assert_array_equal(r.v("AVA"), V[:, 0])
    assert r.complete and r.status == "complete" and r.stats == {} and r.metadata == {}
    assert repr(r) == "Result(complete, 2 neurons, 3 samples, 1 ms)"
    assert repr(Result(np.empty(0), np.empty((0, 1)), ("A",), "failed")) == \
        "Result(failed, 1 neurons, 0 samples, no samples)"
    assert RUN_STATUSES == ("complete", "failed", "interrupted")


def test_an_unknown_name_is_refused_with_a_suggestion_and_an_ablated_one_says_so():
    _, _, r = two_traces(metadata={"ablated": ["PVD"]})
    with pytest.raises(ns.CircuitError, match=r"^unknown recorded neuron 'ava'; known: AVA, AVB\. "
                                              r"Did you mean 'AVA'\?$"):
        r.v("ava")
    with pytest.raises(ns.CircuitError, match=r"^neuron 'PVD' was ablated in this run: it has no trace$"):
        r.v("PVD")


def test_traces_given_as_functions_are_read_once_when_first_used():
    calls = []

    def read(value):
        def load():
            calls.append(value)
            return value
        return load

    t, V = np.arange(3.0), np.zeros((3, 1))
    r = Result(read(t), read(V), ("A",))
    assert calls == []
    assert r.t is t and r.V is V and r.t is t and r.v("A").shape == (3,)
    assert len(calls) == 2


def header(n_samples, names=("A", "B")):
    return RunHeader(tuple(names), n_samples, 0.5, {"protocol": "p"})


def test_the_memory_recorder_joins_its_chunks_into_the_result():
    t = np.arange(7) * 0.5
    V = np.column_stack([t, -t])
    recorder = MemoryRecorder()
    recorder.open(header(7))
    for rows in (slice(0, 1), slice(1, 4), slice(4, 7)):
        recorder.append(t[rows], V[rows])
    stats = {"steps": 12}
    r = recorder.close("complete", "", stats)
    np.testing.assert_array_equal(r.t, t)
    np.testing.assert_array_equal(r.V, V)
    assert r.neuron_names == ("A", "B") and r.complete and r.metadata == {"protocol": "p"}
    stats["steps"] = 0  # the result holds its own copy
    assert r.stats == {"steps": 12}


def test_a_run_cut_short_keeps_a_copy_of_its_rows_only():
    recorder = MemoryRecorder()
    recorder.open(header(1000))
    recorder.append(np.array([0.0, 0.5]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    r = recorder.close("interrupted", "interrupted at t = 0.5 ms (SIGINT)", {})
    assert r.status == "interrupted" and not r.complete
    assert r.t.shape == (2,) and r.V.shape == (2, 2)
    assert r.t.base is None and r.V.base is None  # not views keeping 1000 rows alive
    np.testing.assert_array_equal(r.V, [[1.0, 2.0], [3.0, 4.0]])


def test_the_memory_recorder_refuses_an_output_larger_than_memory_before_the_run():
    with pytest.raises(ResourceError, match=r"^the run's output \(1,000,000,000,000 samples x 1 "
                                            r"neurons\) would take 16\.0 TB of memory.*"
                                            r"recorder=MemoryRecorder\(check_memory=False\)$"):
        MemoryRecorder().open(header(10**12, names=("A",)))


def test_names_are_matched_whatever_their_case_and_ablations_are_named(tmp_path):
    import neurosim as ns
    from neurosim.model import unknown_name_message
    assert unknown_name_message("neuron", "ava", ["AVA", "AVB"]).endswith("Did you mean 'AVA'?")
    c = ns.load_circuit(EXAMPLE)
    with pytest.raises(ns.CircuitError, match="record= names 'A', ablated in this run"):
        ns.simulate(c, "no_A", record=["A"])
    r = ns.simulate(c, "no_A", dt_out=10.0)
    with pytest.raises(ns.CircuitError, match="neuron 'A' was ablated in this run"):
        r.v("A")
