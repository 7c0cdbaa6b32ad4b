"""Python bindings for libongmamba (include/longmamba.h) through ctypes.

    import longmamba
    with longmamba.Model("mamba-130m-hf", backend="cpu") as model, model.session() as s:
        logits = s.prefill([510, 4320, 273])[-1]
        nxt = int(logits.argmax())
        logits = s.decode(nxt)

The library is found through LONGMAMBA_LIBRARY (a path to the .so), then
pkg-config (PKG_CONFIG_PATH), then the dynamic loader's path.
"""

from ._capi import LibraryNotFoundError, loaded_path
from ._core import (Aggregation, Arch, Backend, Calibration, CalibrationInfo, DType,
                    LogLevel, LongMambaError, Mode, Model, ModelInfo, Scales, ScalesInfo, Session,
                    Status, TensorFile,
                    TensorInfo, Tokenizer, WeightInfo, Weights, WeightType,
                    backend_available, backend_status,
                    classify_channels, decode_batch, decode_sample,
                    default_theta, numpy_enabled, prefill_batch, scan_filtered, status_str,
                    version, version_string)

__version__ = "0.2.0"

__all__ = [
    "Aggregation", "Arch", "Backend", "Calibration", "CalibrationInfo", "DType",
    "LibraryNotFoundError", "LogLevel", "LongMambaError", "Mode", "Model", "ModelInfo", "Scales",
    "ScalesInfo", "Session",
    "Status", "TensorFile", "TensorInfo", "Tokenizer", "WeightInfo", "Weights", "WeightType",
    "backend_available", "backend_status",
    "classify_channels",
    "decode_batch", "decode_sample", "default_theta", "loaded_path", "numpy_enabled",
    "prefill_batch", "scan_filtered", "status_str", "version", "version_string",
]
