//! Safe Rust API for libongmamba: Mamba language models with LongMamba /
//! DeciMamba context extension.
//!
//! ```no_run
//! use longmamba::{Model, ModelParams};
//! let model = Model::load("mamba-130m-hf", &ModelParams::default())?;
//! let mut s = model.session()?;
//! let logits = s.prefill(&[510, 4320, 273], 1)?;          // [1][vocab]
//! let next = longmamba::argmax(&logits) as i32;
//! let logits = s.decode(next)?;
//! # let _ = logits;
//! # Ok::<(), longmamba::Error>(())
//! ```
//!
//! Thread model (from the C header): a [`Model`], a [`Calibration`] and a
//! [`Tokenizer`] are immutable and `Send + Sync`; a [`Session`] is used by
//! one thread at a time, so it is `Send` but not `Sync`.  A session borrows
//! its model (and, in LongMamba mode, its calibration), so it cannot outlive
//! either:
//!
//! ```compile_fail
//! let s = {
//!     let model = longmamba::Model::load("m", &Default::default()).unwrap();
//!     model.session().unwrap()
//! }; // error: `model` does not live long enough
//! ```
//!
//! ```compile_fail
//! use longmamba::*;
//! let model = Model::load("m", &Default::default()).unwrap();
//! let mut s = model.session().unwrap();
//! let cal = model.calibrate(&[&[1, 2, 3][..]], &CalibParams::default()).unwrap();
//! s.set_longmamba(&cal, &LongMambaParams::default()).unwrap();
//! // error: `cal` is dropped (declared later) while the session still borrows it
//! ```
//!
//! ```compile_fail
//! fn needs_sync<T: Sync>(_: &T) {}
//! let model = longmamba::Model::load("m", &Default::default()).unwrap();
//! let s = model.session().unwrap();
//! needs_sync(&s); // error: Session is not Sync
//! ```
#![deny(missing_docs)]

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::path::Path;
use std::ptr::{self, NonNull};

pub use longmamba_sys as sys;

const ERR_CAP: usize = 1024;

// ---- errors ------------------------------------------------------------------

/// What went wrong, as the library classifies it (`lm_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// NULL pointer, bad size, bad parameter value.
    InvalidArgument,
    /// Host or device allocation failed.
    NoMemory,
    /// A file cannot be opened, read, mapped or written.
    Io,
    /// Malformed file: safetensors, JSON, state blob.
    Format,
    /// Well-formed but not supported.
    Unsupported,
    /// Tensor shape disagrees with the configuration.
    Shape,
    /// A required tensor, file or config field is absent.
    Missing,
    /// Caller buffer smaller than required.
    BufferTooSmall,
    /// Token id >= vocab, layer index out of range.
    OutOfRange,
    /// CUDA / cuBLAS failure.
    Backend,
    /// Backend not compiled in or no device present.
    BackendUnavailable,
    /// Calibration or state belongs to another model.
    Mismatch,
    /// A progress callback asked to stop.
    Aborted,
    /// NaN/Inf where finite values are required.
    Numeric,
    /// A status newer than this binding.
    Other(u32),
}

impl Status {
    /// From an `lm_status` value (not `LM_OK`).
    pub fn from_raw(v: sys::lm_status) -> Status {
        match v {
            sys::LM_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::LM_ERR_NO_MEMORY => Status::NoMemory,
            sys::LM_ERR_IO => Status::Io,
            sys::LM_ERR_FORMAT => Status::Format,
            sys::LM_ERR_UNSUPPORTED => Status::Unsupported,
            sys::LM_ERR_SHAPE => Status::Shape,
            sys::LM_ERR_MISSING => Status::Missing,
            sys::LM_ERR_BUFFER_TOO_SMALL => Status::BufferTooSmall,
            sys::LM_ERR_OUT_OF_RANGE => Status::OutOfRange,
            sys::LM_ERR_BACKEND => Status::Backend,
            sys::LM_ERR_BACKEND_UNAVAILABLE => Status::BackendUnavailable,
            sys::LM_ERR_MISMATCH => Status::Mismatch,
            sys::LM_ERR_ABORTED => Status::Aborted,
            sys::LM_ERR_NUMERIC => Status::Numeric,
            other => Status::Other(other),
        }
    }

    /// The `lm_status` value.
    pub fn as_raw(self) -> sys::lm_status {
        match self {
            Status::InvalidArgument => sys::LM_ERR_INVALID_ARGUMENT,
            Status::NoMemory => sys::LM_ERR_NO_MEMORY,
            Status::Io => sys::LM_ERR_IO,
            Status::Format => sys::LM_ERR_FORMAT,
            Status::Unsupported => sys::LM_ERR_UNSUPPORTED,
            Status::Shape => sys::LM_ERR_SHAPE,
            Status::Missing => sys::LM_ERR_MISSING,
            Status::BufferTooSmall => sys::LM_ERR_BUFFER_TOO_SMALL,
            Status::OutOfRange => sys::LM_ERR_OUT_OF_RANGE,
            Status::Backend => sys::LM_ERR_BACKEND,
            Status::BackendUnavailable => sys::LM_ERR_BACKEND_UNAVAILABLE,
            Status::Mismatch => sys::LM_ERR_MISMATCH,
            Status::Aborted => sys::LM_ERR_ABORTED,
            Status::Numeric => sys::LM_ERR_NUMERIC,
            Status::Other(v) => v,
        }
    }

    /// The library's short description ("invalid argument", ...).
    pub fn description(self) -> &'static str {
        unsafe { static_str(sys::lm_status_str(self.as_raw())) }
    }
}

/// A failed call: the status and the library's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// An error with a status and a message.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        let mut message = message.into();
        if message.is_empty() {
            message = status.description().to_string();
        }
        Error { status, message }
    }

    /// What kind of failure.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The library's explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status.description())
    }
}

impl std::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

unsafe fn static_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        ""
    } else {
        CStr::from_ptr(p).to_str().unwrap_or("")
    }
}

/// An (err, err_cap) buffer for calls without a session.
struct ErrBuf([c_char; ERR_CAP]);

impl ErrBuf {
    fn new() -> ErrBuf {
        ErrBuf([0; ERR_CAP])
    }
    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }
    fn check(&self, st: sys::lm_status) -> Result<()> {
        if st == sys::LM_OK {
            return Ok(());
        }
        let msg = unsafe { CStr::from_ptr(self.0.as_ptr()) }.to_string_lossy().into_owned();
        Err(Error::new(Status::from_raw(st), msg))
    }
}

