"""The Pythonic layer over _capi: handles as classes, statuses as exceptions,
NumPy arrays in and out when NumPy is installed (plain lists otherwise)."""

import contextlib
import ctypes
import enum
import operator
import os
import threading
from ctypes import POINTER, byref, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t, c_uint8
from dataclasses import dataclass

from . import _capi

try:  # NumPy is optional: without it arrays are plain lists.
    import numpy as _np
except ImportError:  # pragma: no cover - exercised by forcing _np = None in the tests
    _np = None

_ERR_CAP = 1024
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def numpy_enabled():
    """True when arrays are returned as NumPy arrays (NumPy importable)."""
    return _np is not None


# ---- enums ---------------------------------------------------------------------

class Status(enum.IntEnum):
    OK = 0
    INVALID_ARGUMENT = 1
    NO_MEMORY = 2
    IO = 3
    FORMAT = 4
    UNSUPPORTED = 5
    SHAPE = 6
    MISSING = 7
    BUFFER_TOO_SMALL = 8
    OUT_OF_RANGE = 9
    BACKEND = 10
    BACKEND_UNAVAILABLE = 11
    MISMATCH = 12
    ABORTED = 13
    NUMERIC = 14


class Backend(enum.IntEnum):
    AUTO = 0
    CPU = 1
    CUDA = 2


class Arch(enum.IntEnum):
    MAMBA1 = 1
    MAMBA2 = 2
    FALCON_MAMBA = 3


class DType(enum.IntEnum):
    F32 = 0
    F16 = 1
    BF16 = 2
    F64 = 3
    I64 = 4
    I32 = 5
    I16 = 6
    I8 = 7
    U8 = 8
    BOOL = 9


class Weights(enum.IntEnum):
    """lm_weight_format: how a model holds its weights in memory."""
    AS_STORED = 0  # every tensor in its stored type, read in place
    Q8_0 = 1       # the linear layers quantised to GGML's Q8_0 blocks at load


class WeightType(enum.IntEnum):
    """lm_weight_type: the host storage type of one weight tensor."""
    F32 = 0
    F16 = 1
    BF16 = 2
    Q8_0 = 3


class LogLevel(enum.IntEnum):
    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3


class Aggregation(enum.IntEnum):
    MAX = 0
    MEAN = 1


class Mode(enum.IntEnum):
    VANILLA = 0
    LONGMAMBA = 1
    DECIMAMBA = 2
    MAMBAEXTEND = 3
    MODULATION = 4


def _enum(cls, value):
    """Enum member for value, or the plain int for a value newer than this binding."""
    try:
        return cls(value)
    except ValueError:
        return int(value)


def _enum_arg(cls, value, what):
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError("unknown %s %r (one of %s)" %
                             (what, value, ", ".join(m.name.lower() for m in cls))) from None
    return cls(value)


# ---- errors --------------------------------------------------------------------

class LongMambaError(Exception):
    """A call into libongmamba failed.  .status is a Status, .message the library's text."""

    def __init__(self, status, message=""):
        self.status = _enum(Status, status)
        if not message:
            message = status_str(status)
        self.message = message
        super().__init__(status, message)

    def __str__(self):
        name = self.status.name if isinstance(self.status, Status) else str(self.status)
        return "%s [%s]" % (self.message, name)


def _lib():
    return _capi.load()


def status_str(status):
    """The library's short description of a status."""
    return _lib().lm_status_str(int(status)).decode("utf-8", "replace")


def _check(st, err=None, msg=None):
    if st != 0:
        if msg is None and err is not None:
            msg = err.value.decode("utf-8", "replace")
        raise LongMambaError(st, msg or "")


def _errbuf():
    return ctypes.create_string_buffer(_ERR_CAP)


def version():
    """LM_VERSION_NUMBER of the loaded library (major*10000 + minor*100 + patch)."""
    return int(_lib().lm_version())


def version_string():
    return _lib().lm_version_string().decode()


def backend_available(backend):
    """True if the backend ("cpu", "cuda", Backend.X) is compiled in and usable here."""
    return bool(_lib().lm_backend_available(_enum_arg(Backend, backend, "backend")))


def backend_status(backend):
    """(available, reason) for a backend: reason says why CUDA is unusable
    (module libongmamba-cuda.so missing or not loadable, no driver, no
    device); for "auto" it names the backend AUTO would pick."""
    err = _errbuf()
    st = _lib().lm_backend_status(_enum_arg(Backend, backend, "backend"), err, _ERR_CAP)
    if st not in (Status.OK, Status.BACKEND_UNAVAILABLE):
        _check(st, err)
    return st == Status.OK, err.value.decode("utf-8", "replace")


# ---- arrays in and out ----------------------------------------------------------

def _int32_in(values, what="tokens"):
    """(pointer, count, keepalive) for a 1-D sequence of integer ids."""
    if isinstance(values, (str, bytes, bytearray)):
        raise TypeError("%s must be a sequence of integers, not %s" % (what, type(values).__name__))
    if _np is not None:
        a = _np.asarray(values)
        if a.ndim != 1:
            raise ValueError("%s must be one-dimensional, got shape %s" % (what, a.shape))
        if a.size:
            if a.dtype.kind not in "iu":
                raise TypeError("%s must be integers, got dtype %s" % (what, a.dtype))
            lo, hi = int(a.min()), int(a.max())
            if lo < _INT32_MIN or hi > _INT32_MAX:
                bad = lo if lo < _INT32_MIN else hi
                raise LongMambaError(Status.OUT_OF_RANGE,
                                     "%s: id %d does not fit in int32" % (what, bad))
        a = _np.ascontiguousarray(a, dtype=_np.int32)
        return a.ctypes.data_as(POINTER(c_int32)), a.size, a
    vals = []
    for v in values:
        v = operator.index(v)  # TypeError for floats and other non-integers
        if v < _INT32_MIN or v > _INT32_MAX:
            raise LongMambaError(Status.OUT_OF_RANGE, "%s: id %d does not fit in int32" % (what, v))
        vals.append(v)
    arr = (c_int32 * len(vals))(*vals)
    return ctypes.cast(arr, POINTER(c_int32)), len(vals), arr


