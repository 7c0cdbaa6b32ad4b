"""ctypes declarations of include/longmamba.h and the library loader.

Everything here mirrors the C header one to one; the Pythonic layer is in
_core.py.  The structs must match the C layout exactly: the tests compare
ctypes.sizeof() with the struct_size the C *_init() functions write.
"""

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int,
                    c_int32, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)

#: The major version this binding was written against (LM_VERSION_MAJOR).
ABI_MAJOR = 0

# ---- types -------------------------------------------------------------------

lm_status = c_int     # C enums are int-sized on every ABI the library supports
lm_enum = c_int

lm_log_fn = CFUNCTYPE(None, c_void_p, c_int, c_char_p)
lm_progress_fn = CFUNCTYPE(c_int, c_void_p, c_int64, c_int64)


class lm_model_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("backend", lm_enum),
        ("n_threads", c_int32),
        ("device", c_int32),
        ("log_fn", lm_log_fn),
        ("log_user", c_void_p),
        ("log_level", lm_enum),
        ("weights", lm_enum),  # lm_weight_format (added after 0.2.0)
    ]


class lm_model_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("arch", lm_enum),
        ("dtype", lm_enum),
        ("backend", lm_enum),
        ("d_model", c_int64),
        ("d_inner", c_int64),
        ("d_state", c_int64),
        ("d_conv", c_int64),
        ("dt_rank", c_int64),
        ("n_layer", c_int64),
        ("vocab_size", c_int64),
        ("n_heads", c_int64),
        ("head_dim", c_int64),
        ("n_groups", c_int64),
        ("n_channels", c_int64),
        ("n_params", c_int64),
        ("tied_embeddings", c_int32),
        ("n_threads", c_int32),
        ("fingerprint", c_uint64),
        ("weights", lm_enum),  # lm_weight_format as loaded (added after 0.2.0)
    ]


class lm_weight_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("name", c_char_p),
        ("layer", c_int64),
        ("type", lm_enum),
        ("linear", c_int32),
        ("rows", c_int64),
        ("cols", c_int64),
        ("bytes", c_uint64),
        ("mapped", c_int32),
        ("shared", c_int32),
    ]


class lm_calib_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("aggregation", lm_enum),
        ("clamp", c_double),
        ("buckets", POINTER(c_int64)),
        ("n_buckets", c_size_t),
        ("progress", lm_progress_fn),
        ("progress_user", c_void_p),
        ("a_log_scales", POINTER(c_double)),
        ("n_a_log_scales", c_size_t),
    ]


class lm_calibration_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("arch", lm_enum),
        ("n_layer", c_int64),
        ("n_channels", c_int64),
        ("calib_length", c_int64),
        ("n_windows", c_int64),
        ("n_buckets", c_int64),
        ("clamp", c_double),
        ("aggregation", lm_enum),
        ("fingerprint", c_uint64),
    ]


class lm_scan_args(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("length", c_int64),
        ("channels", c_int64),
        ("state_size", c_int64),
        ("u", POINTER(c_float)),
        ("delta", POINTER(c_float)),
        ("delta_is_dt", c_int32),
        ("dt_bias", POINTER(c_float)),
        ("A", POINTER(c_float)),
        ("B", POINTER(c_float)),
        ("C", POINTER(c_float)),
        ("D", POINTER(c_float)),
        ("z", POINTER(c_float)),
        ("thresholds", POINTER(c_float)),
        ("global_mask", POINTER(c_uint8)),
        ("state_in", POINTER(c_float)),
        ("state_out", POINTER(c_float)),
        ("y", POINTER(c_float)),
        ("n_threads", c_int32),
    ]


class lm_session_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("chunk_size", c_int64),
        ("flags", c_uint32),
        ("log_fn", lm_log_fn),
        ("log_user", c_void_p),
        ("progress", lm_progress_fn),
        ("progress_user", c_void_p),
    ]


class lm_longmamba_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("theta", c_double),
        ("threshold_scale", c_double),
        ("trigger_length", c_int64),
    ]


class lm_decimamba_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("layers", POINTER(c_int32)),
        ("n_layers", c_size_t),
        ("l_base", c_int64),
        ("beta", c_double),
        ("min_len", c_int64),
        ("protect", c_int64),
    ]


