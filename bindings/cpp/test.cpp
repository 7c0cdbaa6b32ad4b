// test.cpp - the C header from C++17 (built with -Wall -Wextra -pedantic
// -Werror against the pkg-config file), through the RAII layer of
// example.cpp: numbers against the transformers fixtures, and bad input
// coming back as an error rather than a crash.
//
//   test DATA_DIR        (DATA_DIR = <repo>/test/data)
#define LMX_EXAMPLE_NO_MAIN
#include "example.cpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

namespace fs = std::filesystem;

static int failures = 0;

#define EXPECT(cond, ...)                                                  \
    do {                                                                   \
        if (!(cond)) {                                                     \
            std::fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                             \
            std::fprintf(stderr, "\n");                                    \
            failures++;                                                    \
        }                                                                  \
    } while (0)

// Runs f, which must throw lmx::Error with status want.
template <class F>
static void expect_status(F f, lm_status want, const char *what) {
    try {
        f();
        EXPECT(false, "%s: no error (want %s)", what, lm_status_str(want));
    } catch (const lmx::Error &e) {
        EXPECT(e.status() == want, "%s: got %s, want %s", what, e.what(), lm_status_str(want));
    }
}

// ---- just enough safetensors: u64 LE header length, JSON header, data -------
struct Tensor {
    std::string dtype;
    std::vector<size_t> shape;
    std::vector<unsigned char> data;
};

static std::vector<size_t> numbers_after(const std::string &obj, const std::string &key) {
    std::vector<size_t> v;
    size_t k = obj.find("\"" + key + "\"");
    if (k == std::string::npos) return v;
    size_t a = obj.find('[', k), b = obj.find(']', a);
    std::string list = obj.substr(a + 1, b - a - 1);
    for (size_t i = 0; i < list.size();) {
        if (std::isdigit(static_cast<unsigned char>(list[i]))) {
            size_t used = 0;
            v.push_back(std::stoull(list.substr(i), &used));
            i += used;
        } else {
            i++;
        }
    }
    return v;
}

// The named tensor; tensor entries are flat objects (no nested braces).
static Tensor read_tensor(const fs::path &path, const std::string &name) {
    std::ifstream f(path, std::ios::binary);
    std::vector<unsigned char> raw((std::istreambuf_iterator<char>(f)), {});
    if (raw.size() < 8) throw std::runtime_error("short file " + path.string());
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | raw[static_cast<size_t>(i)];
    std::string hdr(raw.begin() + 8, raw.begin() + 8 + static_cast<long>(n));
    size_t k = hdr.find("\"" + name + "\"");
    if (k == std::string::npos) throw std::runtime_error(name + " not in " + path.string());
    size_t a = hdr.find('{', k), b = hdr.find('}', a);
    std::string obj = hdr.substr(a, b - a + 1);
    Tensor t;
    size_t d = obj.find("\"dtype\"");
    size_t q1 = obj.find('"', obj.find(':', d)), q2 = obj.find('"', q1 + 1);
    t.dtype = obj.substr(q1 + 1, q2 - q1 - 1);
    t.shape = numbers_after(obj, "shape");
    std::vector<size_t> off = numbers_after(obj, "data_offsets");
    t.data.assign(raw.begin() + 8 + static_cast<long>(n + off[0]),
                  raw.begin() + 8 + static_cast<long>(n + off[1]));
    return t;
}

template <class T>
static T le_at(const std::vector<unsigned char> &d, size_t i) {
    unsigned char b[sizeof(T)];
    for (size_t k = 0; k < sizeof(T); k++) b[k] = d[i * sizeof(T) + k];  // little-endian host
    T v;
    std::memcpy(&v, b, sizeof v);
    return v;
}