def _double_in(values):
    """(pointer, count, keepalive) for a 1-D sequence of floats as C doubles."""
    v = [float(x) for x in values]
    keep = (c_double * max(len(v), 1))(*v)
    return ctypes.cast(keep, POINTER(c_double)), len(v), keep


def _int32_out(n):
    if _np is not None:
        a = _np.empty(n, dtype=_np.int32)
        return a.ctypes.data_as(POINTER(c_int32)), a
    arr = (c_int32 * n)()
    return ctypes.cast(arr, POINTER(c_int32)), arr


def _typed_out(ctype, npdtype, n):
    if _np is not None:
        a = _np.empty(n, dtype=npdtype)
        return a.ctypes.data_as(POINTER(ctype)), a
    arr = (ctype * max(n, 1))()
    return ctypes.cast(arr, POINTER(ctype)), arr


def _shape_out(buf, shape, n=None, convert=None):
    """The filled output buffer as an array of `shape` (NumPy) or nested lists."""
    total = 1
    for s in shape:
        total *= s
    if _np is not None:
        a = buf[:total]
        if convert is not None:
            a = a.astype(convert)
        return a.reshape(shape)
    flat = list(buf[:total])
    if convert is bool:
        flat = [bool(v) for v in flat]

    def nest(off, dims):
        if len(dims) == 1:
            return flat[off:off + dims[0]]
        step = 1
        for s in dims[1:]:
            step *= s
        return [nest(off + i * step, dims[1:]) for i in range(dims[0])]
    return nest(0, list(shape))


def _flatten(x, shape, name):
    """Plain-Python flattening of a nested (or already flat) sequence of numbers."""
    total = 1
    for s in shape:
        total *= s

    def is_num(v):
        return isinstance(v, (int, float)) or hasattr(v, "__float__") and not hasattr(v, "__len__")
    seq = list(x)
    if len(seq) == total and all(is_num(v) for v in seq):
        return [float(v) for v in seq]
    if len(shape) > 1 and len(seq) == shape[0]:
        out = []
        for row in seq:
            out += _flatten(row, shape[1:], name)
        return out
    raise ValueError("%s must have shape %s (nested or flat), got %d items" %
                     (name, tuple(shape), len(seq)))


def _float_in(x, shape, name):
    """(pointer, keepalive) for a float32 input of the given shape (or flat of its size)."""
    total = 1
    for s in shape:
        total *= s
    if _np is not None:
        a = _np.ascontiguousarray(x, dtype=_np.float32)
        if a.shape != tuple(shape) and a.shape != (total,):
            raise ValueError("%s must have shape %s, got %s" % (name, tuple(shape), a.shape))
        return a.ctypes.data_as(POINTER(c_float)), a
    vals = _flatten(x, shape, name)
    arr = (c_float * total)(*vals)
    return ctypes.cast(arr, POINTER(c_float)), arr


def _shape2(x, name):
    """(rows, cols) of a 2-D array or nested list."""
    if _np is not None:
        a = _np.asarray(x)
        if a.ndim != 2:
            raise ValueError("%s must be two-dimensional, got shape %s" % (name, a.shape))
        return a.shape
    rows = list(x)
    if not rows or not hasattr(rows[0], "__len__"):
        raise ValueError("%s must be a non-empty nested sequence [rows][cols]" % name)
    return len(rows), len(rows[0])


# ---- callbacks -------------------------------------------------------------------

class _Progress:
    """A Python progress callable as an lm_progress_fn.  The callable gets
    (done, total) and returns a true value to stop; an exception it raises
    also stops the call and is re-raised from it."""

    def __init__(self, fn):
        self.fn = fn
        self.exc = None
        self.c = _capi.lm_progress_fn(self._call) if fn is not None else _capi.lm_progress_fn()

    def _call(self, _user, done, total):
        try:
            return 1 if self.fn(int(done), int(total)) else 0
        except BaseException as e:  # noqa: B902 - re-raised after the C call returns
            self.exc = e
            return 1

    def reraise(self):
        exc, self.exc = self.exc, None
        if exc is not None:
            raise exc


def _log_cfunc(fn):
    if fn is None:
        return _capi.lm_log_fn()

    def call(_user, level, msg):
        fn(_enum(LogLevel, level), msg.decode("utf-8", "replace") if msg else "")
    return _capi.lm_log_fn(call)


# ---- handles ----------------------------------------------------------------------

class _Handle:
    """An owned C handle.  close() is idempotent; a handle that others still
    borrow (a model with open sessions, a calibration a session filters with)
    is freed when the last borrower lets go, never under it."""

    _free_name = None

    def __init__(self):
        self._ptr = None
        self._closing = False
        self._users = 0
        self._hlock = threading.Lock()

    def _acquire(self):
        with self._hlock:
            if self._ptr is None or self._closing:
                raise ValueError("%s is closed" % type(self).__name__)
            self._users += 1

    def _release(self):
        with self._hlock:
            self._users -= 1
            free = self._closing and self._users == 0
        if free:
            self._free()

    def _free(self):
        ptr, self._ptr = self._ptr, None
        if ptr is not None and _capi is not None and _capi._loaded is not None:
            getattr(_capi._loaded, self._free_name)(ptr)

    def _handle(self):
        p = self._ptr
        if p is None or self._closing:
            raise ValueError("%s is closed" % type(self).__name__)
        return p

    @property
    def closed(self):
        return self._ptr is None or self._closing

    def close(self):
        """Releases the handle (deferred while sessions still use it)."""
        with self._hlock:
            if self._ptr is None or self._closing:
                return
            self._closing = True
            free = self._users == 0
        if free:
            self._free()

    def __enter__(self):
        self._handle()
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            # Nothing can still borrow an unreachable handle: borrowers hold references.
            self._free()
        except Exception:
            pass


@dataclass(frozen=True)
class ModelInfo:
    arch: Arch
    dtype: DType
    backend: Backend
    d_model: int
    d_inner: int
    d_state: int
    d_conv: int
    dt_rank: int
    n_layer: int
    vocab_size: int
    n_heads: int
    head_dim: int
    n_groups: int
    n_channels: int
    n_params: int
    tied_embeddings: bool
    n_threads: int
    fingerprint: int
    weights: Weights = Weights.AS_STORED


