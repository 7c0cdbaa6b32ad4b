import ctypes
import lzma
import math
import os
import random
import struct
import subprocess
import sys
import threading

import pytest

import longmamba as lm
from longmamba import _capi, _core

from conftest import DATA, fixture_dirs, read_safetensors, to_list

TOL = 1e-5


def rel_err(got, want):
    """L2 relative error and max abs error of two flat sequences."""
    assert len(got) == len(want)
    num = sum((g - w) ** 2 for g, w in zip(got, want))
    den = sum(w * w for w in want)
    return math.sqrt(num / den), max(abs(g - w) for g, w in zip(got, want))


def flat(x):
    x = to_list(x)
    out = []
    for row in x:
        if isinstance(row, list):
            out += flat(row)
        else:
            out.append(row)
    return out


# ---- library --------------------------------------------------------------------

def test_version_and_statuses():
    assert lm.version() // 10000 == _capi.ABI_MAJOR
    assert lm.version_string().count(".") == 2
    assert lm.status_str(lm.Status.OK) != lm.status_str(lm.Status.IO)
    assert lm.backend_available("cpu")
    assert lm.backend_available(lm.Backend.AUTO)
    with pytest.raises(ValueError):
        lm.backend_available("tpu")


def test_backend_status():
    assert lm.backend_status("cpu") == (True, "")
    ok, why = lm.backend_status("auto")
    assert ok and why.startswith("auto: ")
    ok, why = lm.backend_status(lm.Backend.CUDA)
    assert ok == lm.backend_available("cuda")
    if not ok:  # module missing, or no driver / device: the reason says which
        assert why.startswith("CUDA backend: ") and why
    with pytest.raises(ValueError):
        lm.backend_status("tpu")


def test_struct_layouts_match_the_c_library():
    """Each *_init() writes sizeof(struct) in C: it must equal the ctypes size."""
    lib = _capi.load()
    for struct_t, init in [(_capi.lm_model_params, "lm_model_params_init"),
                           (_capi.lm_calib_params, "lm_calib_params_init"),
                           (_capi.lm_scan_args, "lm_scan_args_init"),
                           (_capi.lm_session_params, "lm_session_params_init"),
                           (_capi.lm_longmamba_params, "lm_longmamba_params_init"),
                           (_capi.lm_decimamba_params, "lm_decimamba_params_init"),
                           (_capi.lm_mambaextend_params, "lm_mambaextend_params_init"),
                           (_capi.lm_modulation_params, "lm_modulation_params_init"),
                           (_capi.lm_spsa_params, "lm_spsa_params_init"),
                           (_capi.lm_sampling_params, "lm_sampling_params_init")]:
        s = struct_t()
        getattr(lib, init)(ctypes.byref(s))
        assert s.struct_size == ctypes.sizeof(struct_t), struct_t.__name__
    # Defaults the header documents, read through the ctypes fields.
    d = _capi.lm_decimamba_params()
    lib.lm_decimamba_params_init(ctypes.byref(d))
    assert (d.l_base, d.beta, d.min_len, d.protect) == (2000, 1.0, 20, 1)
    s = _capi.lm_session_params()
    lib.lm_session_params_init(ctypes.byref(s))
    assert s.chunk_size == 0  # 0 = the backend's default (CPU 512, CUDA 16384)
    p = _capi.lm_sampling_params()
    lib.lm_sampling_params_init(ctypes.byref(p))
    assert (p.temperature, p.top_k, p.top_p, p.seed, p.flags) == (0.0, 0, 1.0, 0, 0)  # greedy