static void test_fixtures(const fs::path &data) {
    std::vector<fs::path> dirs;
    for (const auto &e : fs::directory_iterator(data / "fixtures"))
        if (fs::exists(e.path() / "reference.safetensors")) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    EXPECT(!dirs.empty(), "no fixtures under %s", data.c_str());
    for (const auto &dir : dirs) {
        Tensor ids = read_tensor(dir / "reference.safetensors", "input_ids");
        Tensor lg = read_tensor(dir / "reference.safetensors", "logits_f64");
        EXPECT(ids.dtype == "I32" && lg.dtype == "F64", "%s dtypes", dir.c_str());
        const size_t L = ids.shape[1], V = lg.shape[2];
        std::vector<int32_t> row(L);
        for (size_t i = 0; i < L; i++) row[i] = le_at<int32_t>(ids.data, i);

        lmx::ModelPtr m = lmx::load_model(dir.string(), LM_BACKEND_CPU, 2);
        EXPECT(static_cast<size_t>(lmx::model_info(m.get()).vocab_size) == V, "%s vocab", dir.c_str());
        lmx::SessionPtr s = lmx::new_session(m.get(), 7);
        std::vector<float> got = lmx::prefill(s.get(), row, L, V);
        double num = 0, den = 0, worst = 0, max_logit = 0;
        for (size_t i = 0; i < L * V; i++) {
            double w = le_at<double>(lg.data, i), dd = got[i] - w;
            num += dd * dd;
            den += w * w;
            worst = std::max(worst, std::fabs(dd));
            max_logit = std::max(max_logit, std::fabs(w));
        }
        double rel = std::sqrt(num / den);
        EXPECT(rel <= 1e-5, "%s: rel err %.3g", dir.c_str(), rel);
        EXPECT(worst <= 1e-5 * max_logit, "%s: abs err %.3g", dir.c_str(), worst);
        // decode continues the recurrence
        lmx::check(s.get(), lm_session_reset(s.get()));
        lmx::prefill(s.get(), std::vector<int32_t>(row.begin(), row.begin() + static_cast<long>(L / 2)), 0, V);
        for (size_t t = L / 2; t < L; t++) {
            std::vector<float> step = lmx::decode(s.get(), row[t], V);
            double n2 = 0, d2 = 0;
            for (size_t v = 0; v < V; v++) {
                double w = le_at<double>(lg.data, t * V + v);
                n2 += (step[v] - w) * (step[v] - w);
                d2 += w * w;
            }
            EXPECT(std::sqrt(n2 / d2) <= 1e-5, "%s decode %zu", dir.c_str(), t);
        }
        std::printf("fixture %-18s rel err %.3g\n", dir.filename().c_str(), rel);
    }
}

static void test_errors(const fs::path &data) {
    lmx::ModelPtr m = lmx::load_model((data / "fixtures" / "m1-tiny-f32").string(), LM_BACKEND_CPU, 2);
    const size_t V = static_cast<size_t>(lmx::model_info(m.get()).vocab_size);
    lmx::SessionPtr s = lmx::new_session(m.get());
    const int32_t bad = static_cast<int32_t>(V);
    expect_status([&] { lmx::prefill(s.get(), {1, bad, 2}, 1, V); }, LM_ERR_OUT_OF_RANGE, "token >= vocab");
    expect_status([&] { lmx::decode(s.get(), -1, V); }, LM_ERR_OUT_OF_RANGE, "negative token");
    expect_status([&] { lmx::prefill(s.get(), {}, 0, V); }, LM_ERR_INVALID_ARGUMENT, "empty prompt");
    // a too-small buffer through the raw API: reported, nothing overrun
    std::vector<float> small(V - 1, -7.0f);
    lm_status st = lm_session_decode(s.get(), 1, small.data(), small.size());
    EXPECT(st == LM_ERR_BUFFER_TOO_SMALL, "small buffer: %s", lm_status_str(st));
    EXPECT(std::all_of(small.begin(), small.end(), [](float x) { return x == -7.0f; }), "buffer written");
    EXPECT(std::strstr(lm_session_last_error(s.get()), "needed") != nullptr, "%s", lm_session_last_error(s.get()));
    EXPECT(lm_session_position(s.get()) == 0, "failed calls moved the position");
    try {
        lmx::load_model((data / "no-such-model").string());
        EXPECT(false, "missing model dir: no error");
    } catch (const lmx::Error &e) {
        EXPECT(e.status() == LM_ERR_MISSING || e.status() == LM_ERR_IO, "missing model dir: %s", e.what());
        EXPECT(std::strstr(e.what(), "no-such-model") != nullptr, "message without the path: %s", e.what());
    }
}