@dataclass(frozen=True)
class WeightInfo:
    """One weight tensor as the model holds it (lm_weight_info)."""
    name: str        # "embedding", "norm_f", "lm_head", or a layer's "in_proj", "A", ...
    layer: int       # -1 outside the layers
    type: WeightType
    linear: bool     # a linear layer's matrix
    rows: int
    cols: int
    bytes: int
    mapped: bool     # read in place from the file's mapping (else allocated)
    shared: bool     # the same data as an earlier entry (a tied lm_head)


@dataclass(frozen=True)
class CalibrationInfo:
    arch: Arch
    n_layer: int
    n_channels: int
    calib_length: int
    n_windows: int
    n_buckets: int
    clamp: float
    aggregation: Aggregation
    fingerprint: int


@dataclass(frozen=True)
class ScalesInfo:
    mode: Mode
    arch: Arch
    n_layer: int
    target_length: int
    n_windows: int
    iterations: int
    seed: int
    loss_initial: float   # mean next-token cross-entropy at s0
    loss_final: float     # at the returned scales
    with_longmamba: bool
    fingerprint: int


class Model(_Handle):
    """A loaded model (immutable; share it between threads and sessions).

        with longmamba.Model("path/to/model", backend="cpu") as model:
            with model.session() as s:
                logits = s.prefill([1, 2, 3])
    """

    _free_name = "lm_model_free"

    def __init__(self, path, backend="auto", n_threads=0, device=0, log=None,
                 log_level=LogLevel.ERROR, weights=Weights.AS_STORED):
        super().__init__()
        lib = _lib()
        p = _capi.lm_model_params()
        lib.lm_model_params_init(byref(p))
        p.backend = _enum_arg(Backend, backend, "backend")
        p.n_threads = n_threads
        p.device = device
        # The callback must outlive the model: it is kept on the object.
        self._log = _log_cfunc(log)
        p.log_fn = self._log
        p.log_level = _enum_arg(LogLevel, log_level, "log level")
        p.weights = _enum_arg(Weights, weights, "weight format")
        out = ctypes.c_void_p()
        err = _errbuf()
        _check(lib.lm_model_load(os.fsencode(path), byref(p), byref(out), err, _ERR_CAP), err)
        self._ptr = out.value
        info = _capi.lm_model_info()
        info.struct_size = ctypes.sizeof(info)
        _check(lib.lm_model_get_info(self._ptr, byref(info)))
        self.info = ModelInfo(
            arch=_enum(Arch, info.arch), dtype=_enum(DType, info.dtype),
            backend=_enum(Backend, info.backend), d_model=info.d_model, d_inner=info.d_inner,
            d_state=info.d_state, d_conv=info.d_conv, dt_rank=info.dt_rank,
            n_layer=info.n_layer, vocab_size=info.vocab_size, n_heads=info.n_heads,
            head_dim=info.head_dim, n_groups=info.n_groups, n_channels=info.n_channels,
            n_params=info.n_params, tied_embeddings=bool(info.tied_embeddings),
            n_threads=info.n_threads, fingerprint=info.fingerprint,
            weights=_enum(Weights, info.weights))

    def weights_info(self):
        """Every weight tensor as the model holds it: a list of WeightInfo
        (embedding, norm_f, lm_head, then per layer its norm and mixer)."""
        lib = _lib()
        n = ctypes.c_size_t()
        err = _errbuf()
        _check(lib.lm_model_weight_count(self._ptr, byref(n), err, _ERR_CAP), err)
        out = []
        for k in range(n.value):
            w = _capi.lm_weight_info()
            w.struct_size = ctypes.sizeof(w)
            _check(lib.lm_model_weight_info(self._ptr, k, byref(w), err, _ERR_CAP), err)
            out.append(WeightInfo(
                name=w.name.decode("ascii"), layer=w.layer, type=_enum(WeightType, w.type),
                linear=bool(w.linear), rows=w.rows, cols=w.cols, bytes=w.bytes,
                mapped=bool(w.mapped), shared=bool(w.shared)))
        return out

    @property
    def vocab_size(self):
        return self.info.vocab_size

    def session(self, **kwargs):
        """A new Session on this model (see Session for the arguments)."""
        return Session(self, **kwargs)

    def calibrate(self, windows, aggregation=Aggregation.MAX, clamp=0.0, buckets=None,
                  progress=None, a_log_scales=None):
        """LongMamba calibration over token windows (a sequence of id sequences);
        with a_log_scales (one per layer), of the model under Mamba Modulation
        (for Session.set_modulation with the same scales)."""
        return Calibration._compute(self, windows, aggregation, clamp, buckets, progress,
                                    a_log_scales)

    def calibrate_scales(self, mode, windows, iterations=0, seed=0, progress=None,
                         calibration=None, theta=0.0, threshold_scale=0.0, trigger_length=0):
        """Per-layer scales of Mode.MAMBAEXTEND or Mode.MODULATION by SPSA
        (lm_scales_calibrate): iterations 0 = the library's default; with a
        calibration (MambaExtend only) LongMamba's filter is on."""
        return Scales._compute(self, mode, windows, iterations, seed, progress, calibration,
                               theta, threshold_scale, trigger_length)

    def __repr__(self):
        if self.closed:
            return "<longmamba.Model closed>"
        i = self.info
        return "<longmamba.Model %s %d layers, d_model %d, vocab %d, %s>" % (
            getattr(i.arch, "name", i.arch), i.n_layer, i.d_model, i.vocab_size,
            getattr(i.backend, "name", i.backend).lower())


