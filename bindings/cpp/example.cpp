// example.cpp - libongmamba from C++17 through the unchanged C header, with
// a small RAII layer: unique_ptr with custom deleters for the handles, an
// exception carrying status and message, and buffers sized by the wrapper.
//
//   g++ -std=c++17 example.cpp $(pkg-config --cflags --libs longmamba) -o example
//   ./example MODEL_DIR
//
// Loads a model, prefills, decodes (greedy, then sampled by the library),
// classifies channels after calibrating on a few random windows, and runs a
// LongMamba prefill.
#include <longmamba.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace lmx {

// ---- handles: unique_ptr with the library's free functions -----------------
struct ModelFree {
    void operator()(lm_model *m) const noexcept { lm_model_free(m); }
};
struct SessionFree {
    void operator()(lm_session *s) const noexcept { lm_session_free(s); }
};
struct CalibrationFree {
    void operator()(lm_calibration *c) const noexcept { lm_calibration_free(c); }
};
using ModelPtr = std::unique_ptr<lm_model, ModelFree>;
using SessionPtr = std::unique_ptr<lm_session, SessionFree>;  // free before its model
using CalibrationPtr = std::unique_ptr<lm_calibration, CalibrationFree>;

// ---- errors -------------------------------------------------------------------
class Error : public std::runtime_error {
public:
    Error(lm_status status, const std::string &msg)
        : std::runtime_error(msg + " (" + lm_status_str(status) + ")"), status_(status) {}
    lm_status status() const noexcept { return status_; }

private:
    lm_status status_;
};

// Calls without a session report through an (err, err_cap) buffer.
struct ErrBuf {
    char text[1024] = {0};
    void check(lm_status st) const {
        if (st != LM_OK) throw Error(st, text);
    }
};

// Session calls record their message in the session.
inline void check(const lm_session *s, lm_status st) {
    if (st != LM_OK) throw Error(st, lm_session_last_error(s));
}

inline ModelPtr load_model(const std::string &dir, lm_backend backend = LM_BACKEND_AUTO,
                           int n_threads = 0) {
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = backend;
    p.n_threads = n_threads;
    lm_model *m = nullptr;
    ErrBuf e;
    e.check(lm_model_load(dir.c_str(), &p, &m, e.text, sizeof e.text));
    return ModelPtr(m);
}

inline lm_model_info model_info(const lm_model *m) {
    lm_model_info info{};
    info.struct_size = sizeof info;
    if (lm_status st = lm_model_get_info(m, &info); st != LM_OK) throw Error(st, "model info");
    return info;
}

inline SessionPtr new_session(const lm_model *m, int64_t chunk_size = 0) {
    lm_session_params p;
    lm_session_params_init(&p);
    if (chunk_size > 0) p.chunk_size = chunk_size;
    lm_session *s = nullptr;
    ErrBuf e;
    e.check(lm_session_create(m, &p, &s, e.text, sizeof e.text));
    return SessionPtr(s);
}

// Logits of the last n_logits positions, [n_logits][vocab]; the wrapper
// sizes the buffer, so a too-small buffer cannot happen here.
inline std::vector<float> prefill(lm_session *s, const std::vector<int32_t> &tokens,
                                  size_t n_logits, size_t vocab) {
    std::vector<float> out(std::min(n_logits, tokens.size()) * vocab);
    check(s, lm_session_prefill(s, tokens.data(), tokens.size(), n_logits, out.data(),
                                out.size()));
    return out;
}

inline std::vector<float> decode(lm_session *s, int32_t token, size_t vocab) {
    std::vector<float> out(vocab);
    check(s, lm_session_decode(s, token, out.data(), out.size()));
    return out;
}

// How decode_sample draws the session's next token (lm_session_set_sampling):
// temperature <= 0 is greedy; top_k 0 keeps every id; top_p 0 or 1 is off.
inline void set_sampling(lm_session *s, float temperature, int32_t top_k = 0, float top_p = 1.0f,
                         uint64_t seed = 0, bool return_logits = false) {
    lm_sampling_params p;
    lm_sampling_params_init(&p);
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.seed = seed;
    if (return_logits) p.flags |= LM_SAMPLE_RETURN_LOGITS;
    check(s, lm_session_set_sampling(s, &p));
}

// One decode step for several sessions of one model, each drawing its next
// token with its own sampler (lm_session_decode_sample).  logits, when
// given, is sized [n][vocab] and receives the rows of the sessions that
// return theirs; the others are left as they were.
inline std::vector<int32_t> decode_sample(const std::vector<lm_session *> &ss,
                                          const std::vector<int32_t> &tokens, size_t vocab,
                                          std::vector<float> *logits = nullptr) {
    if (tokens.size() != ss.size()) throw Error(LM_ERR_INVALID_ARGUMENT, "sessions and tokens differ in number");
    if (ss.empty()) return {};
    std::vector<int32_t> next(ss.size());
    if (logits) logits->resize(ss.size() * vocab);
    check(ss[0], lm_session_decode_sample(ss.data(), ss.size(), tokens.data(), next.data(),
                                          logits ? logits->data() : nullptr, logits ? logits->size() : 0));
    return next;
}