fn check_plain(st: sys::lm_status, what: impl FnOnce() -> String) -> Result<()> {
    if st == sys::LM_OK {
        Ok(())
    } else {
        Err(Error::new(Status::from_raw(st), what()))
    }
}

fn path_cstring(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    CString::new(bytes)
        .map_err(|_| Error::new(Status::InvalidArgument, format!("path {path:?} contains a NUL byte")))
}

// ---- library -------------------------------------------------------------------

/// `LM_VERSION_NUMBER` of the loaded library (major*10000 + minor*100 + patch).
pub fn version() -> i32 {
    unsafe { sys::lm_version() }
}

/// "MAJOR.MINOR.PATCH" of the loaded library.
pub fn version_string() -> &'static str {
    unsafe { static_str(sys::lm_version_string()) }
}

/// Compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// CUDA when compiled in and a device is present, else CPU.
    #[default]
    Auto,
    /// CPU.
    Cpu,
    /// CUDA.
    Cuda,
}

impl Backend {
    fn raw(self) -> sys::lm_backend {
        match self {
            Backend::Auto => sys::LM_BACKEND_AUTO,
            Backend::Cpu => sys::LM_BACKEND_CPU,
            Backend::Cuda => sys::LM_BACKEND_CUDA,
        }
    }
    fn from_raw(v: sys::lm_backend) -> Backend {
        match v {
            sys::LM_BACKEND_CUDA => Backend::Cuda,
            sys::LM_BACKEND_CPU => Backend::Cpu,
            _ => Backend::Auto,
        }
    }
    /// True if the backend is compiled in and usable here.
    pub fn available(self) -> bool {
        unsafe { sys::lm_backend_available(self.raw()) != 0 }
    }
    /// Whether the backend is usable here, and the reason when not (CUDA:
    /// module libongmamba-cuda.so missing or not loadable, no driver, no
    /// device); for `Auto` the reason names the backend it would pick.
    pub fn status(self) -> (bool, String) {
        let mut err = ErrBuf::new();
        let st = unsafe { sys::lm_backend_status(self.raw(), err.ptr(), ERR_CAP) };
        let msg = unsafe { CStr::from_ptr(err.0.as_ptr()) }.to_string_lossy().into_owned();
        (st == sys::LM_OK, msg)
    }
}

/// Model architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Mamba-1.
    Mamba1,
    /// Mamba-2.
    Mamba2,
    /// Falcon-Mamba: Mamba-1 layers that RMS-normalise Δ, B and C.
    FalconMamba,
}

impl Arch {
    fn from_raw(v: sys::lm_arch) -> Arch {
        if v == sys::LM_ARCH_MAMBA2 {
            Arch::Mamba2
        } else if v == sys::LM_ARCH_FALCON_MAMBA {
            Arch::FalconMamba
        } else {
            Arch::Mamba1
        }
    }
}

/// Storage dtype of a checkpoint's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
}

/// How the model holds its weights in memory (`lm_model_params.weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(non_camel_case_types)]
pub enum Weights {
    /// Every tensor in its stored type, read in place.
    #[default]
    AsStored,
    /// The linear layers' matrices quantised at load to GGML's Q8_0 blocks.
    Q8_0,
}

impl Weights {
    fn raw(self) -> sys::lm_weight_format {
        match self {
            Weights::AsStored => sys::LM_WEIGHTS_AS_STORED,
            Weights::Q8_0 => sys::LM_WEIGHTS_Q8_0,
        }
    }
    fn from_raw(v: sys::lm_weight_format) -> Weights {
        match v {
            sys::LM_WEIGHTS_Q8_0 => Weights::Q8_0,
            _ => Weights::AsStored,
        }
    }
}

/// How calibration windows are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// Elementwise max over windows (the authors' default).
    #[default]
    Max,
    /// Elementwise mean over windows.
    Mean,
}

/// Argmax of a logits row (index of the largest value; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

// ---- model ---------------------------------------------------------------------

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
pub struct ModelParams {
    /// Backend; default Auto.
    pub backend: Backend,
    /// CPU threads; 0 = number of online cores.
    pub n_threads: i32,
    /// CUDA device ordinal.
    pub device: i32,
    /// Weight storage; default as stored.
    pub weights: Weights,
}

/// Dimensions and identity of a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ModelInfo {
    pub arch: Arch,
    pub dtype: DType,
    pub backend: Backend,
    pub d_model: i64,
    pub d_inner: i64,
    pub d_state: i64,
    pub d_conv: i64,
    pub dt_rank: i64,
    pub n_layer: i64,
    /// Rows of the embedding (padded vocabulary).
    pub vocab_size: i64,
    pub n_heads: i64,
    pub head_dim: i64,
    pub n_groups: i64,
    /// LongMamba channels per layer.
    pub n_channels: i64,
    pub n_params: i64,
    pub tied_embeddings: bool,
    pub n_threads: i32,
    /// Identifies the weights; calibrations record it.
    pub fingerprint: u64,
    /// Weight storage as loaded.
    pub weights: Weights,
}

/// A loaded model: immutable, shared by any number of threads and sessions.
pub struct Model {
    ptr: NonNull<sys::lm_model>,
    info: ModelInfo,
}