class Calibration(_Handle):
    """LongMamba calibration statistics (immutable, shareable)."""

    _free_name = "lm_calibration_free"

    def __init__(self, _ptr):
        super().__init__()
        self._ptr = _ptr
        lib = _lib()
        ci = _capi.lm_calibration_info()
        ci.struct_size = ctypes.sizeof(ci)
        _check(lib.lm_calibration_get_info(self._ptr, byref(ci)))
        self.info = CalibrationInfo(
            arch=_enum(Arch, ci.arch), n_layer=ci.n_layer, n_channels=ci.n_channels,
            calib_length=ci.calib_length, n_windows=ci.n_windows, n_buckets=ci.n_buckets,
            clamp=ci.clamp, aggregation=_enum(Aggregation, ci.aggregation),
            fingerprint=ci.fingerprint)

    @classmethod
    def _compute(cls, model, windows, aggregation, clamp, buckets, progress, a_log_scales=None):
        lib = _lib()
        wins = [_int32_in(w, "window %d" % i) for i, w in enumerate(windows)]
        ptrs = (POINTER(c_int32) * max(len(wins), 1))(*[w[0] for w in wins])
        lens = (c_size_t * max(len(wins), 1))(*[w[1] for w in wins])
        p = _capi.lm_calib_params()
        lib.lm_calib_params_init(byref(p))
        p.aggregation = _enum_arg(Aggregation, aggregation, "aggregation")
        p.clamp = float(clamp)
        keep = None
        if buckets is not None:
            bk = [operator.index(b) for b in buckets]
            keep = (c_int64 * max(len(bk), 1))(*bk)
            p.buckets = ctypes.cast(keep, POINTER(c_int64))
            p.n_buckets = len(bk)
        skeep = None
        if a_log_scales is not None:
            p.a_log_scales, p.n_a_log_scales, skeep = _double_in(a_log_scales)
        prog = _Progress(progress)
        p.progress = prog.c
        out = ctypes.c_void_p()
        err = _errbuf()
        model._acquire()
        try:
            st = lib.lm_calibrate(model._ptr, ptrs, lens, len(wins), byref(p), byref(out), err,
                                  _ERR_CAP)
        finally:
            model._release()
        del keep, wins, skeep
        prog.reraise()
        _check(st, err)
        return cls(out.value)

    @classmethod
    def load(cls, path, model=None):
        """Loads a calibration file; with a model it must belong to that model."""
        lib = _lib()
        out = ctypes.c_void_p()
        err = _errbuf()
        mptr = model._handle() if model is not None else None
        _check(lib.lm_calibration_load(os.fsencode(path), mptr, byref(out), err, _ERR_CAP), err)
        return cls(out.value)

    def save(self, path):
        err = _errbuf()
        _check(_lib().lm_calibration_save(self._handle(), os.fsencode(path), err, _ERR_CAP), err)

    @property
    def buckets(self):
        n = self.info.n_buckets
        ptr, buf = _typed_out(c_int64, "int64", n)
        _check(_lib().lm_calibration_get_buckets(self._handle(), ptr, n))
        return _shape_out(buf, (n,))

    def log_decay(self, layer):
        """Natural log of each channel's cumulative decay over the calibration length."""
        n = self.info.n_channels
        ptr, buf = _typed_out(c_double, "float64", n)
        st = _lib().lm_calibration_get_log_decay(self._handle(), int(layer), ptr, n)
        _check(st, msg="log_decay: layer %d of %d" % (layer, self.info.n_layer) if st else None)
        return _shape_out(buf, (n,))

    def thresholds(self, layer, bucket):
        """Unscaled token-filter thresholds of one layer and length bucket."""
        n = self.info.n_channels
        ptr, buf = _typed_out(c_float, "float32", n)
        st = _lib().lm_calibration_get_thresholds(self._handle(), int(layer), int(bucket), ptr, n)
        _check(st, msg="thresholds: layer %d of %d, bucket %d of %d" % (
            layer, self.info.n_layer, bucket, self.info.n_buckets) if st else None)
        return _shape_out(buf, (n,))

    def classify_channels(self, theta):
        """(mask, counts): mask[layer][channel] is True for global channels
        (cumulative decay > theta), counts[layer] the number of global channels."""
        nl, nc = self.info.n_layer, self.info.n_channels
        mptr, mbuf = _typed_out(c_uint8, "uint8", nl * nc)
        cptr, cbuf = _typed_out(c_int64, "int64", nl)
        err = _errbuf()
        _check(_lib().lm_classify_channels(self._handle(), float(theta), mptr, nl * nc, cptr, nl,
                                           err, _ERR_CAP), err)
        return _shape_out(mbuf, (nl, nc), convert=bool), _shape_out(cbuf, (nl,))

    def __repr__(self):
        if self.closed:
            return "<longmamba.Calibration closed>"
        i = self.info
        return "<longmamba.Calibration %d layers x %d channels, length %d, %d buckets>" % (
            i.n_layer, i.n_channels, i.calib_length, i.n_buckets)