static void test_longmamba(const fs::path &data) {
    lmx::ModelPtr m = lmx::load_model((data / "fixtures" / "m1-tiny-f32").string(), LM_BACKEND_CPU, 2);
    const lm_model_info info = lmx::model_info(m.get());
    const size_t V = static_cast<size_t>(info.vocab_size);
    std::mt19937 gen(7);
    std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(V) - 1);
    auto tokens = [&](size_t n) {
        std::vector<int32_t> t(n);
        for (auto &x : t) x = dist(gen);
        return t;
    };
    lmx::CalibrationPtr cal = lmx::calibrate(m.get(), {tokens(32), tokens(32), tokens(32)});
    const lm_calibration_info ci = lmx::calibration_info(cal.get());
    EXPECT(ci.n_layer == info.n_layer && ci.n_channels == info.n_channels && ci.calib_length == 32,
           "calibration info");
    const double theta = 1e-3;
    auto [mask, counts] = lmx::classify(cal.get(), theta);
    std::vector<double> ld(static_cast<size_t>(ci.n_channels));
    for (int64_t l = 0; l < ci.n_layer; l++) {
        EXPECT(lm_calibration_get_log_decay(cal.get(), l, ld.data(), ld.size()) == LM_OK, "log decay");
        int64_t n = 0;
        for (size_t c = 0; c < ld.size(); c++) {
            bool global = ld[c] > std::log(theta);
            EXPECT(mask[static_cast<size_t>(l) * ld.size() + c] == (global ? 1 : 0), "layer %lld channel %zu",
                   static_cast<long long>(l), c);
            n += global;
        }
        EXPECT(counts[static_cast<size_t>(l)] == n, "count of layer %lld", static_cast<long long>(l));
    }
    expect_status([&] { lmx::classify(cal.get(), -1.0); }, LM_ERR_INVALID_ARGUMENT, "theta < 0");

    std::vector<int32_t> prompt = tokens(80);
    lmx::SessionPtr s = lmx::new_session(m.get());
    std::vector<float> vanilla = lmx::prefill(s.get(), prompt, prompt.size(), V);
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    p.trigger_length = 81;  // below the trigger: vanilla
    lmx::check(s.get(), lm_session_reset(s.get()));
    lmx::check(s.get(), lm_session_set_longmamba(s.get(), cal.get(), &p));
    EXPECT(lmx::prefill(s.get(), prompt, prompt.size(), V) == vanilla, "untriggered LongMamba differs");
    p.theta = 1e-200;
    p.threshold_scale = 1e30;
    p.trigger_length = 10;
    lmx::check(s.get(), lm_session_reset(s.get()));
    lmx::check(s.get(), lm_session_set_longmamba(s.get(), cal.get(), &p));
    std::vector<float> filtered = lmx::prefill(s.get(), prompt, prompt.size(), V);
    double num = 0, den = 0;
    for (size_t i = 0; i < vanilla.size(); i++) {
        num += (filtered[i] - vanilla[i]) * (filtered[i] - vanilla[i]);
        den += vanilla[i] * vanilla[i];
    }
    EXPECT(std::sqrt(num / den) > 1e-3, "filtering changed nothing");
    s.reset();  // the session goes before the calibration it borrows
}

