// Package longmamba binds libongmamba (include/longmamba.h): Mamba language
// models with LongMamba / DeciMamba context extension.
//
//	m, err := longmamba.LoadModel("mamba-130m-hf", nil)
//	if err != nil { ... }
//	defer m.Close()
//	s, _ := m.NewSession(nil)
//	defer s.Close()
//	logits, err := s.Prefill([]int32{510, 4320, 273}, 1)
//
// The library is found through pkg-config (PKG_CONFIG_PATH may point at a
// build tree's meson-uninstalled/).  Thread model, from the C header: a
// Model, a Calibration and a Tokenizer may be used by any number of
// goroutines at once; a Session by one at a time (its methods take a lock,
// so concurrent use is serialized rather than undefined).
//
// Handles have Close methods; a finalizer frees a forgotten handle only as a
// safety net.  Closing a model (or a calibration) that open sessions still
// use is deferred until the last of them is closed.
package longmamba

/*
#cgo pkg-config: longmamba
#include <stdlib.h>
#include <string.h>
#include <longmamba.h>

// The two scale modes share one params layout; cgo calls them through these.
static lm_status lmgo_set_scaled(lm_session *s, int modulation, const double *scales, size_t n,
                                 const lm_calibration *c, const lm_longmamba_params *lp)
{
    if (modulation) {
        lm_modulation_params p;
        lm_modulation_params_init(&p);
        p.scales = scales;
        p.n_scales = n;
        p.longmamba = c;
        p.longmamba_params = lp;
        return lm_session_set_modulation(s, &p);
    }
    lm_mambaextend_params p;
    lm_mambaextend_params_init(&p);
    p.scales = scales;
    p.n_scales = n;
    p.longmamba = c;
    p.longmamba_params = lp;
    return lm_session_set_mambaextend(s, &p);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"unsafe"
)

const errCap = 1024

// Status is an lm_status value.
type Status int

// Status values (pinned in the C header).
const (
	OK                 Status = C.LM_OK
	InvalidArgument    Status = C.LM_ERR_INVALID_ARGUMENT
	NoMemory           Status = C.LM_ERR_NO_MEMORY
	IO                 Status = C.LM_ERR_IO
	Format             Status = C.LM_ERR_FORMAT
	Unsupported        Status = C.LM_ERR_UNSUPPORTED
	Shape              Status = C.LM_ERR_SHAPE
	Missing            Status = C.LM_ERR_MISSING
	BufferTooSmall     Status = C.LM_ERR_BUFFER_TOO_SMALL
	OutOfRange         Status = C.LM_ERR_OUT_OF_RANGE
	Backend            Status = C.LM_ERR_BACKEND
	BackendUnavailable Status = C.LM_ERR_BACKEND_UNAVAILABLE
	Mismatch           Status = C.LM_ERR_MISMATCH
	Aborted            Status = C.LM_ERR_ABORTED
	Numeric            Status = C.LM_ERR_NUMERIC
)

// String is the library's short description ("invalid argument", ...).
func (s Status) String() string {
	return C.GoString(C.lm_status_str(C.lm_status(s)))
}

// Error is a failed call: its status and the library's message.
type Error struct {
	Status Status
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("longmamba: %s (%s)", e.Msg, e.Status)
}

// Is lets errors.Is(err, &longmamba.Error{Status: longmamba.OutOfRange})
// match any error of that status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status && (t.Msg == "" || t.Msg == e.Msg)
}

// ErrClosed is returned by methods of a closed handle.
var ErrClosed = errors.New("longmamba: use of a closed handle")

func newError(st C.lm_status, msg string) error {
	if st == C.LM_OK {
		return nil
	}
	if msg == "" {
		msg = Status(st).String()
	}
	return &Error{Status: Status(st), Msg: msg}
}

// errBuf is the (err, err_cap) pair of calls without a session; C memory.
type errBuf struct{ p *C.char }

func newErrBuf() errBuf {
	p := (*C.char)(C.calloc(errCap, 1))
	return errBuf{p}
}
func (e errBuf) free() { C.free(unsafe.Pointer(e.p)) }
func (e errBuf) err(st C.lm_status) error {
	if st == C.LM_OK {
		return nil
	}
	return newError(st, C.GoString(e.p))
}

// Version is LM_VERSION_NUMBER of the loaded library.
func Version() int { return int(C.lm_version()) }

// VersionString is "MAJOR.MINOR.PATCH" of the loaded library.
func VersionString() string { return C.GoString(C.lm_version_string()) }

// BackendKind selects where a model runs.
type BackendKind int

// Backends.
const (
	BackendAuto BackendKind = C.LM_BACKEND_AUTO
	BackendCPU  BackendKind = C.LM_BACKEND_CPU
	BackendCUDA BackendKind = C.LM_BACKEND_CUDA
)

// WeightFormat is lm_weight_format: how a model holds its weights in memory.
type WeightFormat int

// Weight formats.
const (
	WeightsAsStored WeightFormat = C.LM_WEIGHTS_AS_STORED // every tensor in its stored type
	WeightsQ8_0     WeightFormat = C.LM_WEIGHTS_Q8_0      // linear layers quantised to Q8_0 at load
)

// Available reports whether the backend is compiled in and usable here.
func (b BackendKind) Available() bool { return C.lm_backend_available(C.lm_backend(b)) != 0 }

// Check reports whether the backend is usable here and the reason when not
// (CUDA: module libongmamba-cuda.so missing or not loadable, no driver, no
// device); for BackendAuto the reason names the backend it would pick.
func (b BackendKind) Check() (ok bool, reason string) {
	eb := newErrBuf()
	defer eb.free()
	st := C.lm_backend_status(C.lm_backend(b), eb.p, errCap)
	return st == C.LM_OK, C.GoString(eb.p)
}

func (b BackendKind) String() string { return C.GoString(C.lm_backend_name(C.lm_backend(b))) }

// Arch is the model architecture (1 = Mamba-1, 2 = Mamba-2, 3 = Falcon-Mamba).
type Arch int

// Mode is a session's mode.
type Mode int

// Modes.
const (
	Vanilla   Mode = C.LM_MODE_VANILLA
	LongMamba Mode = C.LM_MODE_LONGMAMBA
	DeciMamba Mode = C.LM_MODE_DECIMAMBA
	// MambaExtend: per-layer scales on Δ at prefill.
	MambaExtend Mode = C.LM_MODE_MAMBAEXTEND
	// Modulation: per-layer A' = -exp(s A_log) at prefill.
	Modulation Mode = C.LM_MODE_MODULATION
)

// handle is the shared lifetime logic: users (sessions) keep it alive past
// Close, and the free happens when the last one lets go.
type handle struct {
	mu      sync.Mutex
	users   int
	closing bool
	freed   bool
}

// acquire registers a user; false if the handle is closed.
func (h *handle) acquire() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing || h.freed {
		return false
	}
	h.users++
	return true
}

// release drops a user; true if the caller must now free the C object.
func (h *handle) release() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users--
	if h.closing && h.users == 0 && !h.freed {
		h.freed = true
		return true
	}
	return false
}

// close marks the handle closed; true if the caller must free now.
func (h *handle) close() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.closing = true
	if h.users == 0 && !h.freed {
		h.freed = true
		return true
	}
	return false
}

// ---- model -----------------------------------------------------------------

// ModelOptions are lm_model_params; the zero value means defaults.
type ModelOptions struct {
	Backend  BackendKind // default auto
	NThreads int         // CPU threads; 0 = online cores
	Device   int         // CUDA device ordinal
	Weights  WeightFormat // default WeightsAsStored
}

// ModelInfo describes a loaded model.
type ModelInfo struct {
	Arch           Arch
	DType          int
	Backend        BackendKind
	DModel         int64
	DInner         int64
	DState         int64
	DConv          int64
	DtRank         int64
	NLayer         int64
	VocabSize      int64 // rows of the embedding (padded vocabulary)
	NHeads         int64
	HeadDim        int64
	NGroups        int64
	NChannels      int64 // LongMamba channels per layer
	NParams        int64
	TiedEmbeddings bool
	NThreads       int
	Fingerprint    uint64
	Weights        WeightFormat // as loaded
}

// Model is a loaded model, shareable by any number of goroutines.
type Model struct {
	h    handle
	ptr  *C.lm_model
	info ModelInfo
}

// LoadModel loads a model directory (config.json + safetensors).
func LoadModel(dir string, opts *ModelOptions) (*Model, error) {
	if opts == nil {
		opts = &ModelOptions{}
	}
	var p C.lm_model_params
	C.lm_model_params_init(&p)
	p.backend = C.lm_backend(opts.Backend)
	p.n_threads = C.int32_t(opts.NThreads)
	p.device = C.int32_t(opts.Device)
	p.weights = C.lm_weight_format(opts.Weights)
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_model
	if err := eb.err(C.lm_model_load(cdir, &p, &out, eb.p, errCap)); err != nil {
		return nil, err
	}
	var i C.lm_model_info
	i.struct_size = C.uint32_t(unsafe.Sizeof(i))
	if st := C.lm_model_get_info(out, &i); st != C.LM_OK {
		C.lm_model_free(out)
		return nil, newError(st, "lm_model_get_info failed")
	}
	m := &Model{ptr: out, info: ModelInfo{
		Arch: Arch(i.arch), DType: int(i.dtype), Backend: BackendKind(i.backend),
		DModel: int64(i.d_model), DInner: int64(i.d_inner), DState: int64(i.d_state),
		DConv: int64(i.d_conv), DtRank: int64(i.dt_rank), NLayer: int64(i.n_layer),
		VocabSize: int64(i.vocab_size), NHeads: int64(i.n_heads), HeadDim: int64(i.head_dim),
		NGroups: int64(i.n_groups), NChannels: int64(i.n_channels), NParams: int64(i.n_params),
		TiedEmbeddings: i.tied_embeddings != 0, NThreads: int(i.n_threads),
		Fingerprint: uint64(i.fingerprint), Weights: WeightFormat(i.weights),
	}}
	// Safety net only: sessions hold the model, so it is unreachable only
	// once they are too (and their finalizers run first).
	runtime.SetFinalizer(m, func(m *Model) { m.Close() })
	return m, nil
}

// Info returns the model's dimensions and identity.
func (m *Model) Info() ModelInfo { return m.info }

// VocabSize is the number of logits per position.
func (m *Model) VocabSize() int { return int(m.info.VocabSize) }

func (m *Model) free() {
	C.lm_model_free(m.ptr)
	m.ptr = nil
}

// Close releases the model; deferred while sessions are open.  Idempotent.
func (m *Model) Close() error {
	if m.h.close() {
		m.free()
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

func (m *Model) release() {
	if m.h.release() {
		m.free()
		runtime.SetFinalizer(m, nil)
	}
}

// ---- calibration -------------------------------------------------------------

// CalibOptions are lm_calib_params; the zero value means defaults.
type CalibOptions struct {
	Mean    bool    // aggregate windows by mean instead of max
	Clamp   float64 // sc in [0, 0.2]; 0 = off
	Buckets []int64 // ascending prompt lengths; nil = LongMamba's list
	// Mamba Modulation scales, one per layer: a calibration of the modulated
	// model, for SetModulation with these scales.  nil = vanilla.
	ALogScales []float64
}

// CalibrationInfo describes a calibration.
type CalibrationInfo struct {
	Arch        Arch
	NLayer      int64
	NChannels   int64
	CalibLength int64
	NWindows    int64
	NBuckets    int64
	Clamp       float64
	Mean        bool
	Fingerprint uint64
}

// Calibration holds LongMamba statistics; immutable and shareable.
type Calibration struct {
	h    handle
	ptr  *C.lm_calibration
	info CalibrationInfo
}

func wrapCalibration(p *C.lm_calibration) (*Calibration, error) {
	var i C.lm_calibration_info
	i.struct_size = C.uint32_t(unsafe.Sizeof(i))
	if st := C.lm_calibration_get_info(p, &i); st != C.LM_OK {
		C.lm_calibration_free(p)
		return nil, newError(st, "lm_calibration_get_info failed")
	}
	c := &Calibration{ptr: p, info: CalibrationInfo{
		Arch: Arch(i.arch), NLayer: int64(i.n_layer), NChannels: int64(i.n_channels),
		CalibLength: int64(i.calib_length), NWindows: int64(i.n_windows),
		NBuckets: int64(i.n_buckets), Clamp: float64(i.clamp),
		Mean: i.aggregation == C.LM_CALIB_AGG_MEAN, Fingerprint: uint64(i.fingerprint),
	}}
	runtime.SetFinalizer(c, func(c *Calibration) { c.Close() })
	return c, nil
}

// cInt32s copies a Go slice into C memory (nil for an empty slice): C
// memory may not hold Go pointers, so pointer arrays are built from copies.
func cInt32s(v []int32) *C.int32_t {
	if len(v) == 0 {
		return nil
	}
	p := (*C.int32_t)(C.malloc(C.size_t(len(v)) * 4))
	copy(unsafe.Slice((*int32)(unsafe.Pointer(p)), len(v)), v)
	return p
}

// cDoubles copies v to C memory (free it); never NULL, so an empty slice
// still reaches the library as a list (of 0 entries).
func cDoubles(v []float64) *C.double {
	p := (*C.double)(C.malloc(C.size_t(len(v)+1) * 8))
	copy(unsafe.Slice((*float64)(unsafe.Pointer(p)), len(v)), v)
	return p
}

// Calibrate runs LongMamba calibration over token windows.
func (m *Model) Calibrate(windows [][]int32, opts *CalibOptions) (*Calibration, error) {
	if opts == nil {
		opts = &CalibOptions{}
	}
	if !m.h.acquire() {
		return nil, ErrClosed
	}
	defer m.release()
	n := len(windows)
	alloc := n
	if alloc == 0 {
		alloc = 1
	}
	ptrs := (**C.int32_t)(C.calloc(C.size_t(alloc), C.size_t(unsafe.Sizeof(uintptr(0)))))
	lens := (*C.size_t)(C.calloc(C.size_t(alloc), C.size_t(unsafe.Sizeof(C.size_t(0)))))
	ps := unsafe.Slice(ptrs, alloc)
	ls := unsafe.Slice(lens, alloc)
	defer func() {
		for _, p := range ps {
			C.free(unsafe.Pointer(p))
		}
		C.free(unsafe.Pointer(ptrs))
		C.free(unsafe.Pointer(lens))
	}()
	for i, w := range windows {
		ps[i] = cInt32s(w)
		ls[i] = C.size_t(len(w))
	}
	var p C.lm_calib_params
	C.lm_calib_params_init(&p)
	if opts.Mean {
		p.aggregation = C.LM_CALIB_AGG_MEAN
	}
	p.clamp = C.double(opts.Clamp)
	if opts.Buckets != nil {
		nb := len(opts.Buckets)
		b := (*C.int64_t)(C.malloc(C.size_t(nb+1) * 8))
		defer C.free(unsafe.Pointer(b))
		copy(unsafe.Slice((*int64)(unsafe.Pointer(b)), nb), opts.Buckets)
		p.buckets = b
		p.n_buckets = C.size_t(nb)
	}
	if opts.ALogScales != nil {
		a := cDoubles(opts.ALogScales)
		defer C.free(unsafe.Pointer(a))
		p.a_log_scales = a
		p.n_a_log_scales = C.size_t(len(opts.ALogScales))
	}
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_calibration
	st := C.lm_calibrate(m.ptr, ptrs, lens, C.size_t(n), &p, &out, eb.p, errCap)
	if err := eb.err(st); err != nil {
		return nil, err
	}
	return wrapCalibration(out)
}

// LoadCalibration loads a calibration file; with a model it must belong to it.
func LoadCalibration(path string, model *Model) (*Calibration, error) {
	var mp *C.lm_model
	if model != nil {
		if !model.h.acquire() {
			return nil, ErrClosed
		}
		defer model.release()
		mp = model.ptr
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_calibration
	if err := eb.err(C.lm_calibration_load(cpath, mp, &out, eb.p, errCap)); err != nil {
		return nil, err
	}
	return wrapCalibration(out)
}

// Info describes the calibration.
func (c *Calibration) Info() CalibrationInfo { return c.info }

// use runs f with the C pointer while keeping the calibration open.
func (c *Calibration) use(f func(p *C.lm_calibration) error) error {
	if !c.h.acquire() {
		return ErrClosed
	}
	defer c.release()
	return f(c.ptr)
}

// Save writes the calibration as safetensors.
func (c *Calibration) Save(path string) error {
	return c.use(func(p *C.lm_calibration) error {
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		eb := newErrBuf()
		defer eb.free()
		return eb.err(C.lm_calibration_save(p, cpath, eb.p, errCap))
	})
}

// Buckets returns the bucket lengths.
func (c *Calibration) Buckets() ([]int64, error) {
	out := make([]int64, c.info.NBuckets+1)
	err := c.use(func(p *C.lm_calibration) error {
		return newError(C.lm_calibration_get_buckets(p, (*C.int64_t)(&out[0]), C.size_t(c.info.NBuckets)), "")
	})
	return out[:c.info.NBuckets], err
}

// LogDecay returns each channel's log cumulative decay in one layer.
func (c *Calibration) LogDecay(layer int) ([]float64, error) {
	out := make([]float64, c.info.NChannels)
	err := c.use(func(p *C.lm_calibration) error {
		st := C.lm_calibration_get_log_decay(p, C.int64_t(layer), (*C.double)(&out[0]), C.size_t(len(out)))
		return newError(st, fmt.Sprintf("log decay: layer %d of %d", layer, c.info.NLayer))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Thresholds returns the unscaled token-filter thresholds of a layer and bucket.
func (c *Calibration) Thresholds(layer, bucket int) ([]float32, error) {
	out := make([]float32, c.info.NChannels)
	err := c.use(func(p *C.lm_calibration) error {
		st := C.lm_calibration_get_thresholds(p, C.int64_t(layer), C.int64_t(bucket), (*C.float)(&out[0]), C.size_t(len(out)))
		return newError(st, fmt.Sprintf("thresholds: layer %d of %d, bucket %d of %d", layer, c.info.NLayer, bucket, c.info.NBuckets))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClassifyChannels returns mask[layer*NChannels+c] (true = global: decay >
// theta) and the number of global channels per layer.
func (c *Calibration) ClassifyChannels(theta float64) ([]bool, []int64, error) {
	n := int(c.info.NLayer * c.info.NChannels)
	raw := make([]uint8, n)
	counts := make([]int64, c.info.NLayer)
	err := c.use(func(p *C.lm_calibration) error {
		eb := newErrBuf()
		defer eb.free()
		return eb.err(C.lm_classify_channels(p, C.double(theta), (*C.uint8_t)(&raw[0]), C.size_t(n),
			(*C.int64_t)(&counts[0]), C.size_t(len(counts)), eb.p, errCap))
	})
	if err != nil {
		return nil, nil, err
	}
	mask := make([]bool, n)
	for i, v := range raw {
		mask[i] = v != 0
	}
	return mask, counts, nil
}

// ClassifyChannels is lm_classify_channels; see Calibration.ClassifyChannels.
func ClassifyChannels(c *Calibration, theta float64) ([]bool, []int64, error) {
	return c.ClassifyChannels(theta)
}

func (c *Calibration) free() {
	C.lm_calibration_free(c.ptr)
	c.ptr = nil
}

// Close releases the calibration; deferred while sessions filter with it.
func (c *Calibration) Close() error {
	if c.h.close() {
		c.free()
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

func (c *Calibration) release() {
	if c.h.release() {
		c.free()
		runtime.SetFinalizer(c, nil)
	}
}

// ---- MambaExtend / Modulation scales ------------------------------------------

// SpsaOptions are lm_spsa_params; the zero value means defaults.
type SpsaOptions struct {
	Iterations int32  // 0 = 50 (MambaExtend) / 30 (Modulation)
	Seed       uint64 // s0 and the Rademacher draws
	// MambaExtend only: calibrate with LongMamba's filter on.
	LongMamba       *Calibration
	LongMambaParams *LongMambaParams
}

// ScalesInfo describes calibrated scales.
type ScalesInfo struct {
	Mode          Mode
	Arch          Arch
	NLayer        int64
	TargetLength  int64
	NWindows      int64
	Iterations    int32
	Seed          uint64
	LossInitial   float64 // mean next-token cross-entropy at s0
	LossFinal     float64 // at the returned scales
	WithLongMamba bool
	Fingerprint   uint64
}

// Scales are per-layer MambaExtend / Modulation scales from SPSA; Values
// go to SetMambaExtend / SetModulation.
type Scales struct {
	h    handle
	ptr  *C.lm_scales
	info ScalesInfo
}

func wrapScales(p *C.lm_scales) (*Scales, error) {
	var i C.lm_scales_info
	i.struct_size = C.uint32_t(unsafe.Sizeof(i))
	if st := C.lm_scales_get_info(p, &i); st != C.LM_OK {
		C.lm_scales_free(p)
		return nil, newError(st, "lm_scales_get_info failed")
	}
	sc := &Scales{ptr: p, info: ScalesInfo{
		Mode: Mode(i.mode), Arch: Arch(i.arch), NLayer: int64(i.n_layer),
		TargetLength: int64(i.target_length), NWindows: int64(i.n_windows),
		Iterations: int32(i.iterations), Seed: uint64(i.seed),
		LossInitial: float64(i.loss_initial), LossFinal: float64(i.loss_final),
		WithLongMamba: i.with_longmamba != 0, Fingerprint: uint64(i.fingerprint),
	}}
	runtime.SetFinalizer(sc, func(sc *Scales) { sc.Close() })
	return sc, nil
}

// CalibrateScales finds per-layer scales of mode (MambaExtend or
// Modulation) by SPSA over token windows (lm_scales_calibrate).
func (m *Model) CalibrateScales(mode Mode, windows [][]int32, opts *SpsaOptions) (*Scales, error) {
	if opts == nil {
		opts = &SpsaOptions{}
	}
	if !m.h.acquire() {
		return nil, ErrClosed
	}
	defer m.release()
	n := len(windows)
	alloc := n
	if alloc == 0 {
		alloc = 1
	}
	ptrs := (**C.int32_t)(C.calloc(C.size_t(alloc), C.size_t(unsafe.Sizeof(uintptr(0)))))
	lens := (*C.size_t)(C.calloc(C.size_t(alloc), C.size_t(unsafe.Sizeof(C.size_t(0)))))
	ps := unsafe.Slice(ptrs, alloc)
	ls := unsafe.Slice(lens, alloc)
	defer func() {
		for _, p := range ps {
			C.free(unsafe.Pointer(p))
		}
		C.free(unsafe.Pointer(ptrs))
		C.free(unsafe.Pointer(lens))
	}()
	for i, w := range windows {
		ps[i] = cInt32s(w)
		ls[i] = C.size_t(len(w))
	}
	// C memory: the params point at the LongMamba params
	p := (*C.lm_spsa_params)(C.malloc(C.size_t(unsafe.Sizeof(C.lm_spsa_params{}))))
	defer C.free(unsafe.Pointer(p))
	C.lm_spsa_params_init(p)
	p.iterations = C.int32_t(opts.Iterations)
	p.seed = C.uint64_t(opts.Seed)
	if opts.LongMamba != nil {
		if !opts.LongMamba.h.acquire() {
			return nil, ErrClosed
		}
		defer opts.LongMamba.release()
		lp := (*C.lm_longmamba_params)(C.malloc(C.size_t(unsafe.Sizeof(C.lm_longmamba_params{}))))
		defer C.free(unsafe.Pointer(lp))
		C.lm_longmamba_params_init(lp)
		if q := opts.LongMambaParams; q != nil {
			if q.Theta != 0 {
				lp.theta = C.double(q.Theta)
			}
			if q.ThresholdScale != 0 {
				lp.threshold_scale = C.double(q.ThresholdScale)
			}
			if q.TriggerLength != 0 {
				lp.trigger_length = C.int64_t(q.TriggerLength)
			}
		}
		p.longmamba = opts.LongMamba.ptr
		p.longmamba_params = lp
	}
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_scales
	st := C.lm_scales_calibrate(m.ptr, C.lm_mode(mode), ptrs, lens, C.size_t(n), p, &out, eb.p, errCap)
	if err := eb.err(st); err != nil {
		return nil, err
	}
	return wrapScales(out)
}

// LoadScales loads a scales file; with a model it must belong to it.
func LoadScales(path string, model *Model) (*Scales, error) {
	var mp *C.lm_model
	if model != nil {
		if !model.h.acquire() {
			return nil, ErrClosed
		}
		defer model.release()
		mp = model.ptr
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_scales
	if err := eb.err(C.lm_scales_load(cpath, mp, &out, eb.p, errCap)); err != nil {
		return nil, err
	}
	return wrapScales(out)
}

// Info describes the scales.
func (sc *Scales) Info() ScalesInfo { return sc.info }

func (sc *Scales) get(initial bool) ([]float64, error) {
	if !sc.h.acquire() {
		return nil, ErrClosed
	}
	defer sc.release()
	n := int(sc.info.NLayer)
	buf := (*C.double)(C.malloc(C.size_t(n+1) * 8))
	defer C.free(unsafe.Pointer(buf))
	var st C.lm_status
	if initial {
		st = C.lm_scales_get(sc.ptr, nil, buf, C.size_t(n))
	} else {
		st = C.lm_scales_get(sc.ptr, buf, nil, C.size_t(n))
	}
	if st != C.LM_OK {
		return nil, newError(st, "lm_scales_get failed")
	}
	out := make([]float64, n)
	copy(out, unsafe.Slice((*float64)(unsafe.Pointer(buf)), n))
	return out, nil
}

// Values returns the calibrated scales, one per layer.
func (sc *Scales) Values() ([]float64, error) { return sc.get(false) }

// Initial returns SPSA's s0.
func (sc *Scales) Initial() ([]float64, error) { return sc.get(true) }

// Save writes the scales as safetensors.
func (sc *Scales) Save(path string) error {
	if !sc.h.acquire() {
		return ErrClosed
	}
	defer sc.release()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	eb := newErrBuf()
	defer eb.free()
	return eb.err(C.lm_scales_save(sc.ptr, cpath, eb.p, errCap))
}

func (sc *Scales) release() {
	if sc.h.release() {
		C.lm_scales_free(sc.ptr)
		sc.ptr = nil
		runtime.SetFinalizer(sc, nil)
	}
}

// Close releases the scales.
func (sc *Scales) Close() error {
	if sc.h.close() {
		C.lm_scales_free(sc.ptr)
		sc.ptr = nil
		runtime.SetFinalizer(sc, nil)
	}
	return nil
}

// ---- sessions -----------------------------------------------------------------

// SessionOptions are lm_session_params; the zero value means defaults.
type SessionOptions struct {
	ChunkSize int64 // prefill tokens per chunk; 0 = 512
	AllowTF32 bool  // CUDA, fp32 models
}

// LongMambaParams: zero values mean the library's defaults.
type LongMambaParams struct {
	Theta          float64 // global iff decay > theta
	ThresholdScale float64 // b: tau = b * thr
	TriggerLength  int64   // filter prefills of >= this many tokens
}

// DeciMambaParams: zero values / nil mean the library's defaults.
type DeciMambaParams struct {
	Layers  []int32 // decimating layers in order; nil = the middle layer
	LBase   int64
	Beta    float64
	MinLen  int64
	Protect int64 // last tokens always kept
}

// Session is recurrent state over a model, used by one goroutine at a time.
type Session struct {
	mu    sync.Mutex
	ptr   *C.lm_session
	model *Model
	calib *Calibration
	vocab int
	mode  Mode
	// set by SetSampling: DecodeSample asks for this session's logits row
	returnLogits bool
}

// NewSession creates a session in vanilla mode with zero state.
func (m *Model) NewSession(opts *SessionOptions) (*Session, error) {
	if opts == nil {
		opts = &SessionOptions{}
	}
	if !m.h.acquire() {
		return nil, ErrClosed
	}
	var p C.lm_session_params
	C.lm_session_params_init(&p)
	if opts.ChunkSize != 0 {
		p.chunk_size = C.int64_t(opts.ChunkSize)
	}
	if opts.AllowTF32 {
		p.flags |= C.LM_SESSION_ALLOW_TF32
	}
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_session
	if err := eb.err(C.lm_session_create(m.ptr, &p, &out, eb.p, errCap)); err != nil {
		m.release()
		return nil, err
	}
	s := &Session{ptr: out, model: m, vocab: m.VocabSize()}
	runtime.SetFinalizer(s, func(s *Session) { s.Close() })
	return s, nil
}

// lock takes the session; ErrClosed if it is closed.
func (s *Session) lock() error {
	s.mu.Lock()
	if s.ptr == nil {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (s *Session) check(st C.lm_status) error {
	if st == C.LM_OK {
		return nil
	}
	return newError(st, C.GoString(C.lm_session_last_error(s.ptr)))
}

func i32ptr(v []int32) *C.int32_t {
	if len(v) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&v[0]))
}

func f32ptr(v []float32) *C.float {
	if len(v) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&v[0]))
}

// VocabSize is the number of logits per position.
func (s *Session) VocabSize() int { return s.vocab }

// Prefill feeds tokens and returns the logits of the last nLogits positions,
// [nLogits][vocab] row-major.
func (s *Session) Prefill(tokens []int32, nLogits int) ([]float32, error) {
	var out []float32
	if nLogits > 0 && nLogits <= len(tokens) { // more is the library's error to report
		out = make([]float32, nLogits*s.vocab)
	}
	if err := s.PrefillInto(tokens, nLogits, out); err != nil {
		return nil, err
	}
	return out, nil
}

// PrefillInto feeds tokens, writing the last nLogits positions' logits to
// out (BufferTooSmall if it is too short).
func (s *Session) PrefillInto(tokens []int32, nLogits int, out []float32) error {
	if nLogits < 0 {
		return &Error{Status: InvalidArgument, Msg: "nLogits is negative"}
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	// Go slices of plain numbers may be passed for the duration of a call.
	st := C.lm_session_prefill(s.ptr, i32ptr(tokens), C.size_t(len(tokens)), C.size_t(nLogits),
		f32ptr(out), C.size_t(len(out)))
	return s.check(st)
}

// Decode feeds one token and returns its logits.
func (s *Session) Decode(token int32) ([]float32, error) {
	out := make([]float32, s.vocab)
	if err := s.DecodeInto(token, out); err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeInto feeds one token, logits into out (BufferTooSmall if short).
func (s *Session) DecodeInto(token int32, out []float32) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	var dummy [1]float32 // an empty out must not mean "no logits wanted" (NULL)
	p := f32ptr(out)
	if p == nil {
		p = (*C.float)(unsafe.Pointer(&dummy[0]))
	}
	return s.check(C.lm_session_decode(s.ptr, C.int32_t(token), p, C.size_t(len(out))))
}

// lockBatch takes each session of a batch once, in address order (no
// deadlock between overlapping batches); a session listed twice or nil is
// refused first.  The returned function unlocks them.
func lockBatch(sessions []*Session) (func(), error) {
	order := make([]*Session, len(sessions))
	copy(order, sessions)
	sort.Slice(order, func(i, j int) bool {
		return uintptr(unsafe.Pointer(order[i])) < uintptr(unsafe.Pointer(order[j]))
	})
	for i, s := range order {
		if s == nil {
			return nil, &Error{Status: InvalidArgument, Msg: "a session is nil"}
		}
		if i > 0 && s == order[i-1] {
			return nil, &Error{Status: InvalidArgument, Msg: "a session appears twice in the batch"}
		}
	}
	for i, s := range order {
		if err := s.lock(); err != nil {
			for _, u := range order[:i] {
				u.mu.Unlock()
			}
			return nil, err
		}
	}
	return func() {
		for _, s := range order {
			s.mu.Unlock()
		}
	}, nil
}

// batchLens refuses a batch whose lengths differ.
func batchLens(sessions []*Session, tokens []int32) error {
	if len(sessions) != len(tokens) {
		return &Error{Status: InvalidArgument,
			Msg: fmt.Sprintf("%d sessions but %d tokens", len(sessions), len(tokens))}
	}
	return nil
}

// batchPtrs lists the C handles of locked sessions.
func batchPtrs(sessions []*Session) []*C.lm_session {
	ptrs := make([]*C.lm_session, len(sessions))
	for i, s := range sessions {
		ptrs[i] = s.ptr
	}
	return ptrs
}

// DecodeBatch runs one decode step for several sessions of one model at
// once (lm_session_decode_batch): sessions[i] consumes tokens[i].  It
// returns the logits row by row (len(sessions) x vocab).  The CUDA backend
// reads the weights once for the whole batch.
func DecodeBatch(sessions []*Session, tokens []int32) ([]float32, error) {
	if err := batchLens(sessions, tokens); err != nil || len(sessions) == 0 {
		return nil, err
	}
	unlock, err := lockBatch(sessions)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ptrs := batchPtrs(sessions)
	out := make([]float32, len(sessions)*sessions[0].vocab)
	st := C.lm_session_decode_batch(&ptrs[0], C.size_t(len(ptrs)), i32ptr(tokens), f32ptr(out),
		C.size_t(len(out)))
	if err := sessions[0].check(st); err != nil {
		return nil, err
	}
	return out, nil
}

// PrefillBatch prefills several sessions' prompts together
// (lm_session_prefill_batch): sessions[i] (each at its own position)
// consumes prompts[i]; lengths may differ.  The prompts run packed back to
// back (no padding), as Prefill(prompts[i], 1) of each would up to
// rounding.  It returns the logits of each prompt's last token row by row
// (len(sessions) x vocab).  On an error no session moves.
func PrefillBatch(sessions []*Session, prompts [][]int32) ([]float32, error) {
	if len(sessions) != len(prompts) {
		return nil, &Error{Status: InvalidArgument,
			Msg: fmt.Sprintf("%d sessions but %d prompts", len(sessions), len(prompts))}
	}
	if len(sessions) == 0 {
		return nil, nil
	}
	unlock, err := lockBatch(sessions)
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, total := len(prompts), 0
	for _, p := range prompts {
		total += len(p)
	}
	// C memory may not hold Go pointers: the prompts are copied into one C
	// buffer and the table of pointers into it is C memory too.
	buf := (*C.int32_t)(C.malloc(C.size_t(total+1) * 4))
	tab := (**C.int32_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(buf))
	defer C.free(unsafe.Pointer(tab))
	toks := unsafe.Slice((*int32)(unsafe.Pointer(buf)), total+1)
	ts := unsafe.Slice(tab, n)
	lens := make([]C.size_t, n)
	off := 0
	for i, p := range prompts {
		copy(toks[off:], p)
		ts[i] = (*C.int32_t)(unsafe.Pointer(&toks[off]))
		lens[i] = C.size_t(len(p))
		off += len(p)
	}
	ptrs := batchPtrs(sessions)
	out := make([]float32, n*sessions[0].vocab)
	st := C.lm_session_prefill_batch(&ptrs[0], C.size_t(n), tab, &lens[0], f32ptr(out), C.size_t(len(out)))
	if err := sessions[0].check(st); err != nil {
		return nil, err
	}
	return out, nil
}

// SamplingParams are lm_sampling_params: how DecodeSample draws a
// session's next token (the rule in include/longmamba.h, "sampling the
// next token").  The zero value is greedy.
type SamplingParams struct {
	Temperature  float32 // <= 0: greedy (argmax, ties to the lowest id)
	TopK         int32   // keep the k highest logits; 0 = all
	TopP         float32 // nucleus mass; 0 or 1 = off
	Seed         uint64  // the draw at a position depends only on (seed, position)
	ReturnLogits bool    // DecodeSample returns this session's logits row too
}

// SetSampling sets how DecodeSample draws this session's next token
// (lm_session_set_sampling); nil means greedy.  Reset and LoadState keep
// it.  Out-of-range values are OutOfRange errors naming the field.
func (s *Session) SetSampling(p *SamplingParams) error {
	if p == nil {
		p = &SamplingParams{}
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	var c C.lm_sampling_params
	C.lm_sampling_params_init(&c)
	c.temperature = C.float(p.Temperature)
	c.top_k = C.int32_t(p.TopK)
	c.top_p = C.float(p.TopP)
	c.seed = C.uint64_t(p.Seed)
	if p.ReturnLogits {
		c.flags |= C.LM_SAMPLE_RETURN_LOGITS
	}
	if err := s.check(C.lm_session_set_sampling(s.ptr, &c)); err != nil {
		return err
	}
	s.returnLogits = p.ReturnLogits
	return nil
}

// DecodeSample runs one decode step for several sessions of one model,
// each drawing its next token with its own sampler inside the library
// (lm_session_decode_sample): sessions[i] consumes tokens[i].  It returns
// the next tokens and, per session, its logits row when it samples with
// ReturnLogits (else nil).  On an error no session moves.
func DecodeSample(sessions []*Session, tokens []int32) ([]int32, [][]float32, error) {
	if err := batchLens(sessions, tokens); err != nil || len(sessions) == 0 {
		return nil, nil, err
	}
	unlock, err := lockBatch(sessions)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	ptrs := batchPtrs(sessions)
	n, vocab := len(sessions), sessions[0].vocab
	var rows []float32
	for _, s := range sessions {
		if s.returnLogits {
			rows = make([]float32, n*vocab)
			break
		}
	}
	next := make([]int32, n)
	st := C.lm_session_decode_sample(&ptrs[0], C.size_t(n), i32ptr(tokens), i32ptr(next),
		f32ptr(rows), C.size_t(len(rows)))
	if err := sessions[0].check(st); err != nil {
		return nil, nil, err
	}
	logits := make([][]float32, n)
	for i, s := range sessions {
		if s.returnLogits {
			logits[i] = rows[i*vocab : (i+1)*vocab : (i+1)*vocab]
		}
	}
	return next, logits, nil
}

// Advance feeds one token without computing logits.
func (s *Session) Advance(token int32) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	return s.check(C.lm_session_decode(s.ptr, C.int32_t(token), nil, 0))
}

// Reset returns to zero state and position 0; the mode and the sampler are kept.
func (s *Session) Reset() error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	return s.check(C.lm_session_reset(s.ptr))
}

// Position is the number of tokens consumed since creation or Reset
// (-1 for a closed session).
func (s *Session) Position() int64 {
	if s.lock() != nil {
		return -1
	}
	defer s.mu.Unlock()
	return int64(C.lm_session_position(s.ptr))
}

// Mode is the current mode.
func (s *Session) Mode() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetLengthHint sets the total prompt length the next prefills add up to.
func (s *Session) SetLengthHint(total int64) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	return s.check(C.lm_session_set_length_hint(s.ptr, C.int64_t(total)))
}

func (s *Session) dropCalib() {
	if s.calib != nil {
		s.calib.release()
		s.calib = nil
	}
}

// SetVanilla switches to vanilla mode from the next prefill.
func (s *Session) SetVanilla() error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if err := s.check(C.lm_session_set_vanilla(s.ptr)); err != nil {
		return err
	}
	s.dropCalib()
	s.mode = Vanilla
	return nil
}

// SetLongMamba switches to LongMamba mode from the next prefill.  The
// session keeps the calibration open until its mode changes or it closes.
func (s *Session) SetLongMamba(c *Calibration, params *LongMambaParams) error {
	if params == nil {
		params = &LongMambaParams{}
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if !c.h.acquire() {
		return ErrClosed
	}
	var p C.lm_longmamba_params
	C.lm_longmamba_params_init(&p)
	if params.Theta != 0 {
		p.theta = C.double(params.Theta)
	}
	if params.ThresholdScale != 0 {
		p.threshold_scale = C.double(params.ThresholdScale)
	}
	if params.TriggerLength != 0 {
		p.trigger_length = C.int64_t(params.TriggerLength)
	}
	if err := s.check(C.lm_session_set_longmamba(s.ptr, c.ptr, &p)); err != nil {
		c.release()
		return err
	}
	s.dropCalib()
	s.calib = c
	s.mode = LongMamba
	return nil
}

func (s *Session) setScaled(mode Mode, scales []float64, c *Calibration, params *LongMambaParams) error {
	if params == nil {
		params = &LongMambaParams{}
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	var cp *C.lm_calibration
	if c != nil {
		if !c.h.acquire() {
			return ErrClosed
		}
		cp = c.ptr
	}
	// C memory: the library reads these during the call only
	sc := cDoubles(scales)
	defer C.free(unsafe.Pointer(sc))
	lp := (*C.lm_longmamba_params)(C.malloc(C.size_t(unsafe.Sizeof(C.lm_longmamba_params{}))))
	defer C.free(unsafe.Pointer(lp))
	C.lm_longmamba_params_init(lp)
	if params.Theta != 0 {
		lp.theta = C.double(params.Theta)
	}
	if params.ThresholdScale != 0 {
		lp.threshold_scale = C.double(params.ThresholdScale)
	}
	if params.TriggerLength != 0 {
		lp.trigger_length = C.int64_t(params.TriggerLength)
	}
	mod := C.int(0)
	if mode == Modulation {
		mod = 1
	}
	if err := s.check(C.lmgo_set_scaled(s.ptr, mod, sc, C.size_t(len(scales)), cp, lp)); err != nil {
		if c != nil {
			c.release()
		}
		return err
	}
	s.dropCalib()
	s.calib = c
	s.mode = mode
	return nil
}

// SetMambaExtend switches to MambaExtend from the next prefill: Δ of layer l
// times scales[l] (one per layer, finite and > 0).  With a (vanilla)
// calibration c, LongMamba's filter too, decided on the unscaled Δ; the
// session keeps c open like SetLongMamba.  params may be nil.
func (s *Session) SetMambaExtend(scales []float64, c *Calibration, params *LongMambaParams) error {
	return s.setScaled(MambaExtend, scales, c, params)
}

// SetModulation switches to Mamba Modulation from the next prefill: layer l
// runs with A' = -exp(scales[l] A_log).  With LongMamba, c must come from
// Calibrate with ALogScales equal to scales.
func (s *Session) SetModulation(scales []float64, c *Calibration, params *LongMambaParams) error {
	return s.setScaled(Modulation, scales, c, params)
}

// SetDeciMamba switches to DeciMamba mode from the next prefill.
func (s *Session) SetDeciMamba(params *DeciMambaParams) error {
	if params == nil {
		params = &DeciMambaParams{}
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	var p C.lm_decimamba_params
	C.lm_decimamba_params_init(&p)
	if params.Layers != nil {
		// p is Go memory and may not point at Go memory: copy to C.
		l := cInt32s(params.Layers)
		defer C.free(unsafe.Pointer(l))
		p.layers = l
		p.n_layers = C.size_t(len(params.Layers))
	}
	if params.LBase != 0 {
		p.l_base = C.int64_t(params.LBase)
	}
	if params.Beta != 0 {
		p.beta = C.double(params.Beta)
	}
	if params.MinLen != 0 {
		p.min_len = C.int64_t(params.MinLen)
	}
	if params.Protect != 0 {
		p.protect = C.int64_t(params.Protect)
	}
	if err := s.check(C.lm_session_set_decimamba(s.ptr, &p)); err != nil {
		return err
	}
	s.dropCalib()
	s.mode = DeciMamba
	return nil
}

// StateSize is the size of the state blob in bytes.
func (s *Session) StateSize() (int, error) {
	if err := s.lock(); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	var n C.size_t
	if err := s.check(C.lm_session_state_size(s.ptr, &n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// SaveState returns the recurrent state and position as an opaque blob.
func (s *Session) SaveState() ([]byte, error) {
	n, err := s.StateSize()
	if err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	buf := make([]byte, n+1)
	var written C.size_t
	if err := s.check(C.lm_session_state_save(s.ptr, unsafe.Pointer(&buf[0]), C.size_t(n), &written)); err != nil {
		return nil, err
	}
	return buf[:written], nil
}

// LoadState restores a blob from SaveState (of a session of this model).
func (s *Session) LoadState(blob []byte) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	var p unsafe.Pointer
	if len(blob) > 0 {
		p = unsafe.Pointer(&blob[0])
	}
	return s.check(C.lm_session_state_load(s.ptr, p, C.size_t(len(blob))))
}

// Close frees the session.  Idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return nil
	}
	C.lm_session_free(s.ptr)
	s.ptr = nil
	s.dropCalib()
	s.model.release()
	runtime.SetFinalizer(s, nil)
	return nil
}

// ---- the filtered scan ----------------------------------------------------------

// ScanInput holds the arrays of lm_scan_filtered, token-major:
// U, Delta, Z [Length][Channels]; B, C [Length][StateSize]; A
// [Channels][StateSize]; D, DtBias, Thresholds, GlobalMask [Channels];
// StateIn [Channels][StateSize].  Optional ones may be nil.
type ScanInput struct {
	Length, Channels, StateSize int
	U, Delta                    []float32
	DeltaIsDt                   bool
	DtBias                      []float32
	A, B, C                     []float32
	D, Z                        []float32
	Thresholds                  []float32
	GlobalMask                  []bool
	StateIn                     []float32
	NThreads                    int
}

// ScanFiltered runs the Mamba-1 selective scan of one sequence with
// LongMamba filtering; returns y [Length][Channels] and the final state
// [Channels][StateSize].  Slice lengths are checked first.
func ScanFiltered(in *ScanInput) (y, state []float32, err error) {
	L, E, N := in.Length, in.Channels, in.StateSize
	if L <= 0 || E <= 0 || N <= 0 {
		return nil, nil, &Error{Status: InvalidArgument, Msg: "scan: sizes must be > 0"}
	}
	// All arrays go to one C allocation: the args struct may hold only C pointers.
	type arr struct {
		name     string
		v        []float32
		n        int
		required bool
	}
	arrs := []arr{
		{"U", in.U, L * E, true}, {"Delta", in.Delta, L * E, true}, {"DtBias", in.DtBias, E, false},
		{"A", in.A, E * N, true}, {"B", in.B, L * N, true}, {"C", in.C, L * N, true},
		{"D", in.D, E, false}, {"Z", in.Z, L * E, false}, {"Thresholds", in.Thresholds, E, false},
		{"StateIn", in.StateIn, E * N, false},
	}
	total := L*E + E*N // y, state_out
	for _, a := range arrs {
		if a.v == nil && !a.required {
			continue
		}
		if len(a.v) != a.n {
			return nil, nil, &Error{Status: InvalidArgument, Msg: fmt.Sprintf("scan: %s has %d values, %d expected", a.name, len(a.v), a.n)}
		}
		total += a.n
	}
	if in.GlobalMask != nil && len(in.GlobalMask) != E {
		return nil, nil, &Error{Status: InvalidArgument, Msg: fmt.Sprintf("scan: GlobalMask has %d values, %d expected", len(in.GlobalMask), E)}
	}
	mem := C.malloc(C.size_t(total)*4 + C.size_t(E) + 1)
	defer C.free(mem)
	all := unsafe.Slice((*float32)(mem), total)
	off := 0
	take := func(v []float32, n int) *C.float {
		p := (*C.float)(unsafe.Pointer(&all[off]))
		copy(all[off:off+n], v)
		off += n
		return p
	}
	ptrs := make([]*C.float, len(arrs))
	for i, a := range arrs {
		if a.v != nil {
			ptrs[i] = take(a.v, a.n)
		}
	}
	yp := take(nil, L*E)
	sp := take(nil, E*N)
	var args C.lm_scan_args
	C.lm_scan_args_init(&args)
	args.length, args.channels, args.state_size = C.int64_t(L), C.int64_t(E), C.int64_t(N)
	args.u, args.delta, args.dt_bias = ptrs[0], ptrs[1], ptrs[2]
	args.A, args.B, args.C = ptrs[3], ptrs[4], ptrs[5]
	args.D, args.z, args.thresholds, args.state_in = ptrs[6], ptrs[7], ptrs[8], ptrs[9]
	if in.DeltaIsDt {
		args.delta_is_dt = 1
	}
	if in.GlobalMask != nil {
		m := unsafe.Slice((*uint8)(unsafe.Add(mem, total*4)), E)
		for i, g := range in.GlobalMask {
			m[i] = 0
			if g {
				m[i] = 1
			}
		}
		args.global_mask = (*C.uint8_t)(unsafe.Pointer(&m[0]))
	}
	args.y, args.state_out = yp, sp
	args.n_threads = C.int32_t(in.NThreads)
	eb := newErrBuf()
	defer eb.free()
	if err := eb.err(C.lm_scan_filtered(&args, eb.p, errCap)); err != nil {
		return nil, nil, err
	}
	y = append([]float32(nil), all[total-L*E-E*N:total-E*N]...)
	state = append([]float32(nil), all[total-E*N:]...)
	return y, state, nil
}

// ---- tokenizer ------------------------------------------------------------------

// Tokenizer is a byte-level BPE tokenizer (tokenizer.json); shareable.
type Tokenizer struct {
	mu  sync.RWMutex // Close vs. concurrent use
	ptr *C.lm_tokenizer
}

// LoadTokenizer loads tokenizer.json from a file or a model directory.
func LoadTokenizer(path string) (*Tokenizer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	eb := newErrBuf()
	defer eb.free()
	var out *C.lm_tokenizer
	if err := eb.err(C.lm_tokenizer_load(cpath, &out, eb.p, errCap)); err != nil {
		return nil, err
	}
	t := &Tokenizer{ptr: out}
	runtime.SetFinalizer(t, func(t *Tokenizer) { t.Close() })
	return t, nil
}

// VocabSize is the number of ids (max id + 1); -1 if closed.
func (t *Tokenizer) VocabSize() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return -1
	}
	return int64(C.lm_tokenizer_vocab_size(t.ptr))
}

// Encode returns the ids of UTF-8 text.
func (t *Tokenizer) Encode(text string) ([]int32, error) { return t.EncodeBytes([]byte(text)) }

// EncodeBytes returns the ids of UTF-8 bytes.
func (t *Tokenizer) EncodeBytes(text []byte) ([]int32, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return nil, ErrClosed
	}
	var tp *C.char
	if len(text) > 0 {
		tp = (*C.char)(unsafe.Pointer(&text[0]))
	}
	eb := newErrBuf()
	defer eb.free()
	capacity := len(text) + 8
	for {
		ids := make([]int32, capacity)
		var n C.size_t
		st := C.lm_tokenizer_encode(t.ptr, tp, C.size_t(len(text)), i32ptr(ids), C.size_t(capacity), &n, eb.p, errCap)
		if st == C.LM_ERR_BUFFER_TOO_SMALL && int(n) > capacity {
			capacity = int(n) // the size protocol reports what is needed
			continue
		}
		if err := eb.err(st); err != nil {
			return nil, err
		}
		return ids[:n], nil
	}
}

// Decode returns the UTF-8 bytes of ids.
func (t *Tokenizer) Decode(ids []int32) ([]byte, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return nil, ErrClosed
	}
	eb := newErrBuf()
	defer eb.free()
	capacity := 16*len(ids) + 16
	for {
		buf := make([]byte, capacity)
		var n C.size_t
		st := C.lm_tokenizer_decode(t.ptr, i32ptr(ids), C.size_t(len(ids)), (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(capacity), &n, eb.p, errCap)
		if st == C.LM_ERR_BUFFER_TOO_SMALL && int(n) > capacity {
			capacity = int(n)
			continue
		}
		if err := eb.err(st); err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// Close frees the tokenizer.  Idempotent.
func (t *Tokenizer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr != nil {
		C.lm_tokenizer_free(t.ptr)
		t.ptr = nil
		runtime.SetFinalizer(t, nil)
	}
	return nil
}