class Scales(_Handle):
    """MambaExtend / Modulation scales from SPSA (immutable).  .scales go to
    Session.set_mambaextend / set_modulation."""

    _free_name = "lm_scales_free"

    def __init__(self, _ptr):
        super().__init__()
        self._ptr = _ptr
        i = _capi.lm_scales_info()
        i.struct_size = ctypes.sizeof(i)
        _check(_lib().lm_scales_get_info(self._ptr, byref(i)))
        self.info = ScalesInfo(
            mode=_enum(Mode, i.mode), arch=_enum(Arch, i.arch), n_layer=i.n_layer,
            target_length=i.target_length, n_windows=i.n_windows, iterations=i.iterations,
            seed=i.seed, loss_initial=i.loss_initial, loss_final=i.loss_final,
            with_longmamba=bool(i.with_longmamba), fingerprint=i.fingerprint)

    @classmethod
    def _compute(cls, model, mode, windows, iterations, seed, progress, calibration, theta,
                 threshold_scale, trigger_length):
        lib = _lib()
        wins = [_int32_in(w, "window %d" % i) for i, w in enumerate(windows)]
        ptrs = (POINTER(c_int32) * max(len(wins), 1))(*[w[0] for w in wins])
        lens = (c_size_t * max(len(wins), 1))(*[w[1] for w in wins])
        p = _capi.lm_spsa_params()
        lib.lm_spsa_params_init(byref(p))
        p.iterations = int(iterations)
        p.seed = int(seed)
        prog = _Progress(progress)
        p.progress = prog.c
        lp = _capi.lm_longmamba_params()
        lib.lm_longmamba_params_init(byref(lp))
        lp.theta, lp.threshold_scale = float(theta), float(threshold_scale)
        lp.trigger_length = int(trigger_length)
        p.longmamba_params = ctypes.pointer(lp)
        out = ctypes.c_void_p()
        err = _errbuf()
        model._acquire()
        if calibration is not None:
            calibration._acquire()
            p.longmamba = calibration._ptr
        try:
            st = lib.lm_scales_calibrate(model._ptr, _enum_arg(Mode, mode, "mode"), ptrs, lens,
                                         len(wins), byref(p), byref(out), err, _ERR_CAP)
        finally:
            if calibration is not None:
                calibration._release()
            model._release()
        del wins
        prog.reraise()
        _check(st, err)
        return cls(out.value)

    @classmethod
    def load(cls, path, model=None):
        """Loads a scales file; with a model it must belong to that model."""
        out = ctypes.c_void_p()
        err = _errbuf()
        mptr = model._handle() if model is not None else None
        _check(_lib().lm_scales_load(os.fsencode(path), mptr, byref(out), err, _ERR_CAP), err)
        return cls(out.value)

    def save(self, path):
        err = _errbuf()
        _check(_lib().lm_scales_save(self._handle(), os.fsencode(path), err, _ERR_CAP), err)

    def _get(self, initial):
        n = self.info.n_layer
        buf = (c_double * n)()
        ptr = ctypes.cast(buf, POINTER(c_double))
        _check(_lib().lm_scales_get(self._handle(), None if initial else ptr,
                                    ptr if initial else None, n))
        return list(buf)

    @property
    def scales(self):
        """The calibrated scales, one per layer (a list of floats)."""
        return self._get(False)

    @property
    def initial_scales(self):
        """SPSA's s0."""
        return self._get(True)

    def __repr__(self):
        if self.closed:
            return "<longmamba.Scales closed>"
        i = self.info
        return "<longmamba.Scales %s %d layers, length %d, loss %.4f -> %.4f>" % (
            getattr(i.mode, "name", i.mode).lower(), i.n_layer, i.target_length, i.loss_initial,
            i.loss_final)


def classify_channels(calibration, theta):
    """lm_classify_channels: see Calibration.classify_channels."""
    return calibration.classify_channels(theta)


@contextlib.contextmanager
def _batch_locks(sessions):
    """Every session's lock, always taken in the same order (no deadlock with
    another batch call over an overlapping set)."""
    for s in sessions:
        if not isinstance(s, Session):
            raise TypeError("a batch takes Session objects")
    locks = sorted({id(s): s._lock for s in sessions}.items())
    for _, lk in locks:
        lk.acquire()
    try:
        yield
    finally:
        for _, lk in reversed(locks):
            lk.release()


def decode_batch(sessions, tokens, logits=True):
    """One decode step for several sessions of one model at once
    (lm_session_decode_batch): sessions[i] consumes tokens[i].  Returns the
    logits [len(sessions), vocab_size] (None with logits=False).  The CUDA
    backend reads the weights once for the whole batch."""
    sessions = list(sessions)
    n = len(sessions)
    if n == 0:
        return None
    with _batch_locks(sessions):
        ptrs = (ctypes.c_void_p * n)(*[s._handle() for s in sessions])
        tptr, nt, keep = _int32_in(tokens)
        if nt != n:
            raise ValueError("%d sessions but %d tokens" % (n, nt))
        V = sessions[0]._vocab
        lptr, buf = _typed_out(c_float, "float32", n * V) if logits else (None, None)
        st = _lib().lm_session_decode_batch(ptrs, n, tptr, lptr, n * V if logits else 0)
        del keep
        if st:
            sessions[0]._fail(st)
        return _shape_out(buf, (n, V)) if logits else None


def prefill_batch(sessions, prompts, logits=True):
    """Several sessions' prompts prefilled together (lm_session_prefill_batch):
    sessions[i] (distinct, one model, each at its own position) consumes
    prompts[i], a sequence of token ids; lengths may differ.  The prompts
    run packed back to back (no padding), the same as sessions[i].prefill
    (prompts[i]) each up to rounding.  Returns the logits of each prompt's
    last token [len(sessions), vocab_size] (None with logits=False).  On an
    error no session moves."""
    sessions = list(sessions)
    prompts = list(prompts)
    n = len(sessions)
    if len(prompts) != n:
        raise ValueError("%d sessions but %d prompts" % (n, len(prompts)))
    if n == 0:
        return None
    with _batch_locks(sessions):
        ptrs = (ctypes.c_void_p * n)(*[s._handle() for s in sessions])
        tptrs = (POINTER(c_int32) * n)()
        lens = (c_size_t * n)()
        keep = []
        for i, p in enumerate(prompts):
            tptrs[i], lens[i], k = _int32_in(p, "prompts[%d]" % i)
            keep.append(k)
        V = sessions[0]._vocab
        lptr, buf = _typed_out(c_float, "float32", n * V) if logits else (None, None)
        st = _lib().lm_session_prefill_batch(ptrs, n, tptrs, lens, lptr, n * V if logits else 0)
        del keep
        if st:
            sessions[0]._fail(st)
        return _shape_out(buf, (n, V)) if logits else None


def decode_sample(sessions, tokens):
    """One decode step for several sessions of one model, each drawing its
    next token with its own sampler (Session.set_sampling) inside the
    library (lm_session_decode_sample): sessions[i] consumes tokens[i].
    Returns (next, logits): next[i] is sessions[i]'s token (int32), logits[i]
    its logits row [vocab_size] when it samples with return_logits=True,
    else None.  On an error no session moves."""
    sessions = list(sessions)
    n = len(sessions)
    with _batch_locks(sessions):
        handles = [s._handle() for s in sessions]
        tptr, nt, keep = _int32_in(tokens)
        if nt != n:
            raise ValueError("%d sessions but %d tokens" % (n, nt))
        if n == 0:
            return _shape_out(_typed_out(c_int32, "int32", 0)[1], (0,)), []
        ptrs = (ctypes.c_void_p * n)(*handles)
        want = [s._return_logits for s in sessions]
        V = sessions[0]._vocab
        nptr, nbuf = _typed_out(c_int32, "int32", n)
        lptr, lbuf = _typed_out(c_float, "float32", n * V) if any(want) else (None, None)
        st = _lib().lm_session_decode_sample(ptrs, n, tptr, nptr, lptr, n * V if any(want) else 0)
        del keep
        if st:
            sessions[0]._fail(st)
        rows = _shape_out(lbuf, (n, V)) if any(want) else None
        return _shape_out(nbuf, (n,)), [rows[i] if want[i] else None for i in range(n)]


