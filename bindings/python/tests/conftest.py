import json
import os
import struct
from array import array
from pathlib import Path

import pytest

import longmamba
from longmamba import _core

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("LONGMAMBA_TEST_DATA", REPO / "test" / "data"))
FIXTURES = DATA / "fixtures"


def fixture_dirs():
    if not FIXTURES.is_dir():
        return []
    return sorted(d for d in FIXTURES.iterdir() if (d / "reference.safetensors").is_file())


def read_safetensors(path):
    """{name: (dtype, shape, flat list)} for the I32/F64/F32 tensors of a file:
    8-byte little-endian header length, JSON header, raw data."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    codes = {"I32": "i", "F64": "d", "F32": "f", "I64": "q"}
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] not in codes:
            continue
        a = array(codes[t["dtype"]])
        assert a.itemsize == {"I32": 4, "F64": 8, "F32": 4, "I64": 8}[t["dtype"]]
        lo, hi = t["data_offsets"]
        a.frombytes(raw[base + lo:base + hi])
        if struct.pack("=H", 1) != struct.pack("<H", 1):  # big-endian host
            a.byteswap()
        out[name] = (t["dtype"], tuple(t["shape"]), a.tolist())
    return out


@pytest.fixture(params=["numpy", "plain"])
def array_mode(request, monkeypatch):
    """Runs a test once with NumPy arrays and once with the plain-Python path."""
    if request.param == "numpy":
        if _core._np is None:
            pytest.skip("NumPy is not installed")
    else:
        monkeypatch.setattr(_core, "_np", None)
    return request.param


@pytest.fixture(scope="session")
def tiny_dir():
    d = FIXTURES / "m1-tiny-f32"
    if not d.is_dir():
        pytest.fail("fixture %s is missing (set LONGMAMBA_TEST_DATA)" % d)
    return str(d)


@pytest.fixture
def tiny(tiny_dir):
    with longmamba.Model(tiny_dir, backend="cpu", n_threads=2) as m:
        yield m


def to_list(x):
    """Nested lists from an ndarray or nested lists."""
    return x.tolist() if hasattr(x, "tolist") else x