class lm_mambaextend_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("scales", POINTER(c_double)),
        ("n_scales", c_size_t),
        ("longmamba", c_void_p),
        ("longmamba_params", POINTER(lm_longmamba_params)),
    ]


class lm_modulation_params(Structure):
    _fields_ = lm_mambaextend_params._fields_


class lm_spsa_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("iterations", c_int32),
        ("seed", c_uint64),
        ("progress", lm_progress_fn),
        ("progress_user", c_void_p),
        ("longmamba", c_void_p),
        ("longmamba_params", POINTER(lm_longmamba_params)),
    ]


class lm_scales_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("mode", lm_enum),
        ("arch", lm_enum),
        ("n_layer", c_int64),
        ("target_length", c_int64),
        ("n_windows", c_int64),
        ("iterations", c_int32),
        ("seed", c_uint64),
        ("loss_initial", c_double),
        ("loss_final", c_double),
        ("with_longmamba", c_int32),
        ("fingerprint", c_uint64),
    ]


LM_SESSION_ALLOW_TF32 = 1 << 0


class lm_sampling_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("seed", c_uint64),
        ("flags", c_uint32),
    ]


LM_SAMPLE_RETURN_LOGITS = 1 << 0


class lm_tensor_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("dtype", lm_enum),
        ("ndim", c_int32),
        ("shape", c_int64 * 8),  # LM_TENSOR_MAX_DIMS
        ("n_elements", c_int64),
    ]


_P = c_void_p  # opaque handles travel as void pointers

