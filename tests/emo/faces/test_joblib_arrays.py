"""Tests for emo.faces.joblib_arrays: joblib's array layout read without trusting the pickle."""

import io
import os
import pickle

import numpy as np
import pytest

from emo.faces.joblib_arrays import JoblibArrayError, decompress, read_joblib_arrays

joblib = pytest.importorskip("joblib", reason="joblib comes with mtcnn (requirements.txt)")
lz4_frame = pytest.importorskip("lz4.frame", reason="lz4 comes with mtcnn (requirements.txt)")


def _arrays():
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((3, 3, 3, 10)).astype(np.float32),
        rng.standard_normal(7).astype(np.float64),
        np.asfortranarray(rng.standard_normal((4, 5)).astype(np.float32)),  # stored in Fortran order
        np.arange(6, dtype=">i2").reshape(2, 3),  # big-endian
        np.zeros((0, 4), np.float32),
        np.array(3.5, dtype=np.float32),  # 0-d
    ]


@pytest.mark.parametrize("compress", [0, "lz4"])
def test_reads_what_joblib_dump_writes(tmp_path, compress):
    path = tmp_path / "arrays.joblib"
    joblib.dump(_arrays(), path, compress=compress)
    loaded = read_joblib_arrays(path)
    assert len(loaded) == len(_arrays())
    for got, want in zip(loaded, _arrays()):
        assert got.shape == want.shape and got.dtype.kind == want.dtype.kind
        assert got.dtype.isnative and got.flags.writeable
        np.testing.assert_array_equal(got, want)


def test_reads_the_mtcnn_weight_files_exactly_as_joblib_does():
    from emo.faces.mtcnn import weights_folder

    for name in ("pnet", "rnet", "onet"):
        path = weights_folder() / f"{name}.lz4"
        ours, theirs = read_joblib_arrays(path), joblib.load(path)
        assert len(ours) == len(theirs) > 10
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


class _RunsACommand:
    """What an attacker would put in a pickle: unpickling it calls os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_calling_a_function_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.lz4"
    joblib.dump([np.zeros(3, np.float32), _RunsACommand(f"touch {marker}")], path, compress="lz4")
    with pytest.raises(JoblibArrayError, match=r"refers to (posix|nt|os)\.system.*refused"):
        read_joblib_arrays(path)
    assert not marker.exists()


def test_a_renamed_wrapper_class_is_refused(tmp_path):
    # Swap joblib's wrapper for another class of the same name length inside a real weight file.
    from emo.faces.mtcnn import weights_folder

    data = decompress((weights_folder() / "pnet.lz4").read_bytes())
    assert b"NumpyArrayWrapper" in data
    path = tmp_path / "tampered.lz4"
    path.write_bytes(lz4_frame.compress(data.replace(b"NumpyArrayWrapper", b"NDArrayWrapper___", 1)))
    with pytest.raises(JoblibArrayError, match=r"joblib\.numpy_pickle\.NDArrayWrapper___.*refused"):
        read_joblib_arrays(path)


def test_object_arrays_and_numpy_subclasses_are_refused(tmp_path):
    path = tmp_path / "objects.joblib"
    joblib.dump([np.array([1, "text"], dtype=object)], path)
    with pytest.raises(JoblibArrayError, match="only numeric arrays"):
        read_joblib_arrays(path)
    joblib.dump([np.ma.masked_array([1.0, 2.0])], path)
    with pytest.raises(JoblibArrayError, match="refused|subclass"):
        read_joblib_arrays(path)


class _ObjectArrayByCall:
    """Builds an object array by calling numpy.ndarray, with only whitelisted globals."""

    def __reduce__(self):
        return np.ndarray, ((2,), np.dtype(object))


def test_an_object_array_built_by_calling_ndarray_is_refused(tmp_path):
    path = tmp_path / "call.pkl"
    path.write_bytes(pickle.dumps([_ObjectArrayByCall()], protocol=4))
    with pytest.raises(JoblibArrayError, match="dtype object; only numeric arrays"):
        read_joblib_arrays(path)


def test_a_plain_pickle_of_another_object_is_refused(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    with pytest.raises(JoblibArrayError, match="expected a list of arrays, got dict"):
        read_joblib_arrays(path)


def test_truncated_and_garbage_files_give_one_clear_error(tmp_path):
    source = io.BytesIO()
    joblib.dump([np.ones((64, 64), np.float32)], source)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(source.getvalue()[:2000])
    with pytest.raises(JoblibArrayError, match="ends inside an array"):
        read_joblib_arrays(truncated)

    garbage = tmp_path / "garbage.lz4"
    garbage.write_bytes(b"GIF89a not weights")
    with pytest.raises(JoblibArrayError, match="not a joblib file"):
        read_joblib_arrays(garbage)

    damaged = tmp_path / "damaged.lz4"
    damaged.write_bytes(lz4_frame.compress(source.getvalue())[:40])
    with pytest.raises(JoblibArrayError, match="LZ4 data is damaged|damaged|ends inside"):
        read_joblib_arrays(damaged)