inline CalibrationPtr calibrate(const lm_model *m, const std::vector<std::vector<int32_t>> &wins) {
    std::vector<const int32_t *> ptrs;
    std::vector<size_t> lens;
    for (const auto &w : wins) {
        ptrs.push_back(w.data());
        lens.push_back(w.size());
    }
    lm_calibration *c = nullptr;
    ErrBuf e;
    e.check(lm_calibrate(m, ptrs.data(), lens.data(), wins.size(), nullptr, &c, e.text,
                         sizeof e.text));
    return CalibrationPtr(c);
}

inline lm_calibration_info calibration_info(const lm_calibration *c) {
    lm_calibration_info info{};
    info.struct_size = sizeof info;
    if (lm_status st = lm_calibration_get_info(c, &info); st != LM_OK)
        throw Error(st, "calibration info");
    return info;
}

// Global-channel mask [n_layer * n_channels] and counts per layer.
inline std::pair<std::vector<uint8_t>, std::vector<int64_t>> classify(const lm_calibration *c,
                                                                      double theta) {
    const lm_calibration_info info = calibration_info(c);
    std::vector<uint8_t> mask(static_cast<size_t>(info.n_layer * info.n_channels));
    std::vector<int64_t> counts(static_cast<size_t>(info.n_layer));
    ErrBuf e;
    e.check(lm_classify_channels(c, theta, mask.data(), mask.size(), counts.data(), counts.size(),
                                 e.text, sizeof e.text));
    return {mask, counts};
}

inline int32_t argmax(const float *row, size_t n) {
    return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

}  // namespace lmx

#ifndef LMX_EXAMPLE_NO_MAIN
int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    try {
        lmx::ModelPtr model = lmx::load_model(argv[1], LM_BACKEND_CPU);
        const lm_model_info info = lmx::model_info(model.get());
        const size_t V = static_cast<size_t>(info.vocab_size);
        std::printf("Mamba-%d, %lld layers, d_model %lld, vocab %zu\n", static_cast<int>(info.arch),
                    static_cast<long long>(info.n_layer), static_cast<long long>(info.d_model), V);

        std::mt19937 gen(42);
        std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(V) - 1);
        auto tokens = [&](size_t n) {
            std::vector<int32_t> t(n);
            for (auto &x : t) x = dist(gen);
            return t;
        };

        // The calibration is declared before the session: a session must be
        // freed before the calibration it filters with (reverse order).
        lmx::CalibrationPtr calib = lmx::calibrate(model.get(), {tokens(64), tokens(64), tokens(64), tokens(64)});
        lmx::SessionPtr s = lmx::new_session(model.get());

        std::vector<float> logits = lmx::prefill(s.get(), tokens(16), 1, V);
        std::printf("greedy continuation:");
        for (int i = 0; i < 8; i++) {
            int32_t next = lmx::argmax(logits.data(), V);
            std::printf(" %d", next);
            logits = lmx::decode(s.get(), next, V);
        }
        std::printf("\n");

        // The library samples: temperature 0.8, top-k 40, nucleus 0.95, seed 42.
        lmx::set_sampling(s.get(), 0.8f, 40, 0.95f, 42);
        std::printf("sampled continuation:");
        int32_t tok = lmx::argmax(logits.data(), V);
        for (int i = 0; i < 8; i++) {
            tok = lmx::decode_sample({s.get()}, {tok}, V)[0];
            std::printf(" %d", tok);
        }
        std::printf("\n");

        auto [mask, counts] = lmx::classify(calib.get(), 1e-3);
        std::printf("global channels per layer:");
        for (int64_t c : counts) std::printf(" %lld", static_cast<long long>(c));
        std::printf(" of %lld\n", static_cast<long long>(lmx::calibration_info(calib.get()).n_channels));
        (void)mask;

        lmx::check(s.get(), lm_session_reset(s.get()));
        lmx::check(s.get(), lm_session_set_longmamba(s.get(), calib.get(), nullptr));
        std::vector<int32_t> long_prompt = tokens(256);
        logits = lmx::prefill(s.get(), long_prompt, 1, V);
        std::printf("longmamba prefill of %zu tokens: next token %d\n", long_prompt.size(),
                    lmx::argmax(logits.data(), V));
    } catch (const lmx::Error &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
#endif