// The C library documents lm_model as immutable after load and shareable by
// any number of threads at once.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Model {
    /// Loads a model directory (config.json + safetensors).
    pub fn load(dir: impl AsRef<Path>, params: &ModelParams) -> Result<Model> {
        let path = path_cstring(dir.as_ref())?;
        let mut p: sys::lm_model_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_model_params_init(&mut p) };
        p.backend = params.backend.raw();
        p.n_threads = params.n_threads;
        p.device = params.device;
        p.weights = params.weights.raw();
        let mut out: *mut sys::lm_model = ptr::null_mut();
        let mut err = ErrBuf::new();
        let st = unsafe { sys::lm_model_load(path.as_ptr(), &p, &mut out, err.ptr(), ERR_CAP) };
        err.check(st)?;
        let ptr = NonNull::new(out)
            .ok_or_else(|| Error::new(Status::Other(st), "lm_model_load returned no model"))?;
        let mut i: sys::lm_model_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of::<sys::lm_model_info>() as u32;
        let st = unsafe { sys::lm_model_get_info(ptr.as_ptr(), &mut i) };
        if st != sys::LM_OK {
            unsafe { sys::lm_model_free(ptr.as_ptr()) };
            return Err(Error::new(Status::from_raw(st), "lm_model_get_info failed"));
        }
        let info = ModelInfo {
            arch: Arch::from_raw(i.arch),
            dtype: match i.dtype {
                sys::LM_DTYPE_F16 => DType::F16,
                sys::LM_DTYPE_BF16 => DType::BF16,
                _ => DType::F32,
            },
            backend: Backend::from_raw(i.backend),
            d_model: i.d_model,
            d_inner: i.d_inner,
            d_state: i.d_state,
            d_conv: i.d_conv,
            dt_rank: i.dt_rank,
            n_layer: i.n_layer,
            vocab_size: i.vocab_size,
            n_heads: i.n_heads,
            head_dim: i.head_dim,
            n_groups: i.n_groups,
            n_channels: i.n_channels,
            n_params: i.n_params,
            tied_embeddings: i.tied_embeddings != 0,
            n_threads: i.n_threads,
            fingerprint: i.fingerprint,
            weights: Weights::from_raw(i.weights),
        };
        Ok(Model { ptr, info })
    }

    /// Dimensions and identity.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Logits per position.
    pub fn vocab_size(&self) -> usize {
        self.info.vocab_size as usize
    }

    /// The raw handle (valid while `self` lives).
    pub fn as_ptr(&self) -> *const sys::lm_model {
        self.ptr.as_ptr()
    }

    /// A new session with default parameters.
    pub fn session(&self) -> Result<Session<'_>> {
        Session::new(self, &SessionParams::default())
    }

    /// A new session.
    pub fn session_with(&self, params: &SessionParams) -> Result<Session<'_>> {
        Session::new(self, params)
    }

    /// LongMamba calibration over token windows.
    pub fn calibrate(&self, windows: &[&[i32]], params: &CalibParams) -> Result<Calibration> {
        Calibration::compute(self, windows, params)
    }

    /// Per-layer scales of [`Mode::MambaExtend`] or [`Mode::Modulation`] by
    /// SPSA over token windows (`lm_scales_calibrate`).
    pub fn calibrate_scales(&self, mode: Mode, windows: &[&[i32]], params: &SpsaParams) -> Result<Scales> {
        let ptrs: Vec<*const i32> = windows.iter().map(|w| w.as_ptr()).collect();
        let lens: Vec<usize> = windows.iter().map(|w| w.len()).collect();
        let mut p: sys::lm_spsa_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_spsa_params_init(&mut p) };
        p.iterations = params.iterations;
        p.seed = params.seed;
        let lp = params.longmamba.as_ref().map(|(c, lp)| (c.ptr.as_ptr(), raw_longmamba(lp)));
        if let Some((c, lp)) = &lp {
            p.longmamba = *c;
            p.longmamba_params = lp;
        }
        let mut out = ptr::null_mut();
        let mut err = ErrBuf::new();
        let st = unsafe {
            sys::lm_scales_calibrate(
                self.ptr.as_ptr(),
                mode.raw(),
                ptrs.as_ptr(),
                lens.as_ptr(),
                windows.len(),
                &p,
                &mut out,
                err.ptr(),
                ERR_CAP,
            )
        };
        err.check(st)?;
        Scales::wrap(out)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // Sessions borrow the model, so none is alive here.
        unsafe { sys::lm_model_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

// ---- calibration ---------------------------------------------------------------

/// Options for [`Model::calibrate`].
#[derive(Debug, Clone, Default)]
pub struct CalibParams {
    /// How windows are combined.
    pub aggregation: Aggregation,
    /// sc in [0, 0.2]: clamp Δ to its top-sc value; 0 = off.
    pub clamp: f64,
    /// Ascending prompt lengths; None = LongMamba's list (1k..192k).
    pub buckets: Option<Vec<i64>>,
    /// Mamba Modulation scales (one per layer): a calibration of the
    /// modulated model, for [`Session::set_modulation`] with these scales.
    pub a_log_scales: Option<Vec<f64>>,
}

/// Description of a calibration.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct CalibrationInfo {
    pub arch: Arch,
    pub n_layer: i64,
    pub n_channels: i64,
    /// Longest calibration window, tokens.
    pub calib_length: i64,
    pub n_windows: i64,
    pub n_buckets: i64,
    pub clamp: f64,
    pub aggregation: Aggregation,
    /// Of the model it was computed on.
    pub fingerprint: u64,
}

/// LongMamba calibration statistics: immutable, `Send + Sync`.
pub struct Calibration {
    ptr: NonNull<sys::lm_calibration>,
    info: CalibrationInfo,
}

// Documented immutable and shareable like a model.
unsafe impl Send for Calibration {}
unsafe impl Sync for Calibration {}

impl Calibration {
    fn wrap(out: *mut sys::lm_calibration) -> Result<Calibration> {
        let ptr = NonNull::new(out)
            .ok_or_else(|| Error::new(Status::InvalidArgument, "no calibration returned"))?;
        let mut i: sys::lm_calibration_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of::<sys::lm_calibration_info>() as u32;
        let st = unsafe { sys::lm_calibration_get_info(ptr.as_ptr(), &mut i) };
        if st != sys::LM_OK {
            unsafe { sys::lm_calibration_free(ptr.as_ptr()) };
            return Err(Error::new(Status::from_raw(st), "lm_calibration_get_info failed"));
        }
        let info = CalibrationInfo {
            arch: Arch::from_raw(i.arch),
            n_layer: i.n_layer,
            n_channels: i.n_channels,
            calib_length: i.calib_length,
            n_windows: i.n_windows,
            n_buckets: i.n_buckets,
            clamp: i.clamp,
            aggregation: if i.aggregation == sys::LM_CALIB_AGG_MEAN {
                Aggregation::Mean
            } else {
                Aggregation::Max
            },
            fingerprint: i.fingerprint,
        };
        Ok(Calibration { ptr, info })
    }