class Session(_Handle):
    """Recurrent state over one model: prefill, decode, modes, state blobs.

    A session serves one thread at a time; calls from several threads are
    serialized by a lock.  Arguments: chunk_size (prefill tokens per chunk,
    0 = default), allow_tf32 (CUDA), progress(done, total) -> true to stop.
    """

    _free_name = "lm_session_free"

    def __init__(self, model, chunk_size=0, allow_tf32=False, progress=None):
        super().__init__()
        lib = _lib()
        self._lock = threading.RLock()
        p = _capi.lm_session_params()
        lib.lm_session_params_init(byref(p))
        if chunk_size:
            p.chunk_size = chunk_size
        if allow_tf32:
            p.flags |= _capi.LM_SESSION_ALLOW_TF32
        self._progress = _Progress(progress)
        p.progress = self._progress.c
        out = ctypes.c_void_p()
        err = _errbuf()
        model._acquire()
        try:
            st = lib.lm_session_create(model._ptr, byref(p), byref(out), err, _ERR_CAP)
            _check(st, err)
        except BaseException:
            model._release()
            raise
        self._ptr = out.value
        self.model = model
        self._vocab = model.info.vocab_size
        self._calib = None
        self.mode = Mode.VANILLA
        self._return_logits = False

    def _free(self):
        with self._lock:
            had = self._ptr is not None
            super()._free()
            if had:
                self._set_calib(None)
                self.model._release()

    def _set_calib(self, calib):
        old, self._calib = self._calib, calib
        if old is not None:
            old._release()

    def _fail(self, st):
        msg = _lib().lm_session_last_error(self._ptr)
        self._progress.reraise()
        raise LongMambaError(st, msg.decode("utf-8", "replace") if msg else "")

    def prefill(self, tokens, n_logits=1):
        """Feeds tokens; returns the logits of the last n_logits positions as
        [n_logits, vocab_size] float32 ("all" = every position; 0 = None)."""
        with self._lock:
            h = self._handle()
            tptr, n, keep = _int32_in(tokens)
            if n_logits == "all":
                n_logits = n
            n_logits = operator.index(n_logits)
            if n_logits < 0:
                raise ValueError("n_logits must be >= 0")
            V = self._vocab
            if n_logits > n:  # let the library say so, without allocating a huge buffer
                lptr, buf, cap = None, None, 0
            elif n_logits:
                lptr, buf = _typed_out(c_float, "float32", n_logits * V)
                cap = n_logits * V
            else:
                lptr, buf, cap = None, None, 0
            st = _lib().lm_session_prefill(h, tptr, n, n_logits, lptr, cap)
            del keep
            if st:
                self._fail(st)
            return _shape_out(buf, (n_logits, V)) if n_logits else None

    def decode(self, token, logits=True):
        """One token; returns its logits [vocab_size] (None with logits=False)."""
        with self._lock:
            h = self._handle()
            token = operator.index(token)
            if token < _INT32_MIN or token > _INT32_MAX:
                raise LongMambaError(Status.OUT_OF_RANGE, "token %d does not fit in int32" % token)
            V = self._vocab
            lptr, buf = _typed_out(c_float, "float32", V) if logits else (None, None)
            st = _lib().lm_session_decode(h, token, lptr, V if logits else 0)
            if st:
                self._fail(st)
            return _shape_out(buf, (V,)) if logits else None

    def reset(self):
        """Zero state, position 0; the mode is kept."""
        with self._lock:
            st = _lib().lm_session_reset(self._handle())
            if st:
                self._fail(st)

    @property
    def position(self):
        """Tokens consumed since creation or the last reset."""
        with self._lock:
            return int(_lib().lm_session_position(self._handle()))

    def set_length_hint(self, total_tokens):
        with self._lock:
            st = _lib().lm_session_set_length_hint(self._handle(), int(total_tokens))
            if st:
                self._fail(st)

    def set_vanilla(self):
        with self._lock:
            st = _lib().lm_session_set_vanilla(self._handle())
            if st:
                self._fail(st)
            self._set_calib(None)
            self.mode = Mode.VANILLA

    def set_longmamba(self, calibration, theta=0.0, threshold_scale=0.0, trigger_length=0):
        """LongMamba mode from the next prefill (0 = the library's default for each value)."""
        with self._lock:
            h = self._handle()
            lib = _lib()
            p = _capi.lm_longmamba_params()
            lib.lm_longmamba_params_init(byref(p))
            if theta:
                p.theta = float(theta)
            if threshold_scale:
                p.threshold_scale = float(threshold_scale)
            if trigger_length:
                p.trigger_length = int(trigger_length)
            # The session borrows the calibration until its mode changes or it closes.
            calibration._acquire()
            st = lib.lm_session_set_longmamba(h, calibration._ptr, byref(p))
            if st:
                calibration._release()
                self._fail(st)
            self._set_calib(calibration)
            self.mode = Mode.LONGMAMBA

    def _set_scaled(self, mode, scales, calibration, theta, threshold_scale, trigger_length):
        with self._lock:
            h = self._handle()
            lib = _lib()
            if mode == Mode.MAMBAEXTEND:
                p, init, setter = (_capi.lm_mambaextend_params(), lib.lm_mambaextend_params_init,
                                   lib.lm_session_set_mambaextend)
            else:
                p, init, setter = (_capi.lm_modulation_params(), lib.lm_modulation_params_init,
                                   lib.lm_session_set_modulation)
            init(byref(p))
            p.scales, p.n_scales, keep = _double_in(scales)
            lp = _capi.lm_longmamba_params()
            lib.lm_longmamba_params_init(byref(lp))
            lp.theta, lp.threshold_scale = float(theta), float(threshold_scale)
            lp.trigger_length = int(trigger_length)
            p.longmamba_params = ctypes.pointer(lp)
            if calibration is not None:
                # borrowed until the mode changes or the session closes
                calibration._acquire()
                p.longmamba = calibration._ptr
            st = setter(h, byref(p))
            del keep
            if st:
                if calibration is not None:
                    calibration._release()
                self._fail(st)
            self._set_calib(calibration)
            self.mode = mode

    def set_mambaextend(self, scales, calibration=None, theta=0.0, threshold_scale=0.0,
                        trigger_length=0):
        """MambaExtend from the next prefill: Δ of layer l times scales[l] (one
        per layer, > 0).  With a (vanilla) calibration, LongMamba's filter too,
        decided on the unscaled Δ (0 = LongMamba's defaults)."""
        self._set_scaled(Mode.MAMBAEXTEND, scales, calibration, theta, threshold_scale,
                         trigger_length)

    def set_modulation(self, scales, calibration=None, theta=0.0, threshold_scale=0.0,
                       trigger_length=0):
        """Mamba Modulation from the next prefill: layer l runs with
        A' = -exp(scales[l] * A_log).  With LongMamba the calibration must come
        from Model.calibrate(..., a_log_scales=scales)."""
        self._set_scaled(Mode.MODULATION, scales, calibration, theta, threshold_scale,
                         trigger_length)

    def set_decimamba(self, layers=None, l_base=0, beta=0.0, min_len=0, protect=0):
        """DeciMamba mode from the next prefill (0 / None = the library's defaults)."""
        with self._lock:
            h = self._handle()
            lib = _lib()
            p = _capi.lm_decimamba_params()
            lib.lm_decimamba_params_init(byref(p))
            keep = None
            if layers is not None:
                lp, n, keep = _int32_in(layers, "layers")
                p.layers = lp
                p.n_layers = n
            if l_base:
                p.l_base = int(l_base)
            if beta:
                p.beta = float(beta)
            if min_len:
                p.min_len = int(min_len)
            if protect:
                p.protect = int(protect)
            st = lib.lm_session_set_decimamba(h, byref(p))
            del keep
            if st:
                self._fail(st)
            self._set_calib(None)
            self.mode = Mode.DECIMAMBA

    def set_sampling(self, temperature=0.0, top_k=0, top_p=1.0, seed=0, return_logits=False):
        """How decode_sample draws this session's next token
        (lm_session_set_sampling): temperature <= 0 is greedy (argmax, ties
        to the lowest id); top_k 0 keeps every id; top_p 0 or 1 is off; the
        draw at a position depends only on (seed, position).  With
        return_logits, decode_sample returns this session's logits row too.
        The defaults are greedy; reset and load_state keep the sampler."""
        top_k, seed = operator.index(top_k), operator.index(seed)
        if not _INT32_MIN <= top_k <= _INT32_MAX:
            raise LongMambaError(Status.OUT_OF_RANGE, "top_k %d does not fit in int32" % top_k)
        if not 0 <= seed < 1 << 64:
            raise ValueError("seed must be in [0, 2**64)")
        with self._lock:
            h = self._handle()
            lib = _lib()
            p = _capi.lm_sampling_params()
            lib.lm_sampling_params_init(byref(p))
            p.temperature = float(temperature)
            p.top_k = top_k
            p.top_p = float(top_p)
            p.seed = seed
            if return_logits:
                p.flags |= _capi.LM_SAMPLE_RETURN_LOGITS
            st = lib.lm_session_set_sampling(h, byref(p))
            if st:
                self._fail(st)
            self._return_logits = bool(return_logits)

    def state_size(self):
        """Bytes of the state blob."""
        with self._lock:
            n = c_size_t()
            st = _lib().lm_session_state_size(self._handle(), byref(n))
            if st:
                self._fail(st)
            return n.value

    def save_state(self):
        """The recurrent state (and position) as bytes, for load_state()."""
        with self._lock:
            n = self.state_size()
            buf = ctypes.create_string_buffer(max(n, 1))
            written = c_size_t()
            st = _lib().lm_session_state_save(self._handle(), buf, n, byref(written))
            if st:
                self._fail(st)
            return buf.raw[:written.value]

    def load_state(self, blob):
        with self._lock:
            data = bytes(blob)
            st = _lib().lm_session_state_load(self._handle(), c_char_p(data), len(data))
            if st:
                self._fail(st)

    def __repr__(self):
        if self.closed:
            return "<longmamba.Session closed>"
        return "<longmamba.Session %s at position %d>" % (self.mode.name.lower(), self.position)