# name: (restype, argtypes)
_PROTOTYPES = {
    "lm_version": (c_int32, []),
    "lm_version_string": (c_char_p, []),
    "lm_status_str": (c_char_p, [lm_status]),
    "lm_backend_available": (c_int32, [lm_enum]),
    "lm_backend_status": (lm_status, [lm_enum, POINTER(c_char), c_size_t]),
    "lm_backend_name": (c_char_p, [lm_enum]),
    "lm_model_params_init": (None, [POINTER(lm_model_params)]),
    "lm_model_load": (lm_status, [c_char_p, POINTER(lm_model_params), POINTER(_P), POINTER(c_char),
                                  c_size_t]),
    "lm_model_free": (None, [_P]),
    "lm_model_get_info": (lm_status, [_P, POINTER(lm_model_info)]),
    "lm_model_weight_count": (lm_status, [_P, POINTER(c_size_t), POINTER(c_char), c_size_t]),
    "lm_model_weight_info": (lm_status, [_P, c_size_t, POINTER(lm_weight_info), POINTER(c_char),
                                         c_size_t]),
    "lm_calib_params_init": (None, [POINTER(lm_calib_params)]),
    "lm_calibrate": (lm_status, [_P, POINTER(POINTER(c_int32)), POINTER(c_size_t), c_size_t,
                                 POINTER(lm_calib_params), POINTER(_P), POINTER(c_char), c_size_t]),
    "lm_calibration_save": (lm_status, [_P, c_char_p, POINTER(c_char), c_size_t]),
    "lm_calibration_load": (lm_status, [c_char_p, _P, POINTER(_P), POINTER(c_char), c_size_t]),
    "lm_calibration_free": (None, [_P]),
    "lm_calibration_get_info": (lm_status, [_P, POINTER(lm_calibration_info)]),
    "lm_calibration_get_buckets": (lm_status, [_P, POINTER(c_int64), c_size_t]),
    "lm_calibration_get_log_decay": (lm_status, [_P, c_int64, POINTER(c_double), c_size_t]),
    "lm_calibration_get_thresholds": (lm_status, [_P, c_int64, c_int64, POINTER(c_float),
                                                  c_size_t]),
    "lm_classify_channels": (lm_status, [_P, c_double, POINTER(c_uint8), c_size_t,
                                         POINTER(c_int64), c_size_t, POINTER(c_char), c_size_t]),
    "lm_scan_args_init": (None, [POINTER(lm_scan_args)]),
    "lm_scan_filtered": (lm_status, [POINTER(lm_scan_args), POINTER(c_char), c_size_t]),
    "lm_session_params_init": (None, [POINTER(lm_session_params)]),
    "lm_session_create": (lm_status, [_P, POINTER(lm_session_params), POINTER(_P),
                                      POINTER(c_char), c_size_t]),
    "lm_session_free": (None, [_P]),
    "lm_session_last_error": (c_char_p, [_P]),
    "lm_longmamba_params_init": (None, [POINTER(lm_longmamba_params)]),
    "lm_decimamba_params_init": (None, [POINTER(lm_decimamba_params)]),
    "lm_session_set_vanilla": (lm_status, [_P]),
    "lm_session_set_longmamba": (lm_status, [_P, _P, POINTER(lm_longmamba_params)]),
    "lm_session_set_decimamba": (lm_status, [_P, POINTER(lm_decimamba_params)]),
    "lm_mambaextend_params_init": (None, [POINTER(lm_mambaextend_params)]),
    "lm_modulation_params_init": (None, [POINTER(lm_modulation_params)]),
    "lm_session_set_mambaextend": (lm_status, [_P, POINTER(lm_mambaextend_params)]),
    "lm_session_set_modulation": (lm_status, [_P, POINTER(lm_modulation_params)]),
    "lm_spsa_params_init": (None, [POINTER(lm_spsa_params)]),
    "lm_scales_calibrate": (lm_status, [_P, lm_enum, POINTER(POINTER(c_int32)), POINTER(c_size_t),
                                        c_size_t, POINTER(lm_spsa_params), POINTER(_P),
                                        POINTER(c_char), c_size_t]),
    "lm_scales_save": (lm_status, [_P, c_char_p, POINTER(c_char), c_size_t]),
    "lm_scales_load": (lm_status, [c_char_p, _P, POINTER(_P), POINTER(c_char), c_size_t]),
    "lm_scales_free": (None, [_P]),
    "lm_scales_get_info": (lm_status, [_P, POINTER(lm_scales_info)]),
    "lm_scales_get": (lm_status, [_P, POINTER(c_double), POINTER(c_double), c_size_t]),
    "lm_session_set_length_hint": (lm_status, [_P, c_int64]),
    "lm_session_prefill": (lm_status, [_P, POINTER(c_int32), c_size_t, c_size_t, POINTER(c_float),
                                       c_size_t]),
    "lm_session_decode": (lm_status, [_P, c_int32, POINTER(c_float), c_size_t]),
    "lm_session_decode_batch": (lm_status, [POINTER(_P), c_size_t, POINTER(c_int32), POINTER(c_float),
                                            c_size_t]),
    "lm_session_reset": (lm_status, [_P]),
    "lm_session_position": (c_int64, [_P]),
    "lm_session_state_size": (lm_status, [_P, POINTER(c_size_t)]),
    "lm_session_state_save": (lm_status, [_P, c_void_p, c_size_t, POINTER(c_size_t)]),
    "lm_session_state_load": (lm_status, [_P, c_void_p, c_size_t]),
    "lm_tokenizer_load": (lm_status, [c_char_p, POINTER(_P), POINTER(c_char), c_size_t]),
    "lm_tokenizer_free": (None, [_P]),
    "lm_tokenizer_vocab_size": (c_int64, [_P]),
    "lm_tokenizer_encode": (lm_status, [_P, c_char_p, c_size_t, POINTER(c_int32), c_size_t,
                                        POINTER(c_size_t), POINTER(c_char), c_size_t]),
    "lm_tokenizer_decode": (lm_status, [_P, POINTER(c_int32), c_size_t, POINTER(c_char), c_size_t,
                                        POINTER(c_size_t), POINTER(c_char), c_size_t]),
    # 0.3
    "lm_dtype_name": (c_char_p, [lm_enum]),
    "lm_longmamba_default_theta": (c_double, [lm_enum]),
    "lm_tensor_file_open": (lm_status, [c_char_p, POINTER(_P), POINTER(c_char), c_size_t]),
    "lm_tensor_file_free": (None, [_P]),
    "lm_tensor_file_count": (c_size_t, [_P]),
    "lm_tensor_file_name": (c_char_p, [_P, c_size_t]),
    "lm_tensor_file_get_info": (lm_status, [_P, c_char_p, POINTER(lm_tensor_info), POINTER(c_char),
                                            c_size_t]),
    "lm_tensor_file_read_f64": (lm_status, [_P, c_char_p, POINTER(c_double), c_size_t,
                                            POINTER(c_char), c_size_t]),
    "lm_tensor_file_read_f32": (lm_status, [_P, c_char_p, POINTER(c_float), c_size_t,
                                            POINTER(c_char), c_size_t]),
    "lm_tensor_file_read_i32": (lm_status, [_P, c_char_p, POINTER(c_int32), c_size_t,
                                            POINTER(c_char), c_size_t]),
    "lm_sampling_params_init": (None, [POINTER(lm_sampling_params)]),
    "lm_session_set_sampling": (lm_status, [_P, POINTER(lm_sampling_params)]),
    "lm_session_decode_sample": (lm_status, [POINTER(_P), c_size_t, POINTER(c_int32),
                                             POINTER(c_int32), POINTER(c_float), c_size_t]),
    "lm_session_prefill_batch": (lm_status, [POINTER(_P), c_size_t, POINTER(POINTER(c_int32)),
                                             POINTER(c_size_t), POINTER(c_float), c_size_t]),
}