    fn compute(model: &Model, windows: &[&[i32]], params: &CalibParams) -> Result<Calibration> {
        let ptrs: Vec<*const i32> = windows.iter().map(|w| w.as_ptr()).collect();
        let lens: Vec<usize> = windows.iter().map(|w| w.len()).collect();
        let mut p: sys::lm_calib_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_calib_params_init(&mut p) };
        p.aggregation = match params.aggregation {
            Aggregation::Max => sys::LM_CALIB_AGG_MAX,
            Aggregation::Mean => sys::LM_CALIB_AGG_MEAN,
        };
        p.clamp = params.clamp;
        if let Some(b) = &params.buckets {
            p.buckets = b.as_ptr();
            p.n_buckets = b.len();
        }
        if let Some(a) = &params.a_log_scales {
            p.a_log_scales = a.as_ptr();
            p.n_a_log_scales = a.len();
        }
        let mut out = ptr::null_mut();
        let mut err = ErrBuf::new();
        let st = unsafe {
            sys::lm_calibrate(
                model.ptr.as_ptr(),
                ptrs.as_ptr(),
                lens.as_ptr(),
                windows.len(),
                &p,
                &mut out,
                err.ptr(),
                ERR_CAP,
            )
        };
        err.check(st)?;
        Calibration::wrap(out)
    }

    /// Loads a calibration file; with a model it must belong to that model.
    pub fn load(path: impl AsRef<Path>, model: Option<&Model>) -> Result<Calibration> {
        let path = path_cstring(path.as_ref())?;
        let mut out = ptr::null_mut();
        let mut err = ErrBuf::new();
        let m = model.map_or(ptr::null(), |m| m.ptr.as_ptr() as *const _);
        let st = unsafe { sys::lm_calibration_load(path.as_ptr(), m, &mut out, err.ptr(), ERR_CAP) };
        err.check(st)?;
        Calibration::wrap(out)
    }

    /// Saves as safetensors with metadata.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        let mut err = ErrBuf::new();
        let st = unsafe { sys::lm_calibration_save(self.ptr.as_ptr(), path.as_ptr(), err.ptr(), ERR_CAP) };
        err.check(st)
    }

    /// Description.
    pub fn info(&self) -> &CalibrationInfo {
        &self.info
    }

    /// Bucket lengths.
    pub fn buckets(&self) -> Result<Vec<i64>> {
        let mut v = vec![0i64; self.info.n_buckets as usize];
        let st = unsafe { sys::lm_calibration_get_buckets(self.ptr.as_ptr(), v.as_mut_ptr(), v.len()) };
        check_plain(st, || "calibration buckets".into())?;
        Ok(v)
    }

    /// Natural log of each channel's cumulative decay, one layer.
    pub fn log_decay(&self, layer: i64) -> Result<Vec<f64>> {
        let mut v = vec![0f64; self.info.n_channels as usize];
        let st =
            unsafe { sys::lm_calibration_get_log_decay(self.ptr.as_ptr(), layer, v.as_mut_ptr(), v.len()) };
        check_plain(st, || format!("log_decay: layer {layer} of {}", self.info.n_layer))?;
        Ok(v)
    }

    /// Unscaled token-filter thresholds of one layer and bucket.
    pub fn thresholds(&self, layer: i64, bucket: i64) -> Result<Vec<f32>> {
        let mut v = vec![0f32; self.info.n_channels as usize];
        let st = unsafe {
            sys::lm_calibration_get_thresholds(self.ptr.as_ptr(), layer, bucket, v.as_mut_ptr(), v.len())
        };
        check_plain(st, || {
            format!(
                "thresholds: layer {layer} of {}, bucket {bucket} of {}",
                self.info.n_layer, self.info.n_buckets
            )
        })?;
        Ok(v)
    }

    /// Global channels for theta: `mask[layer * n_channels + c]` and the
    /// number of global channels per layer.
    pub fn classify_channels(&self, theta: f64) -> Result<(Vec<bool>, Vec<i64>)> {
        let nl = self.info.n_layer as usize;
        let n = nl * self.info.n_channels as usize;
        let mut mask = vec![0u8; n];
        let mut counts = vec![0i64; nl];
        let mut err = ErrBuf::new();
        let st = unsafe {
            sys::lm_classify_channels(
                self.ptr.as_ptr(),
                theta,
                mask.as_mut_ptr(),
                n,
                counts.as_mut_ptr(),
                nl,
                err.ptr(),
                ERR_CAP,
            )
        };
        err.check(st)?;
        Ok((mask.into_iter().map(|b| b != 0).collect(), counts))
    }

    /// The raw handle (valid while `self` lives).
    pub fn as_ptr(&self) -> *const sys::lm_calibration {
        self.ptr.as_ptr()
    }
}

impl Drop for Calibration {
    fn drop(&mut self) {
        // Sessions that filter with it borrow it, so none is alive here.
        unsafe { sys::lm_calibration_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calibration").field("info", &self.info).finish()
    }
}

// ---- MambaExtend / Modulation scales ---------------------------------------------

/// Options for [`Model::calibrate_scales`]; zero means the library's default.
#[derive(Clone, Default)]
pub struct SpsaParams<'c> {
    /// SPSA iterations; 0 = 50 (MambaExtend) / 30 (Modulation).
    pub iterations: i32,
    /// Seed of s0 and the Rademacher draws.
    pub seed: u64,
    /// MambaExtend only: calibrate with LongMamba's filter on.
    pub longmamba: Option<(&'c Calibration, LongMambaParams)>,
}

/// Description of calibrated scales.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct ScalesInfo {
    pub mode: Mode,
    pub arch: Arch,
    pub n_layer: i64,
    pub target_length: i64,
    pub n_windows: i64,
    pub iterations: i32,
    pub seed: u64,
    /// Mean next-token cross-entropy at s0.
    pub loss_initial: f64,
    /// ... at the returned scales.
    pub loss_final: f64,
    pub with_longmamba: bool,
    pub fingerprint: u64,
}

/// Per-layer MambaExtend / Modulation scales from SPSA (immutable).
pub struct Scales {
    ptr: NonNull<sys::lm_scales>,
    info: ScalesInfo,
}

// Immutable after creation (C thread model).
unsafe impl Send for Scales {}
unsafe impl Sync for Scales {}

impl Scales {
    fn wrap(out: *mut sys::lm_scales) -> Result<Scales> {
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(Status::InvalidArgument, "null scales"))?;
        let mut i: sys::lm_scales_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of::<sys::lm_scales_info>() as u32;
        let st = unsafe { sys::lm_scales_get_info(ptr.as_ptr(), &mut i) };
        if st != sys::LM_OK {
            unsafe { sys::lm_scales_free(ptr.as_ptr()) };
            return Err(Error::new(Status::from_raw(st), "lm_scales_get_info failed"));
        }
        let info = ScalesInfo {
            mode: if i.mode == sys::LM_MODE_MODULATION { Mode::Modulation } else { Mode::MambaExtend },
            arch: Arch::from_raw(i.arch),
            n_layer: i.n_layer,
            target_length: i.target_length,
            n_windows: i.n_windows,
            iterations: i.iterations,
            seed: i.seed,
            loss_initial: i.loss_initial,
            loss_final: i.loss_final,
            with_longmamba: i.with_longmamba != 0,
            fingerprint: i.fingerprint,
        };
        Ok(Scales { ptr, info })
    }

    /// Loads a scales file; with a model it must belong to that model.
    pub fn load(path: impl AsRef<Path>, model: Option<&Model>) -> Result<Scales> {
        let path = path_cstring(path.as_ref())?;
        let mut out = ptr::null_mut();
        let mut err = ErrBuf::new();
        let m = model.map_or(ptr::null(), |m| m.ptr.as_ptr() as *const _);
        let st = unsafe { sys::lm_scales_load(path.as_ptr(), m, &mut out, err.ptr(), ERR_CAP) };
        err.check(st)?;
        Scales::wrap(out)
    }

    /// Saves as safetensors with the model fingerprint and the settings.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        let mut err = ErrBuf::new();
        let st = unsafe { sys::lm_scales_save(self.ptr.as_ptr(), path.as_ptr(), err.ptr(), ERR_CAP) };
        err.check(st)
    }

    /// Description.
    pub fn info(&self) -> &ScalesInfo {
        &self.info
    }

    fn get(&self, initial: bool) -> Vec<f64> {
        let mut v = vec![0.0; self.info.n_layer as usize];
        let (a, b) = if initial { (ptr::null_mut(), v.as_mut_ptr()) } else { (v.as_mut_ptr(), ptr::null_mut()) };
        let st = unsafe { sys::lm_scales_get(self.ptr.as_ptr(), a, b, v.len()) };
        debug_assert_eq!(st, sys::LM_OK);
        v
    }

    /// The calibrated scales, one per layer.
    pub fn scales(&self) -> Vec<f64> {
        self.get(false)
    }

    /// SPSA's s0.
    pub fn initial_scales(&self) -> Vec<f64> {
        self.get(true)
    }
}