def default_theta(arch):
    """The theta LongMamba uses on an architecture when none is given."""
    return float(_lib().lm_longmamba_default_theta(_enum_arg(Arch, arch, "arch")))


@dataclass(frozen=True)
class TensorInfo:
    dtype: DType
    shape: tuple


class TensorFile(_Handle):
    """Read access to the tensors of a safetensors file, through the
    library's validating reader (e.g. reference logits)."""

    _free_name = "lm_tensor_file_free"
    # read(as_=...): C reader, ctypes type, NumPy dtype
    _READERS = {"f64": ("lm_tensor_file_read_f64", c_double, "float64"),
                "f32": ("lm_tensor_file_read_f32", c_float, "float32"),
                "i32": ("lm_tensor_file_read_i32", c_int32, "int32")}

    def __init__(self, path):
        super().__init__()
        out = ctypes.c_void_p()
        err = _errbuf()
        _check(_lib().lm_tensor_file_open(os.fsencode(path), byref(out), err, _ERR_CAP), err)
        self._ptr = out.value

    @property
    def names(self):
        """Tensor names in the header's order."""
        lib, h = _lib(), self._handle()
        return [lib.lm_tensor_file_name(h, i).decode("utf-8", "replace")
                for i in range(lib.lm_tensor_file_count(h))]

    def info(self, name):
        ti = _capi.lm_tensor_info()
        ti.struct_size = ctypes.sizeof(ti)
        err = _errbuf()
        _check(_lib().lm_tensor_file_get_info(self._handle(), name.encode(), byref(ti), err,
                                             _ERR_CAP), err)
        return TensorInfo(dtype=_enum(DType, ti.dtype), shape=tuple(ti.shape[:ti.ndim]))

    def read(self, name, as_="f64"):
        """The tensor converted to float64 ("f64"), float32 ("f32") or int32
        ("i32"), shaped: a NumPy array, or nested lists without NumPy."""
        if as_ not in self._READERS:
            raise ValueError("as_ must be one of %s, not %r" % (", ".join(self._READERS), as_))
        fn, ctype, npdtype = self._READERS[as_]
        shape = self.info(name).shape
        n = 1
        for d in shape:
            n *= d
        ptr, buf = _typed_out(ctype, npdtype, n)
        err = _errbuf()
        _check(getattr(_lib(), fn)(self._handle(), name.encode(), ptr, n, err, _ERR_CAP), err)
        if not shape:  # a scalar
            return _shape_out(buf, (1,), 1)[0]
        return _shape_out(buf, shape, n)