def test_missing_library_is_a_clear_error(tmp_path):
    env = dict(os.environ, LONGMAMBA_LIBRARY=str(tmp_path / "nope.so"))
    code = ("import longmamba\n"
            "try:\n longmamba.version()\n"
            "except longmamba.LibraryNotFoundError as e:\n print('MSG', e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "MSG cannot load libongmamba" in r.stdout
    assert "LONGMAMBA_LIBRARY" in r.stdout and "nope.so" in r.stdout


def test_found_through_pkg_config():
    dirs, note = _capi._pkg_config_dirs()
    if not dirs:
        pytest.skip("pkg-config does not know longmamba here: %s" % note)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LONGMAMBA_LIBRARY", "LD_LIBRARY_PATH")}
    code = "import longmamba\nprint(longmamba.version(), longmamba.loaded_path())\n"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    version, path = r.stdout.split()
    assert int(version) == lm.version()
    assert os.path.dirname(path) in dirs


# ---- numbers against the transformers fixtures -------------------------------------

@pytest.mark.parametrize("fixture", fixture_dirs(), ids=lambda d: d.name)
def test_logits_match_transformers(fixture, array_mode):
    ref = read_safetensors(fixture / "reference.safetensors")
    _, (B, L), ids = ref["input_ids"]
    _, (B2, L2, V), logits = ref["logits_f64"]
    assert (B2, L2) == (B, L)
    row = ids[:L]
    want = logits[:L * V]
    with lm.Model(fixture, backend="cpu", n_threads=2) as m:
        assert m.vocab_size == V
        with m.session(chunk_size=7) as s:  # several chunks per row
            got = s.prefill(row, n_logits="all")
            if array_mode == "numpy":
                assert got.shape == (L, V) and got.dtype.name == "float32"
            else:
                assert isinstance(got, list) and len(got) == L and len(got[0]) == V
            rel, worst = rel_err(flat(got), want)
            assert rel <= TOL, "%s: rel err %.3g" % (fixture.name, rel)
            assert worst <= TOL * max(abs(w) for w in want)
            assert s.position == L
            # Decode steps continue the same recurrence.
            s.reset()
            s.prefill(row[:L // 2], n_logits=0)
            for t in range(L // 2, L):
                step = s.decode(row[t])
                rel, _ = rel_err(flat(step), want[t * V:(t + 1) * V])
                assert rel <= TOL, "%s: decode %d rel err %.3g" % (fixture.name, t, rel)


def test_q8_0_weights(tiny_dir):
    ref = read_safetensors(os.path.join(tiny_dir, "reference.safetensors"))
    _, (B, L), ids = ref["input_ids"]
    _, (_, _, V), logits = ref["logits_f64"]
    row, want = ids[:L], logits[:L * V]
    with lm.Model(tiny_dir, backend="cpu", n_threads=2) as m, \
            lm.Model(tiny_dir, backend="cpu", n_threads=2, weights="q8_0") as q:
        assert m.info.weights == lm.Weights.AS_STORED
        assert q.info.weights == lm.Weights.Q8_0
        with m.session() as s:
            exact = flat(s.prefill(row, n_logits="all"))
        with q.session() as s:
            got = flat(s.prefill(row, n_logits="all"))
        rel, _ = rel_err(got, want)
        assert rel <= 1e-2  # 8-bit linear layers: near the reference...
        assert got != exact  # ...but not the fp32 logits
        # the storage the library reports: in_proj F32 in place, then Q8_0 allocated
        wm = {(w.layer, w.name): w for w in m.weights_info()}
        wq = {(w.layer, w.name): w for w in q.weights_info()}
        a, b = wm[(0, "in_proj")], wq[(0, "in_proj")]
        assert (a.type, a.mapped, a.bytes) == (lm.WeightType.F32, True, a.rows * a.cols * 4)
        assert (b.type, b.mapped, b.bytes) == (lm.WeightType.Q8_0, False, b.rows * b.cols // 32 * 34)
        assert wq[(0, "dt_proj")].type == lm.WeightType.F32  # stays as stored
        assert wq[(-1, "lm_head")].shared  # tied
    with pytest.raises(ValueError):
        lm.Model(tiny_dir, backend="cpu", weights="q4_0")


def test_numpy_inputs_of_any_integer_dtype(tiny):
    np = pytest.importorskip("numpy")
    with tiny.session() as s:
        a = s.prefill(np.array([1, 2, 3], dtype=np.int64), n_logits=1)
        s.reset()
        b = s.prefill(np.array([1, 2, 3], dtype=np.uint16), n_logits=1)
        s.reset()
        c = s.prefill((1, 2, 3), n_logits=1)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert a.shape == (1, tiny.vocab_size)


# ---- bad input is an error, not a crash --------------------------------------------

def test_bad_input_raises(tiny, tmp_path, array_mode):
    V = tiny.vocab_size
    with tiny.session() as s:
        s.prefill([1, 2, 3], n_logits=0)
        before = s.save_state()
        with pytest.raises(lm.LongMambaError) as e:
            s.prefill([1, V, 2])
        assert e.value.status == lm.Status.OUT_OF_RANGE
        assert "vocabulary" in e.value.message
        with pytest.raises(lm.LongMambaError) as e:
            s.decode(V)
        assert e.value.status == lm.Status.OUT_OF_RANGE
        with pytest.raises(lm.LongMambaError) as e:
            s.decode(-1)
        assert e.value.status == lm.Status.OUT_OF_RANGE
        with pytest.raises(lm.LongMambaError) as e:
            s.prefill([1, 1 << 40])
        assert e.value.status == lm.Status.OUT_OF_RANGE
        with pytest.raises(lm.LongMambaError) as e:
            s.prefill([])
        assert e.value.status == lm.Status.INVALID_ARGUMENT
        with pytest.raises(lm.LongMambaError) as e:
            s.prefill([1, 2], n_logits=3)
        assert e.value.status == lm.Status.INVALID_ARGUMENT
        with pytest.raises(TypeError):
            s.prefill([1.5, 2])
        with pytest.raises(TypeError):
            s.prefill("abc")
        # a failed call leaves the state as it was
        assert s.position == 3
        assert s.save_state() == before
        with pytest.raises(lm.LongMambaError) as e:
            s.load_state(b"LMST" + bytes(10))
        assert e.value.status == lm.Status.FORMAT
        with pytest.raises(lm.LongMambaError):
            s.set_decimamba(layers=[99])
        with pytest.raises(lm.LongMambaError) as e:
            s.set_length_hint(-5)
    with pytest.raises(ValueError):
        s.decode(1)  # closed

    missing = tmp_path / "no-such-model"
    with pytest.raises(lm.LongMambaError) as e:
        lm.Model(missing)
    assert e.value.status in (lm.Status.IO, lm.Status.MISSING)
    assert str(missing) in e.value.message
    with pytest.raises(ValueError):
        lm.Model(DATA / "fixtures" / "m1-tiny-f32", backend="tpu")


def test_state_blob_round_trip(tiny, array_mode):
    rng = random.Random(5)
    a = [rng.randrange(tiny.vocab_size) for _ in range(20)]
    b = [rng.randrange(tiny.vocab_size) for _ in range(9)]
    with tiny.session() as s:
        s.prefill(a, n_logits=0)
        blob = s.save_state()
        assert len(blob) == s.state_size()
        first = flat(s.prefill(b, n_logits="all"))
        s.reset()
        assert s.position == 0
        s.load_state(blob)
        assert s.position == len(a)
        again = flat(s.prefill(b, n_logits="all"))
    assert first == again
    with tiny.session() as s2:  # another session resumes it too
        s2.load_state(blob)
        assert flat(s2.prefill(b, n_logits="all")) == first


def test_decode_batch_equals_decode(tiny, array_mode):
    rng = random.Random(9)
    V = tiny.vocab_size
    bat = [tiny.session() for _ in range(3)]
    one = [tiny.session() for _ in range(3)]
    try:
        for i in range(3):
            p = [rng.randrange(V) for _ in range(4 + 5 * i)]
            bat[i].prefill(p, n_logits=0)
            one[i].prefill(p, n_logits=0)
        for _ in range(4):
            toks = [rng.randrange(V) for _ in range(3)]
            rows = lm.decode_batch(bat, toks)
            rows = [flat(r) for r in rows]
            assert len(rows) == 3
            for i in range(3):  # GEMM over the batch vs GEMV: same sums, other order
                assert rel_err(rows[i], flat(one[i].decode(toks[i])))[0] <= TOL
        assert lm.decode_batch(bat, [1, 2, 3], logits=False) is None
        assert [s.position for s in bat] == [9, 14, 19]
        with pytest.raises(lm.LongMambaError) as ei:
            lm.decode_batch([bat[0], bat[0]], [1, 2])
        assert ei.value.status == lm.Status.INVALID_ARGUMENT and "twice" in str(ei.value)
        with pytest.raises(lm.LongMambaError) as ei:
            lm.decode_batch(bat, [1, 2, V])
        assert ei.value.status == lm.Status.OUT_OF_RANGE
        with pytest.raises(ValueError):
            lm.decode_batch(bat, [1, 2])
        assert lm.decode_batch([], []) is None
        assert [s.position for s in bat] == [9, 14, 19]
    finally:
        for s in bat + one:
            s.close()


def test_prefill_batch_equals_prefill(tiny, array_mode):
    rng = random.Random(13)
    V = tiny.vocab_size
    bat = [tiny.session() for _ in range(4)]
    one = [tiny.session() for _ in range(4)]
    try:
        for i in (1, 3):  # two of them with some history
            p = [rng.randrange(V) for _ in range(5 * i)]
            bat[i].prefill(p, n_logits=0)
            one[i].prefill(p, n_logits=0)
        prompts = [[rng.randrange(V) for _ in range(n)] for n in (1, 7, 30, 2)]
        rows = lm.prefill_batch(bat, prompts)
        assert len(to_list(rows)) == 4
        for i in range(4):  # one GEMM over all prompts vs one per prompt: other order
            assert rel_err(flat(rows[i]), flat(one[i].prefill(prompts[i])))[0] <= TOL
        assert [s.position for s in bat] == [1, 12, 30, 17]
        for s, o in zip(bat, one):
            assert rel_err(flat(s.decode(3)), flat(o.decode(3)))[0] <= TOL
        assert lm.prefill_batch(bat, [[1], [2], [3], [4, 5]], logits=False) is None
        assert [s.position for s in bat] == [3, 14, 32, 20]
        # errors: named, and nothing moves
        with pytest.raises(lm.LongMambaError) as ei:
            lm.prefill_batch([bat[0], bat[0]], [[1], [2]])
        assert ei.value.status == lm.Status.INVALID_ARGUMENT and "twice" in str(ei.value)
        with pytest.raises(lm.LongMambaError) as ei:
            lm.prefill_batch(bat[:2], [[1, 2], [3, V]])
        assert ei.value.status == lm.Status.OUT_OF_RANGE and "sessions[1]" in str(ei.value)
        with pytest.raises(lm.LongMambaError) as ei:
            lm.prefill_batch(bat[:2], [[1, 2], []])
        assert ei.value.status == lm.Status.INVALID_ARGUMENT and "empty prompt" in str(ei.value)
        with pytest.raises(ValueError):
            lm.prefill_batch(bat, [[1]])
        assert lm.prefill_batch([], []) is None
        assert [s.position for s in bat] == [3, 14, 32, 20]
    finally:
        for s in bat + one:
            s.close()


def test_decode_sample(tiny, array_mode):
    rng = random.Random(5)
    V = tiny.vocab_size
    smp = [tiny.session() for _ in range(3)]
    bat = [tiny.session() for _ in range(3)]
    try:
        for i in range(3):
            p = [rng.randrange(V) for _ in range(3 + 4 * i)]
            smp[i].prefill(p, n_logits=0)
            bat[i].prefill(p, n_logits=0)
            smp[i].set_sampling(return_logits=(i != 1))  # greedy
        toks = [1, 2, 3]
        for _ in range(4):  # greedy: the argmax of decode_batch's logits, the same logits
            nxt, rows = lm.decode_sample(smp, toks)
            want = [flat(r) for r in lm.decode_batch(bat, toks)]
            nxt = [int(t) for t in flat(nxt)]
            assert nxt == [max(range(V), key=lambda j: (w[j], -j)) for w in want]
            assert rows[1] is None
            assert flat(rows[0]) == want[0] and flat(rows[2]) == want[2]
            toks = nxt
        # the same seed and history draw the same tokens; another seed others
        a, b, c = smp
        for s, seed in ((a, 7), (b, 7), (c, 8)):
            s.reset()
            s.prefill([4, 5, 6], n_logits=0)
            s.set_sampling(temperature=100.0, top_k=0, top_p=0.95, seed=seed)
        seqs = [[], [], []]
        for i, s in enumerate(smp):
            t = 9
            for _ in range(16):
                (t,), _ = lm.decode_sample([s], [t])
                t = int(t)
                seqs[i].append(t)
        assert seqs[0] == seqs[1]
        assert sum(x != y for x, y in zip(seqs[0], seqs[2])) >= 8
        assert [s.position for s in smp] == [19, 19, 19]
        # errors: the field is named, nothing moves
        for kw, word in ((dict(top_k=-1), "top_k"), (dict(top_p=1.5), "top_p"),
                         (dict(temperature=float("nan")), "temperature")):
            with pytest.raises(lm.LongMambaError) as ei:
                a.set_sampling(**kw)
            assert ei.value.status == lm.Status.OUT_OF_RANGE and word in str(ei.value)
        with pytest.raises(lm.LongMambaError) as ei:
            lm.decode_sample([a, a], [1, 2])
        assert ei.value.status == lm.Status.INVALID_ARGUMENT and "twice" in str(ei.value)
        with pytest.raises(lm.LongMambaError) as ei:
            lm.decode_sample(smp, [1, 2, V])
        assert ei.value.status == lm.Status.OUT_OF_RANGE and "tokens[2]" in str(ei.value)
        with pytest.raises(ValueError):
            lm.decode_sample(smp, [1, 2])
        assert [s.position for s in smp] == [19, 19, 19]
        nxt, rows = lm.decode_sample([], [])
        assert len(nxt) == 0 and rows == []
    finally:
        for s in smp + bat:
            s.close()


# ---- lifetimes and threads ------------------------------------------------------------

def test_model_close_waits_for_sessions(tiny_dir):
    m = lm.Model(tiny_dir, backend="cpu")
    s = m.session()
    m.close()
    assert m.closed
    with pytest.raises(ValueError):
        m.session()
    s.prefill([1, 2, 3])  # the model is still alive underneath
    assert m._ptr is not None
    s.close()
    assert m._ptr is None
    s.close()  # idempotent
    m.close()


def test_sessions_in_threads(tiny):
    rng = random.Random(9)
    prompts = [[rng.randrange(tiny.vocab_size) for _ in range(40)] for _ in range(4)]
    want = []
    with tiny.session() as s:
        for p in prompts:
            s.reset()
            want.append(flat(s.prefill(p)))
    got = [None] * len(prompts)

    def run(i):
        with tiny.session() as s:
            got[i] = flat(s.prefill(prompts[i]))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == want


def test_progress_callback_aborts(tiny):
    calls = []
    with tiny.session(chunk_size=4, progress=lambda d, t: calls.append((d, t)) or d >= 8) as s:
        with pytest.raises(lm.LongMambaError) as e:
            s.prefill(list(range(12)))
        assert e.value.status == lm.Status.ABORTED
        assert calls == [(4, 12), (8, 12)]
        assert s.position == 0

    def boom(done, total):
        raise KeyError("from the callback")
    with tiny.session(chunk_size=4, progress=boom) as s:
        with pytest.raises(KeyError):
            s.prefill(list(range(12)))
        assert s.position == 0


def test_log_callback(tiny_dir):
    seen = []
    with lm.Model(tiny_dir, backend="cpu", log=lambda lvl, msg: seen.append((lvl, msg)),
                  log_level="debug") as m:
        with m.session() as s:
            s.prefill([1, 2])
    assert all(isinstance(msg, str) for _, msg in seen)


# ---- calibration, classification, LongMamba and DeciMamba -------------------------------

def random_windows(V, n, length, seed):
    rng = random.Random(seed)
    return [[rng.randrange(V) for _ in range(length)] for _ in range(n)]


def test_calibration_and_classification(tiny, tmp_path, array_mode):
    wins = random_windows(tiny.vocab_size, 3, 48, 1)
    seen = []
    cal = tiny.calibrate(wins, progress=lambda d, t: seen.append((d, t)) and False)
    with cal:
        assert seen == [(48, 144), (96, 144), (144, 144)]  # tokens, per window
        i = cal.info
        assert (i.n_layer, i.n_channels) == (tiny.info.n_layer, tiny.info.n_channels)
        assert i.calib_length == 48 and i.n_windows == 3
        assert i.fingerprint == tiny.info.fingerprint
        buckets = to_list(cal.buckets)
        assert len(buckets) == i.n_buckets and buckets == sorted(buckets)
        assert len(to_list(cal.thresholds(1, 0))) == i.n_channels
        theta = 1e-3
        mask, counts = cal.classify_channels(theta)
        mask, counts = to_list(mask), to_list(counts)
        for layer in range(i.n_layer):
            ld = to_list(cal.log_decay(layer))
            assert all(v <= 0 for v in ld)  # decays are at most 1
            # global iff log decay > log(theta), as the header says
            assert mask[layer] == [v > math.log(theta) for v in ld]
            assert counts[layer] == sum(mask[layer])
        assert to_list(lm.classify_channels(cal, theta)[1]) == counts
        with pytest.raises(lm.LongMambaError) as e:
            cal.classify_channels(-1.0)
        assert e.value.status == lm.Status.INVALID_ARGUMENT
        with pytest.raises(lm.LongMambaError) as e:
            cal.log_decay(i.n_layer)
        assert e.value.status == lm.Status.OUT_OF_RANGE

        path = tmp_path / "calib.safetensors"
        cal.save(path)
        with lm.Calibration.load(path, tiny) as back:
            assert back.info == i
            assert flat(back.log_decay(0)) == flat(cal.log_decay(0))
        other = DATA / "fixtures" / "m1-odd-f32"
        with lm.Model(other, backend="cpu") as m2:
            with pytest.raises(lm.LongMambaError) as e:
                lm.Calibration.load(path, m2)
            assert e.value.status == lm.Status.MISMATCH
            with m2.session() as s:
                with pytest.raises(lm.LongMambaError) as e:
                    s.set_longmamba(cal)
                assert e.value.status == lm.Status.MISMATCH
    with pytest.raises(lm.LongMambaError) as e:
        tiny.calibrate(wins, progress=lambda d, t: True)
    assert e.value.status == lm.Status.ABORTED
    with pytest.raises(lm.LongMambaError) as e:
        tiny.calibrate([[1, 2, tiny.vocab_size]])
    assert e.value.status == lm.Status.OUT_OF_RANGE


def test_longmamba_prefill(tiny, array_mode):
    V = tiny.vocab_size
    cal = tiny.calibrate(random_windows(V, 3, 32, 2))
    prompt = random_windows(V, 1, 80, 3)[0]
    with tiny.session() as s:
        vanilla = flat(s.prefill(prompt))
        # below the trigger length LongMamba is vanilla, bit for bit
        s.reset()
        s.set_longmamba(cal, trigger_length=len(prompt) + 1)
        assert s.mode == lm.Mode.LONGMAMBA
        assert flat(s.prefill(prompt)) == vanilla
        # tiny theta: nearly every channel is global; a huge threshold scale
        # drops every token there, which must change the output
        mask, counts = cal.classify_channels(1e-200)
        assert sum(to_list(counts)) > 0
        s.reset()
        s.set_longmamba(cal, theta=1e-200, threshold_scale=1e30, trigger_length=10)
        filtered = flat(s.prefill(prompt))
        assert all(math.isfinite(v) for v in filtered)
        assert rel_err(filtered, vanilla)[0] > 1e-3
        # the calibration stays alive while the session borrows it
        cal.close()
        s.reset()
        assert flat(s.prefill(prompt)) == filtered
        s.set_vanilla()
        assert cal._ptr is None
        s.reset()
        assert flat(s.prefill(prompt)) == vanilla


def test_mambaextend_and_modulation(tiny, array_mode):
    V, nl = tiny.vocab_size, tiny.info.n_layer
    prompt = random_windows(V, 1, 40, 5)[0]
    with tiny.session() as s:
        vanilla = flat(s.prefill(prompt))
        for setter, mode, scales in [(s.set_mambaextend, lm.Mode.MAMBAEXTEND, [4.0] * nl),
                                     (s.set_modulation, lm.Mode.MODULATION, [0.3] * nl)]:
            # scales of 1 are vanilla, bit for bit
            s.reset()
            setter([1.0] * nl)
            assert s.mode == mode
            assert flat(s.prefill(prompt)) == vanilla
            s.reset()
            setter(scales)
            assert rel_err(flat(s.prefill(prompt)), vanilla)[0] > 1e-4
            # bad scales: a specific status, the mode kept
            for bad, status in [([1.0] * (nl + 1), lm.Status.INVALID_ARGUMENT),
                                ([0.0] * nl, lm.Status.OUT_OF_RANGE),
                                ([float("nan")] * nl, lm.Status.OUT_OF_RANGE)]:
                with pytest.raises(lm.LongMambaError) as e:
                    setter(bad)
                assert e.value.status == status and "scale" in str(e.value)
                assert s.mode == mode
        # with LongMamba: Modulation needs a calibration made under its scales
        cal = tiny.calibrate(random_windows(V, 2, 32, 6))
        mcal = tiny.calibrate(random_windows(V, 2, 32, 6), a_log_scales=[0.5] * nl)
        with pytest.raises(lm.LongMambaError) as e:
            s.set_modulation([0.5] * nl, calibration=cal)
        assert e.value.status == lm.Status.MISMATCH
        with pytest.raises(lm.LongMambaError) as e:
            s.set_mambaextend([2.0] * nl, calibration=mcal)
        assert e.value.status == lm.Status.MISMATCH
        s.set_modulation([0.5] * nl, calibration=mcal, trigger_length=10)
        s.set_mambaextend([2.0] * nl, calibration=cal, theta=1e-200, trigger_length=10)
        s.reset()
        assert all(math.isfinite(v) for v in flat(s.prefill(prompt)))
        s.set_vanilla()


def test_spsa_scales(tiny, tmp_path):
    V, nl = tiny.vocab_size, tiny.info.n_layer
    wins = random_windows(V, 2, 24, 8)
    a = tiny.calibrate_scales("modulation", wins, iterations=2, seed=5)
    b = tiny.calibrate_scales(lm.Mode.MODULATION, wins, iterations=2, seed=5)
    assert a.scales == b.scales and len(a.scales) == nl  # one seed, the same scales
    assert all(0.75 <= v < 1.0 for v in a.initial_scales)
    i = a.info
    assert (i.mode, i.n_layer, i.target_length, i.n_windows, i.iterations, i.seed) == (
        lm.Mode.MODULATION, nl, 24, 2, 2, 5)
    assert math.isfinite(i.loss_initial) and math.isfinite(i.loss_final)
    path = str(tmp_path / "scales.safetensors")
    a.save(path)
    back = lm.Scales.load(path, tiny)
    assert back.scales == a.scales and back.info == a.info
    with tiny.session() as s:
        s.set_modulation(back.scales)
    with pytest.raises(lm.LongMambaError) as e:
        tiny.calibrate_scales("mambaextend", wins, iterations=-1)
    assert e.value.status == lm.Status.OUT_OF_RANGE
    with pytest.raises(lm.LongMambaError) as e:
        tiny.calibrate_scales("mambaextend", wins, iterations=3, progress=lambda d, t: d >= 1)
    assert e.value.status == lm.Status.ABORTED


def test_decimamba_prefill(tiny):
    V = tiny.vocab_size
    prompt = random_windows(V, 1, 60, 4)[0]
    with tiny.session() as s:
        s.set_decimamba(layers=[1], l_base=30, min_len=5, protect=2)
        out = flat(s.prefill(prompt, n_logits=2))
        assert len(out) == 2 * V and all(math.isfinite(v) for v in out)
        s.reset()
        with pytest.raises(lm.LongMambaError) as e:
            s.prefill(prompt, n_logits=3)  # more than the protected tail
        assert e.value.status == lm.Status.INVALID_ARGUMENT


# ---- the filtered scan ------------------------------------------------------------------

def scan_reference(u, delta, A, B, C, D, z, dt_bias, mask, thr, delta_is_dt, h0):
    L, E, N = len(u), len(u[0]), len(A[0])
    h = [row[:] for row in h0]
    y = [[0.0] * E for _ in range(L)]
    for t in range(L):
        for e in range(E):
            if delta_is_dt:
                x = delta[t][e] + dt_bias[e]
                d = x if x > 20 else math.log1p(math.exp(x))
            else:
                d = delta[t][e]
            if mask[e] and not d > thr[e]:
                d = 0.0
            acc = 0.0
            for n in range(N):
                h[e][n] = math.exp(d * A[e][n]) * h[e][n] + d * B[t][n] * u[t][e]
                acc += h[e][n] * C[t][n]
            out = acc + D[e] * u[t][e]
            y[t][e] = out * (z[t][e] / (1 + math.exp(-z[t][e])))
    return y, h


@pytest.mark.parametrize("delta_is_dt", [False, True])
def test_scan_filtered_matches_the_formula(array_mode, delta_is_dt):
    rng = random.Random(11)
    L, E, N = 13, 6, 4

    def mat(r, c, lo=-1.0, hi=1.0):
        return [[rng.uniform(lo, hi) for _ in range(c)] for _ in range(r)]
    u, z = mat(L, E), mat(L, E)
    delta = mat(L, E, 0.0, 0.3) if not delta_is_dt else mat(L, E, -2, 1)
    A = mat(E, N, -2.0, -0.1)
    B, C = mat(L, N), mat(L, N)
    D = [rng.uniform(0.5, 1.5) for _ in range(E)]
    dt_bias = [rng.uniform(-1, 0) for _ in range(E)]
    mask = [e % 2 == 0 for e in range(E)]
    thr = [0.12] * E
    h0 = mat(E, N)
    y, st = lm.scan_filtered(u, delta, A, B, C, D=D, z=z, dt_bias=dt_bias,
                             delta_is_dt=delta_is_dt, global_mask=mask, thresholds=thr,
                             state_in=h0, return_state=True, n_threads=2)
    wy, wh = scan_reference(u, delta, A, B, C, D, z, dt_bias, mask, thr, delta_is_dt, h0)
    assert rel_err(flat(y), flat(wy))[0] <= TOL
    assert rel_err(flat(st), flat(wh))[0] <= TOL
    # a filter that can drop tokens must matter for this input
    y2 = lm.scan_filtered(u, delta, A, B, C, D=D, z=z, dt_bias=dt_bias, delta_is_dt=delta_is_dt,
                          state_in=h0)
    assert flat(y2) != flat(y)
    with pytest.raises(lm.LongMambaError) as e:
        lm.scan_filtered(u, delta, A, B, C, global_mask=mask)  # mask without thresholds
    assert e.value.status == lm.Status.INVALID_ARGUMENT
    with pytest.raises(ValueError):
        lm.scan_filtered(u, delta, A, B[:-1], C)


# ---- tokenizer ----------------------------------------------------------------------------

def read_token_refs(path):
    """Records of a refs-*.bin.xz file (format: scripts/make_tokenizer_refs.py)."""
    b = lzma.decompress(path.read_bytes())
    assert b[:8] == b"LMTOKREF"
    at = 8

    def rd(fmt):
        nonlocal at
        v = struct.unpack_from(fmt, b, at)[0]
        at += struct.calcsize(fmt)
        return v
    assert rd("<I") == 1
    out = []
    for _ in range(rd("<I")):
        name = b[at:at + rd("<I")]
        at += len(name)
        flags = rd("<I")
        tl = rd("<Q")
        text = None
        if not flags & 2:
            text, at = b[at:at + tl], at + tl
        n = rd("<Q")
        ids = list(struct.unpack_from("<%dI" % n, b, at))
        at += 4 * n
        dl = rd("<Q")
        dec = None
        if not flags & 4:
            dec, at = b[at:at + dl], at + dl
        out.append((name.decode(), flags, text, ids, dec))
    assert at == len(b)
    return out


def test_tokenizer_matches_reference_ids(array_mode):
    tdir = DATA / "tokenizer"
    with lm.Tokenizer(tdir / "tiny-a.json") as tok:
        assert tok.vocab_size > 0
        checked = 0
        for name, flags, text, ids, dec in read_token_refs(tdir / "refs-tiny-a.bin.xz"):
            if text is None:
                continue  # text kept outside the repository
            got = tok.encode(text)
            assert to_list(got) == ids, name
            back = tok.decode_bytes(got)
            if flags & 4:
                assert back == text, name  # valid text round-trips byte for byte
            else:
                assert back.decode("utf-8", "replace").encode() == dec, name
            checked += 1
        assert checked > 0
        # tiny-a adds a prefix space (ByteLevel add_prefix_space): start with one
        assert tok.decode(tok.encode(" hello world")) == " hello world"
        with pytest.raises(lm.LongMambaError) as e:
            tok.decode([tok.vocab_size + 5])
        assert e.value.status == lm.Status.OUT_OF_RANGE
        long_text = " abc" * 5000  # past the first buffer guess of decode
        assert tok.decode(tok.encode(long_text)) == long_text
    with pytest.raises(lm.LongMambaError) as e:
        lm.Tokenizer(tdir / "no-such.json")
    assert e.value.status == lm.Status.IO


def test_example_runs(tiny_dir):
    ex = os.path.join(os.path.dirname(__file__), "..", "examples", "example.py")
    r = subprocess.run([sys.executable, ex, tiny_dir], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "global channels" in r.stdout and "longmamba" in r.stdout


# ---- safetensors reading (0.3) ------------------------------------------------------

def test_tensor_file_reads_reference_logits(array_mode, tmp_path):
    path = os.path.join(DATA, "fixtures", "m1-tiny-f32", "reference.safetensors")
    want = read_safetensors(path)
    with lm.TensorFile(path) as f:
        assert set(want) <= set(f.names)
        ids = want["input_ids"]
        info = f.info("input_ids")
        assert info.shape == ids[1] and info.dtype.name == ids[0]
        assert flat(f.read("input_ids", as_="i32")) == ids[2]
        lg = want["logits_f64"]
        got = f.read("logits_f64")
        assert flat(got) == lg[2]
        assert len(to_list(got)) == lg[1][0]
        with pytest.raises(lm.LongMambaError) as e:
            f.read("logits_f64", as_="i32")  # wrong dtype
        assert e.value.status == lm.Status.UNSUPPORTED
        with pytest.raises(lm.LongMambaError) as e:
            f.read("no such tensor")
        assert e.value.status == lm.Status.MISSING
        with pytest.raises(ValueError):
            f.read("logits_f64", as_="f16")
    with pytest.raises(ValueError):
        f.names  # closed
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(lm.LongMambaError) as e:
        lm.TensorFile(cut)
    assert e.value.status == lm.Status.FORMAT
    assert lm.default_theta("mamba1") > 0 and lm.default_theta(lm.Arch.MAMBA2) > 0