impl Drop for Scales {
    fn drop(&mut self) {
        unsafe { sys::lm_scales_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Scales {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scales").field("info", &self.info).finish()
    }
}

// ---- sessions ------------------------------------------------------------------

/// Options for a new [`Session`].
#[derive(Debug, Clone, Default)]
pub struct SessionParams {
    /// Prefill tokens per chunk; 0 = default (512).
    pub chunk_size: i64,
    /// CUDA, fp32 models: TF32 tensor-core GEMMs.
    pub allow_tf32: bool,
}

/// LongMamba mode options; zero means the library's default.
#[derive(Debug, Clone, Default)]
pub struct LongMambaParams {
    /// Global iff decay > theta; 0 = 1e-3 (Mamba-1), 5e-2 (Mamba-2).
    pub theta: f64,
    /// b: tau = b * thr; 0 = 1.0.
    pub threshold_scale: f64,
    /// Filter prefills of >= this many tokens; 0 = 1.5 x calibration length.
    pub trigger_length: i64,
}

/// DeciMamba mode options; zero / None means the library's default.
#[derive(Debug, Clone, Default)]
pub struct DeciMambaParams {
    /// Decimating layers in order; None = the middle layer.
    pub layers: Option<Vec<i32>>,
    /// Default 2000.
    pub l_base: i64,
    /// Default 1.0.
    pub beta: f64,
    /// Default 20.
    pub min_len: i64,
    /// Last tokens always kept; default 1.
    pub protect: i64,
}

/// How [`Session::decode_sample`] draws a session's next token (the rule
/// in `include/longmamba.h`, "sampling the next token").  The zero value
/// (`Default`) is greedy.
#[derive(Debug, Clone, Default)]
pub struct SamplingParams {
    /// <= 0: greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// Keep the k highest logits; 0 = all.
    pub top_k: i32,
    /// Nucleus: keep the shortest prefix by descending probability whose
    /// mass reaches `top_p`; 0 or 1 = off.
    pub top_p: f32,
    /// The draw at a position depends only on (seed, position).
    pub seed: u64,
    /// [`Session::decode_sample`] returns this session's logits row too.
    pub return_logits: bool,
}

/// The C params of a LongMambaParams (zero: the library's default).
fn raw_longmamba(params: &LongMambaParams) -> sys::lm_longmamba_params {
    let mut p: sys::lm_longmamba_params = unsafe { std::mem::zeroed() };
    unsafe { sys::lm_longmamba_params_init(&mut p) };
    if params.theta != 0.0 {
        p.theta = params.theta;
    }
    if params.threshold_scale != 0.0 {
        p.threshold_scale = params.threshold_scale;
    }
    if params.trigger_length != 0 {
        p.trigger_length = params.trigger_length;
    }
    p
}

impl Mode {
    fn raw(self) -> sys::lm_mode {
        match self {
            Mode::Vanilla => sys::LM_MODE_VANILLA,
            Mode::LongMamba => sys::LM_MODE_LONGMAMBA,
            Mode::DeciMamba => sys::LM_MODE_DECIMAMBA,
            Mode::MambaExtend => sys::LM_MODE_MAMBAEXTEND,
            Mode::Modulation => sys::LM_MODE_MODULATION,
        }
    }
}

/// Session mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain Mamba.
    Vanilla,
    /// LongMamba token filtering.
    LongMamba,
    /// DeciMamba token decimation.
    DeciMamba,
    /// MambaExtend: per-layer scales on Δ at prefill.
    MambaExtend,
    /// Mamba Modulation: per-layer A' = -exp(s A_log) at prefill.
    Modulation,
}

/// Recurrent state over a model: one thread at a time (`Send`, not `Sync`).
/// Borrows its model, and its calibration while in LongMamba mode.
pub struct Session<'a> {
    ptr: NonNull<sys::lm_session>,
    vocab: usize,
    mode: Mode,
    returns_logits: bool,
    _model: PhantomData<&'a Model>,
    _calib: PhantomData<&'a Calibration>,
}

// A session may move between threads (one at a time); the raw pointer keeps
// it !Sync, as the C thread model requires.
unsafe impl Send for Session<'_> {}