// decode_sample: greedy is the argmax of decode_batch's logits, and the
// rows come back bit for bit; a seed and a position fix the draw; bad
// parameters are errors that move nothing.
static void test_sampling(const fs::path &data) {
    lmx::ModelPtr m = lmx::load_model((data / "fixtures" / "m1-tiny-f32").string(), LM_BACKEND_CPU, 2);
    const size_t V = static_cast<size_t>(lmx::model_info(m.get()).vocab_size);
    lmx::SessionPtr a = lmx::new_session(m.get()), b = lmx::new_session(m.get());
    lmx::SessionPtr a1 = lmx::new_session(m.get()), b1 = lmx::new_session(m.get());
    for (lm_session *s : {a.get(), a1.get()}) lmx::prefill(s, {1, 2, 3}, 0, V);
    for (lm_session *s : {b.get(), b1.get()}) lmx::prefill(s, {7}, 0, V);
    lmx::set_sampling(a.get(), 0.0f, 0, 1.0f, 0, true);
    lmx::set_sampling(b.get(), 0.0f, 0, 1.0f, 0, true);
    std::vector<lm_session *> smp = {a.get(), b.get()}, bat = {a1.get(), b1.get()};
    std::vector<int32_t> toks = {5, 9};
    std::vector<float> rows, want(2 * V);
    for (int step = 0; step < 3; step++) {
        std::vector<int32_t> next = lmx::decode_sample(smp, toks, V, &rows);
        lmx::check(a1.get(), lm_session_decode_batch(bat.data(), 2, toks.data(), want.data(), want.size()));
        EXPECT(rows == want, "step %d: rows differ from decode_batch", step);
        for (size_t i = 0; i < 2; i++)
            EXPECT(next[i] == lmx::argmax(want.data() + i * V, V), "step %d session %zu", step, i);
        toks = next;
    }
    // a seed and a position fix the draw: a fork of the state draws the same
    lmx::set_sampling(a.get(), 50.0f, 0, 0.9f, 123);
    lmx::set_sampling(a1.get(), 50.0f, 0, 0.9f, 123);
    std::vector<unsigned char> blob(0);
    size_t n = 0, w = 0;
    lmx::check(a.get(), lm_session_state_size(a.get(), &n));
    blob.resize(n);
    lmx::check(a.get(), lm_session_state_save(a.get(), blob.data(), n, &w));
    lmx::check(a1.get(), lm_session_state_load(a1.get(), blob.data(), n));
    for (int step = 0; step < 8; step++) {
        const int32_t x = lmx::decode_sample({a.get()}, {3}, V)[0];
        const int32_t y = lmx::decode_sample({a1.get()}, {3}, V)[0];
        EXPECT(x == y, "step %d: %d vs %d", step, x, y);
    }
    expect_status([&] { lmx::set_sampling(a.get(), 1.0f, -1); }, LM_ERR_OUT_OF_RANGE, "top_k < 0");
    expect_status([&] { lmx::set_sampling(a.get(), NAN); }, LM_ERR_OUT_OF_RANGE, "NaN temperature");
    EXPECT(std::strstr(lm_session_last_error(a.get()), "temperature") != nullptr, "%s",
           lm_session_last_error(a.get()));
    const int64_t pos = lm_session_position(a.get());
    expect_status([&] { lmx::decode_sample(smp, {1, static_cast<int32_t>(V)}, V); }, LM_ERR_OUT_OF_RANGE,
                  "token >= vocab");
    expect_status([&] { lmx::decode_sample({a.get(), a.get()}, {1, 2}, V); }, LM_ERR_INVALID_ARGUMENT,
                  "a session twice");
    EXPECT(lm_session_position(a.get()) == pos, "failed calls moved the position");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    const fs::path data = argv[1];
    try {
        EXPECT(lm_version() == LM_VERSION_NUMBER, "header %d, library %d", LM_VERSION_NUMBER, lm_version());
        test_fixtures(data);
        test_errors(data);
        test_longmamba(data);
        test_sampling(data);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("cpp: all checks passed\n");
    return 0;
}