class LibraryNotFoundError(ImportError):
    """libongmamba could not be found or loaded; the message lists every place tried."""


def _pkg_config_dirs():
    """Library directories pkg-config knows for longmamba (uninstalled .pc files
    included: their libdir variable may not exist, their -L flags do)."""
    exe = shutil.which("pkg-config")
    if not exe:
        return [], "pkg-config: not installed"
    dirs = []
    try:
        out = subprocess.run([exe, "--libs-only-L", "longmamba"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0:
            return [], "pkg-config: no longmamba (%s)" % out.stderr.strip().splitlines()[-1:]
        dirs += [f[2:] for f in out.stdout.split() if f.startswith("-L")]
        var = subprocess.run([exe, "--variable=libdir", "longmamba"], capture_output=True,
                             text=True, timeout=30)
        if var.returncode == 0 and var.stdout.strip():
            dirs.append(var.stdout.strip())
    except (OSError, subprocess.SubprocessError) as e:
        return [], "pkg-config: %s" % e
    return dirs, None


def _candidates():
    """(path-or-name, origin) pairs in search order, and notes on sources that gave nothing."""
    notes = []
    cands = []
    env = os.environ.get("LONGMAMBA_LIBRARY")
    if env:
        # The variable names the library on purpose: use it or fail, never fall back.
        return [(env, "LONGMAMBA_LIBRARY")], notes
    dirs, note = _pkg_config_dirs()
    if note:
        notes.append(note)
    for d in dirs:
        for name in ("libongmamba.so.%d" % ABI_MAJOR, "libongmamba.so", "libongmamba.dylib"):
            p = os.path.join(d, name)
            if os.path.exists(p):
                cands.append((p, "pkg-config"))
    if not dirs:
        pass
    elif not cands:
        notes.append("pkg-config: no libongmamba in %s" % ", ".join(dirs))
    # The dynamic loader's own search (LD_LIBRARY_PATH, ldconfig cache, rpath).
    cands.append(("libongmamba.so.%d" % ABI_MAJOR, "loader path"))
    found = ctypes.util.find_library("ongmamba")
    if found:
        cands.append((found, "ctypes.util.find_library"))
    return cands, notes


def _declare(lib):
    for name, (res, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


_lock = threading.Lock()
_loaded = None
_loaded_path = None


def load():
    """The loaded library (cached).  Raises LibraryNotFoundError with every place tried."""
    global _loaded, _loaded_path
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        cands, notes = _candidates()
        tried = []
        for path, origin in cands:
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s (%s): %s" % (path, origin, e))
                continue
            try:
                _declare(lib)
            except AttributeError as e:
                tried.append("%s (%s): not libongmamba: %s" % (path, origin, e))
                continue
            major = lib.lm_version() // 10000
            if major != ABI_MAJOR:
                tried.append("%s (%s): version %s, this binding needs %d.x" %
                             (path, origin, lib.lm_version_string().decode(), ABI_MAJOR))
                continue
            _loaded, _loaded_path = lib, path
            return lib
        raise LibraryNotFoundError(
            "cannot load libongmamba. Set LONGMAMBA_LIBRARY to the library file "
            "(e.g. <builddir>/lib/libongmamba.so), or make it findable through "
            "pkg-config (PKG_CONFIG_PATH) or the loader path (LD_LIBRARY_PATH). Tried:\n  " +
            "\n  ".join(tried + notes))


def loaded_path():
    """Path or name the library was loaded from (loads it if needed)."""
    load()
    return _loaded_path