impl<'a> Session<'a> {
    /// A new session in vanilla mode with zero state.
    pub fn new(model: &'a Model, params: &SessionParams) -> Result<Session<'a>> {
        let mut p: sys::lm_session_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_session_params_init(&mut p) };
        if params.chunk_size != 0 {
            p.chunk_size = params.chunk_size;
        }
        if params.allow_tf32 {
            p.flags |= sys::LM_SESSION_ALLOW_TF32;
        }
        let mut out = ptr::null_mut();
        let mut err = ErrBuf::new();
        let st = unsafe { sys::lm_session_create(model.ptr.as_ptr(), &p, &mut out, err.ptr(), ERR_CAP) };
        err.check(st)?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(Status::InvalidArgument, "no session"))?;
        Ok(Session {
            ptr,
            vocab: model.vocab_size(),
            mode: Mode::Vanilla,
            returns_logits: false,
            _model: PhantomData,
            _calib: PhantomData,
        })
    }

    fn check(&self, st: sys::lm_status) -> Result<()> {
        if st == sys::LM_OK {
            return Ok(());
        }
        let msg = unsafe {
            let p = sys::lm_session_last_error(self.ptr.as_ptr());
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(Error::new(Status::from_raw(st), msg))
    }

    /// Logits per position.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Feeds tokens; returns the logits of the last `n_logits` positions,
    /// `[n_logits][vocab]` row-major.
    pub fn prefill(&mut self, tokens: &[i32], n_logits: usize) -> Result<Vec<f32>> {
        // n_logits > tokens is the library's error to report; no buffer for it.
        let n = if n_logits <= tokens.len() { n_logits.saturating_mul(self.vocab) } else { 0 };
        let mut out = vec![0f32; n];
        self.prefill_into(tokens, n_logits, &mut out)?;
        Ok(out)
    }

    /// Feeds tokens, writing the last `n_logits` positions' logits into `out`
    /// (too small: `Status::BufferTooSmall`).
    pub fn prefill_into(&mut self, tokens: &[i32], n_logits: usize, out: &mut [f32]) -> Result<()> {
        let lp = if out.is_empty() { ptr::null_mut() } else { out.as_mut_ptr() };
        let st = unsafe {
            sys::lm_session_prefill(self.ptr.as_ptr(), tokens.as_ptr(), tokens.len(), n_logits, lp, out.len())
        };
        self.check(st)
    }

    /// One token; returns its logits.
    pub fn decode(&mut self, token: i32) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.vocab];
        self.decode_into(token, &mut out)?;
        Ok(out)
    }

    /// One token, logits into `out` (too small: `Status::BufferTooSmall`).
    pub fn decode_into(&mut self, token: i32, out: &mut [f32]) -> Result<()> {
        // An empty slice must not turn into "no logits wanted" (NULL).
        let lp = if out.is_empty() { [0f32; 1].as_mut_ptr() } else { out.as_mut_ptr() };
        let st = unsafe { sys::lm_session_decode(self.ptr.as_ptr(), token, lp, out.len()) };
        self.check(st)
    }

    /// One token without computing logits.
    pub fn advance(&mut self, token: i32) -> Result<()> {
        let st = unsafe { sys::lm_session_decode(self.ptr.as_ptr(), token, ptr::null_mut(), 0) };
        self.check(st)
    }

    /// One decode step for several sessions of one model at once
    /// (`lm_session_decode_batch`): `sessions[i]` consumes `tokens[i]`.
    /// Returns the logits row by row (`sessions.len() * vocab`).  The CUDA
    /// backend reads the weights once for the whole batch.  The `&mut`
    /// borrows make the sessions distinct and unshared, as the C call needs.
    pub fn decode_batch(sessions: &mut [&mut Session<'a>], tokens: &[i32]) -> Result<Vec<f32>> {
        if sessions.len() != tokens.len() {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("{} sessions but {} tokens", sessions.len(), tokens.len()),
            ));
        }
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = sessions[0].vocab;
        let mut out = vec![0f32; sessions.len() * vocab];
        let ptrs: Vec<*mut sys::lm_session> = sessions.iter().map(|s| s.ptr.as_ptr()).collect();
        let st = unsafe {
            sys::lm_session_decode_batch(
                ptrs.as_ptr(),
                ptrs.len(),
                tokens.as_ptr(),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        sessions[0].check(st)?;
        Ok(out)
    }

    /// Several sessions' prompts prefilled together
    /// (`lm_session_prefill_batch`): `sessions[i]` (each at its own
    /// position) consumes `prompts[i]`; lengths may differ.  The prompts run
    /// packed back to back (no padding), as [`Session::prefill`] of each
    /// would up to rounding.  Returns the logits of each prompt's last token
    /// row by row (`sessions.len() * vocab`).  On an error no session moves.
    pub fn prefill_batch(sessions: &mut [&mut Session<'a>], prompts: &[&[i32]]) -> Result<Vec<f32>> {
        if sessions.len() != prompts.len() {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("{} sessions but {} prompts", sessions.len(), prompts.len()),
            ));
        }
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = sessions[0].vocab;
        let mut out = vec![0f32; sessions.len() * vocab];
        let ptrs: Vec<*mut sys::lm_session> = sessions.iter().map(|s| s.ptr.as_ptr()).collect();
        let toks: Vec<*const i32> = prompts.iter().map(|p| p.as_ptr()).collect();
        let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        let st = unsafe {
            sys::lm_session_prefill_batch(
                ptrs.as_ptr(),
                ptrs.len(),
                toks.as_ptr(),
                lens.as_ptr(),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        sessions[0].check(st)?;
        Ok(out)
    }

    /// How [`Session::decode_sample`] draws this session's next token
    /// (`lm_session_set_sampling`); kept across [`Session::reset`] and
    /// [`Session::load_state`].  Out-of-range values are
    /// `Status::OutOfRange`, naming the field.
    pub fn set_sampling(&mut self, params: &SamplingParams) -> Result<()> {
        let mut p: sys::lm_sampling_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_sampling_params_init(&mut p) };
        p.temperature = params.temperature;
        p.top_k = params.top_k;
        p.top_p = params.top_p;
        p.seed = params.seed;
        if params.return_logits {
            p.flags |= sys::LM_SAMPLE_RETURN_LOGITS;
        }
        let st = unsafe { sys::lm_session_set_sampling(self.ptr.as_ptr(), &p) };
        self.check(st)?;
        self.returns_logits = params.return_logits;
        Ok(())
    }

    /// One decode step for several sessions of one model, each drawing its
    /// next token with its own sampler inside the library
    /// (`lm_session_decode_sample`): `sessions[i]` consumes `tokens[i]`.
    /// Returns the next tokens and, per session, its logits row when it
    /// samples with `return_logits` (else `None`).  On an error no session
    /// moves.
    #[allow(clippy::type_complexity)]
    pub fn decode_sample(
        sessions: &mut [&mut Session<'a>],
        tokens: &[i32],
    ) -> Result<(Vec<i32>, Vec<Option<Vec<f32>>>)> {
        if sessions.len() != tokens.len() {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("{} sessions but {} tokens", sessions.len(), tokens.len()),
            ));
        }
        if sessions.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (n, vocab) = (sessions.len(), sessions[0].vocab);
        let any = sessions.iter().any(|s| s.returns_logits);
        let mut rows = if any { vec![0f32; n * vocab] } else { Vec::new() };
        let lp = if any { rows.as_mut_ptr() } else { ptr::null_mut() };
        let mut next = vec![0i32; n];
        let ptrs: Vec<*mut sys::lm_session> = sessions.iter().map(|s| s.ptr.as_ptr()).collect();
        let st = unsafe {
            sys::lm_session_decode_sample(
                ptrs.as_ptr(),
                n,
                tokens.as_ptr(),
                next.as_mut_ptr(),
                lp,
                rows.len(),
            )
        };
        sessions[0].check(st)?;
        let logits = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| s.returns_logits.then(|| rows[i * vocab..(i + 1) * vocab].to_vec()))
            .collect();
        Ok((next, logits))
    }

    /// Zero state, position 0; the mode and the sampler are kept.
    pub fn reset(&mut self) -> Result<()> {
        let st = unsafe { sys::lm_session_reset(self.ptr.as_ptr()) };
        self.check(st)
    }

    /// Tokens consumed since creation or the last reset.
    pub fn position(&self) -> i64 {
        unsafe { sys::lm_session_position(self.ptr.as_ptr()) }
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Total prompt length the next prefills add up to (0 clears).
    pub fn set_length_hint(&mut self, total_tokens: i64) -> Result<()> {
        let st = unsafe { sys::lm_session_set_length_hint(self.ptr.as_ptr(), total_tokens) };
        self.check(st)
    }

    /// Vanilla mode from the next prefill.
    pub fn set_vanilla(&mut self) -> Result<()> {
        let st = unsafe { sys::lm_session_set_vanilla(self.ptr.as_ptr()) };
        self.check(st)?;
        self.mode = Mode::Vanilla;
        Ok(())
    }

    /// LongMamba mode from the next prefill; the session borrows `calib`.
    pub fn set_longmamba(&mut self, calib: &'a Calibration, params: &LongMambaParams) -> Result<()> {
        let p = raw_longmamba(params);
        let st = unsafe { sys::lm_session_set_longmamba(self.ptr.as_ptr(), calib.ptr.as_ptr(), &p) };
        self.check(st)?;
        self.mode = Mode::LongMamba;
        Ok(())
    }

    /// MambaExtend from the next prefill: Δ of layer l times `scales[l]` (one
    /// per layer, finite and > 0).  With `longmamba`, LongMamba's filter too
    /// (a vanilla calibration), decided on the unscaled Δ; the session
    /// borrows the calibration.
    pub fn set_mambaextend(
        &mut self,
        scales: &[f64],
        longmamba: Option<(&'a Calibration, &LongMambaParams)>,
    ) -> Result<()> {
        let mut p: sys::lm_mambaextend_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_mambaextend_params_init(&mut p) };
        p.scales = scales.as_ptr();
        p.n_scales = scales.len();
        let lp = longmamba.map(|(c, lp)| (c, raw_longmamba(lp)));
        if let Some((c, lp)) = &lp {
            p.longmamba = c.ptr.as_ptr();
            p.longmamba_params = lp;
        }
        let st = unsafe { sys::lm_session_set_mambaextend(self.ptr.as_ptr(), &p) };
        self.check(st)?;
        self.mode = Mode::MambaExtend;
        Ok(())
    }

    /// Mamba Modulation from the next prefill: layer l runs with
    /// A' = -exp(`scales[l]` A_log).  With `longmamba`, the calibration must
    /// come from [`CalibParams::a_log_scales`] equal to `scales`.
    pub fn set_modulation(
        &mut self,
        scales: &[f64],
        longmamba: Option<(&'a Calibration, &LongMambaParams)>,
    ) -> Result<()> {
        let mut p: sys::lm_modulation_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_modulation_params_init(&mut p) };
        p.scales = scales.as_ptr();
        p.n_scales = scales.len();
        let lp = longmamba.map(|(c, lp)| (c, raw_longmamba(lp)));
        if let Some((c, lp)) = &lp {
            p.longmamba = c.ptr.as_ptr();
            p.longmamba_params = lp;
        }
        let st = unsafe { sys::lm_session_set_modulation(self.ptr.as_ptr(), &p) };
        self.check(st)?;
        self.mode = Mode::Modulation;
        Ok(())
    }

    /// DeciMamba mode from the next prefill.
    pub fn set_decimamba(&mut self, params: &DeciMambaParams) -> Result<()> {
        let mut p: sys::lm_decimamba_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lm_decimamba_params_init(&mut p) };
        if let Some(l) = &params.layers {
            p.layers = l.as_ptr();
            p.n_layers = l.len();
        }
        if params.l_base != 0 {
            p.l_base = params.l_base;
        }
        if params.beta != 0.0 {
            p.beta = params.beta;
        }
        if params.min_len != 0 {
            p.min_len = params.min_len;
        }
        if params.protect != 0 {
            p.protect = params.protect;
        }
        let st = unsafe { sys::lm_session_set_decimamba(self.ptr.as_ptr(), &p) };
        self.check(st)?;
        self.mode = Mode::DeciMamba;
        Ok(())
    }

    /// Bytes of the state blob.
    pub fn state_size(&self) -> Result<usize> {
        let mut n = 0usize;
        let st = unsafe { sys::lm_session_state_size(self.ptr.as_ptr(), &mut n) };
        self.check(st)?;
        Ok(n)
    }

    /// The recurrent state and position as an opaque blob.
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.state_size()?];
        let mut written = 0usize;
        let st = unsafe {
            sys::lm_session_state_save(self.ptr.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut written)
        };
        self.check(st)?;
        buf.truncate(written);
        Ok(buf)
    }

    /// Restores a blob from [`Session::save_state`] (this model's).
    pub fn load_state(&mut self, blob: &[u8]) -> Result<()> {
        let st = unsafe { sys::lm_session_state_load(self.ptr.as_ptr(), blob.as_ptr().cast(), blob.len()) };
        self.check(st)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        unsafe { sys::lm_session_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("mode", &self.mode).field("position", &self.position()).finish()
    }
}