class Tokenizer(_Handle):
    """Byte-level BPE tokenizer from a tokenizer.json (or a model directory holding one)."""

    _free_name = "lm_tokenizer_free"

    def __init__(self, path):
        super().__init__()
        out = ctypes.c_void_p()
        err = _errbuf()
        _check(_lib().lm_tokenizer_load(os.fsencode(path), byref(out), err, _ERR_CAP), err)
        self._ptr = out.value

    @property
    def vocab_size(self):
        return int(_lib().lm_tokenizer_vocab_size(self._handle()))

    def encode(self, text):
        """Ids of text (str, encoded as UTF-8, or bytes): int32 array or list."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        text = bytes(text)
        lib = _lib()
        h = self._handle()
        cap = len(text) + 8
        for _ in range(3):
            ptr, buf = _int32_out(cap)
            n = c_size_t()
            err = _errbuf()
            st = lib.lm_tokenizer_encode(h, text, len(text), ptr, cap, byref(n), err, _ERR_CAP)
            if st == Status.BUFFER_TOO_SMALL and n.value > cap:
                cap = n.value  # the size protocol: n_ids is what is needed
                continue
            _check(st, err)
            return buf[:n.value] if _np is not None else list(buf[:n.value])
        raise LongMambaError(Status.BUFFER_TOO_SMALL, "encode: the needed size kept growing")

    def decode_bytes(self, ids):
        """The UTF-8 bytes of ids (may split a character between calls)."""
        ptr, n, keep = _int32_in(ids, "ids")
        lib = _lib()
        h = self._handle()
        cap = 16 * n + 16
        for _ in range(3):
            buf = ctypes.create_string_buffer(cap)
            nb = c_size_t()
            err = _errbuf()
            st = lib.lm_tokenizer_decode(h, ptr, n, buf, cap, byref(nb), err, _ERR_CAP)
            if st == Status.BUFFER_TOO_SMALL and nb.value > cap:
                cap = nb.value
                continue
            _check(st, err)
            del keep
            return buf.raw[:nb.value]
        raise LongMambaError(Status.BUFFER_TOO_SMALL, "decode: the needed size kept growing")

    def decode(self, ids, errors="replace"):
        """Text of ids (invalid UTF-8 handled by `errors`, as in bytes.decode)."""
        return self.decode_bytes(ids).decode("utf-8", errors)


# ---- the filtered selective scan ---------------------------------------------------

def scan_filtered(u, delta, A, B, C, *, D=None, z=None, dt_bias=None, delta_is_dt=False,
                  global_mask=None, thresholds=None, state_in=None, return_state=False,
                  n_threads=0):
    """Mamba-1 selective scan of one sequence with LongMamba token filtering
    (lm_scan_filtered).  Shapes: u, delta, z: [length, channels]; B, C:
    [length, state_size]; A: [channels, state_size]; D, dt_bias, thresholds,
    global_mask: [channels]; state_in: [channels, state_size].  Returns y
    [length, channels], or (y, state_out) with return_state=True."""
    L, E = _shape2(u, "u")
    E2, N = _shape2(A, "A")
    if E2 != E:
        raise ValueError("A has %d rows but u has %d channels" % (E2, E))
    lib = _lib()
    a = _capi.lm_scan_args()
    lib.lm_scan_args_init(byref(a))
    a.length, a.channels, a.state_size = L, E, N
    keep = []

    def put(field, x, shape):
        if x is not None:
            ptr, k = _float_in(x, shape, field)
            keep.append(k)
            setattr(a, field, ptr)
    put("u", u, (L, E))
    put("delta", delta, (L, E))
    put("A", A, (E, N))
    put("B", B, (L, N))
    put("C", C, (L, N))
    put("D", D, (E,))
    put("z", z, (L, E))
    put("dt_bias", dt_bias, (E,))
    put("thresholds", thresholds, (E,))
    put("state_in", state_in, (E, N))
    a.delta_is_dt = 1 if delta_is_dt else 0
    if global_mask is not None:
        if _np is not None:
            m = _np.ascontiguousarray(_np.asarray(global_mask) != 0, dtype=_np.uint8)
            if m.shape != (E,):
                raise ValueError("global_mask must have shape (%d,), got %s" % (E, m.shape))
            a.global_mask = m.ctypes.data_as(POINTER(c_uint8))
        else:
            vals = [1 if v else 0 for v in global_mask]
            if len(vals) != E:
                raise ValueError("global_mask must have %d entries, got %d" % (E, len(vals)))
            m = (c_uint8 * E)(*vals)
            a.global_mask = ctypes.cast(m, POINTER(c_uint8))
        keep.append(m)
    yptr, ybuf = _typed_out(c_float, "float32", L * E)
    a.y = yptr
    if return_state:
        sptr, sbuf = _typed_out(c_float, "float32", E * N)
        a.state_out = sptr
    a.n_threads = n_threads
    err = _errbuf()
    _check(lib.lm_scan_filtered(byref(a), err, _ERR_CAP), err)
    del keep
    y = _shape_out(ybuf, (L, E))
    if return_state:
        return y, _shape_out(sbuf, (E, N))
    return y