// ---- the filtered scan ---------------------------------------------------------

/// Inputs of [`scan_filtered`] (token-major; see `lm_scan_filtered`).
/// Slices are checked against the sizes before the call.
#[derive(Debug, Clone, Default)]
pub struct ScanInput<'a> {
    /// Tokens.
    pub length: usize,
    /// Channels (d_inner).
    pub channels: usize,
    /// State size N.
    pub state_size: usize,
    /// `[length][channels]`.
    pub u: &'a [f32],
    /// Post-softplus Δ, or raw dt when `delta_is_dt`; `[length][channels]`.
    pub delta: &'a [f32],
    /// Apply softplus(dt + dt_bias) inside the scan.
    pub delta_is_dt: bool,
    /// `[channels]`.
    pub dt_bias: Option<&'a [f32]>,
    /// `[channels][state_size]`.
    pub a: &'a [f32],
    /// `[length][state_size]`.
    pub b: &'a [f32],
    /// `[length][state_size]`.
    pub c: &'a [f32],
    /// `[channels]`.
    pub d: Option<&'a [f32]>,
    /// `[length][channels]`.
    pub z: Option<&'a [f32]>,
    /// `[channels]`, required with `global_mask`.
    pub thresholds: Option<&'a [f32]>,
    /// `[channels]`: filter these channels.
    pub global_mask: Option<&'a [bool]>,
    /// `[channels][state_size]`; None = zeros.
    pub state_in: Option<&'a [f32]>,
    /// 0 = all cores.
    pub n_threads: i32,
}

/// Mamba-1 selective scan of one sequence with LongMamba filtering.
/// Returns y `[length][channels]` and the final state `[channels][state_size]`.
pub fn scan_filtered(inp: &ScanInput<'_>) -> Result<(Vec<f32>, Vec<f32>)> {
    let (l, e, n) = (inp.length, inp.channels, inp.state_size);
    let le = l.checked_mul(e);
    let ln = l.checked_mul(n);
    let en = e.checked_mul(n);
    let (le, ln, en) = match (le, ln, en) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(Error::new(Status::InvalidArgument, "scan: sizes overflow")),
    };
    let need = |name: &str, got: usize, want: usize| -> Result<()> {
        if got != want {
            Err(Error::new(
                Status::InvalidArgument,
                format!("scan: {name} has {got} values, {want} expected"),
            ))
        } else {
            Ok(())
        }
    };
    need("u", inp.u.len(), le)?;
    need("delta", inp.delta.len(), le)?;
    need("A", inp.a.len(), en)?;
    need("B", inp.b.len(), ln)?;
    need("C", inp.c.len(), ln)?;
    let opt = |name: &str, s: Option<&[f32]>, want: usize| -> Result<*const f32> {
        match s {
            None => Ok(ptr::null()),
            Some(s) => need(name, s.len(), want).map(|_| s.as_ptr()),
        }
    };
    let mut a: sys::lm_scan_args = unsafe { std::mem::zeroed() };
    unsafe { sys::lm_scan_args_init(&mut a) };
    a.length = l as i64;
    a.channels = e as i64;
    a.state_size = n as i64;
    a.u = inp.u.as_ptr();
    a.delta = inp.delta.as_ptr();
    a.delta_is_dt = inp.delta_is_dt as i32;
    a.dt_bias = opt("dt_bias", inp.dt_bias, e)?;
    a.A = inp.a.as_ptr();
    a.B = inp.b.as_ptr();
    a.C = inp.c.as_ptr();
    a.D = opt("D", inp.d, e)?;
    a.z = opt("z", inp.z, le)?;
    a.thresholds = opt("thresholds", inp.thresholds, e)?;
    a.state_in = opt("state_in", inp.state_in, en)?;
    let mask: Option<Vec<u8>> = match inp.global_mask {
        None => None,
        Some(m) => {
            need("global_mask", m.len(), e)?;
            Some(m.iter().map(|&b| b as u8).collect())
        }
    };
    a.global_mask = mask.as_ref().map_or(ptr::null(), |m| m.as_ptr());
    let mut y = vec![0f32; le];
    let mut state = vec![0f32; en];
    a.y = y.as_mut_ptr();
    a.state_out = state.as_mut_ptr();
    a.n_threads = inp.n_threads;
    let mut err = ErrBuf::new();
    let st = unsafe { sys::lm_scan_filtered(&a, err.ptr(), ERR_CAP) };
    err.check(st)?;
    Ok((y, state))
}

// ---- tokenizer -----------------------------------------------------------------

/// Byte-level BPE tokenizer (Hugging Face tokenizer.json): `Send + Sync`.
pub struct Tokenizer {
    ptr: NonNull<sys::lm_tokenizer>,
}

// Documented immutable and shareable across threads once loaded.
unsafe impl Send for Tokenizer {}
unsafe impl Sync for Tokenizer {}

impl Tokenizer {
    /// Loads tokenizer.json from a file or a model directory holding one.
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path_cstring(path.as_ref())?;
        let mut out = ptr::null_mut();
        let mut err = ErrBuf::new();
        let st = unsafe { sys::lm_tokenizer_load(path.as_ptr(), &mut out, err.ptr(), ERR_CAP) };
        err.check(st)?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(Status::InvalidArgument, "no tokenizer"))?;
        Ok(Tokenizer { ptr })
    }

    /// Number of ids (max id + 1).
    pub fn vocab_size(&self) -> i64 {
        unsafe { sys::lm_tokenizer_vocab_size(self.ptr.as_ptr()) }
    }

    /// Ids of UTF-8 text (`&str` or raw bytes).
    pub fn encode(&self, text: impl AsRef<[u8]>) -> Result<Vec<i32>> {
        let text = text.as_ref();
        let mut cap = text.len() + 8;
        loop {
            let mut ids = vec![0i32; cap];
            let mut n = 0usize;
            let mut err = ErrBuf::new();
            let st = unsafe {
                sys::lm_tokenizer_encode(
                    self.ptr.as_ptr(),
                    text.as_ptr().cast(),
                    text.len(),
                    ids.as_mut_ptr(),
                    cap,
                    &mut n,
                    err.ptr(),
                    ERR_CAP,
                )
            };
            if st == sys::LM_ERR_BUFFER_TOO_SMALL && n > cap {
                cap = n; // the size protocol reports what is needed
                continue;
            }
            err.check(st)?;
            ids.truncate(n);
            return Ok(ids);
        }
    }

    /// UTF-8 bytes of ids.
    pub fn decode(&self, ids: &[i32]) -> Result<Vec<u8>> {
        let mut cap = 16 * ids.len() + 16;
        loop {
            let mut buf = vec![0u8; cap];
            let mut n = 0usize;
            let mut err = ErrBuf::new();
            let st = unsafe {
                sys::lm_tokenizer_decode(
                    self.ptr.as_ptr(),
                    ids.as_ptr(),
                    ids.len(),
                    buf.as_mut_ptr().cast(),
                    cap,
                    &mut n,
                    err.ptr(),
                    ERR_CAP,
                )
            };
            if st == sys::LM_ERR_BUFFER_TOO_SMALL && n > cap {
                cap = n;
                continue;
            }
            err.check(st)?;
            buf.truncate(n);
            return Ok(buf);
        }
    }

    /// Text of ids, invalid UTF-8 replaced by U+FFFD.
    pub fn decode_lossy(&self, ids: &[i32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode(ids)?).into_owned())
    }
}

impl Drop for Tokenizer {
    fn drop(&mut self) {
        unsafe { sys::lm_tokenizer_free(self.ptr.as_ptr()) }
    }
}
