/*
 * model_load.c - lm_model_load: config.json + safetensors, or a GGUF
 * file, -> lm_model.
 *
 * Steps: read config.json (Hugging Face or mamba_ssm field names, Mamba-1
 * or Mamba-2), open model.safetensors or every shard named by
 * model.safetensors.index.json, then fetch each tensor the architecture
 * needs, checking its shape against the configuration.  Weights keep their
 * stored type (lmi_weight: F32, F16 or BF16): a tensor whose data is
 * aligned for its type is used straight from the read-only mapping (zero
 * copy), an unaligned one is copied once, in the same type, into a buffer
 * the model owns.  Only A (derived: -exp(A_log)), D and dt_bias are
 * always fp32 (small arrays the scans read as fp32).  Then the backend is
 * chosen and its model_init runs.
 *
 * A GGUF file takes the same steps from its metadata and llama.cpp's
 * tensor names (each architecture row and mixer says how: gguf_dims, and
 * the GGUF names in the mixer's table of tensors); lmi_take is shared,
 * reading either format's tensors in row major (PyTorch) order.
 *
 * Every error path ends in lm_model_free on the partly built model, which
 * therefore accepts any state a failed load can leave behind.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "format/json.h"
#include "format/safetensors.h"
#include "format/gguf.h"
#include "format/mapfile.h"
#include "model_load.h"
#include "arch/arch.h"

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (16u << 20) /* config.json / index: far above any real one */

/* ---- params ---------------------------------------------------------------- */

void lm_model_params_init(lm_model_params *params)
{
    if (!params)
        return;
    memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
    params->backend = LM_BACKEND_AUTO;
    params->n_threads = 0;
    params->device = 0;
    params->log_level = LM_LOG_ERROR;
}

/* ---- small helpers ----------------------------------------------------------- */

static char *path_join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    bool slash = dl > 0 && dir[dl - 1] == '/';
    char *p = lmi_alloc(dl + nl + 2, 1);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    if (!slash)
        p[dl++] = '/';
    memcpy(p + dl, name, nl + 1);
    return p;
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static lm_status read_json_file(const char *path, lmi_json **out, lmi_err *e)
{
    char *text = NULL;
    size_t len = 0;
    lm_status st = lmi_read_file(path, CONFIG_MAX_BYTES, "a JSON config", &text, &len, e);
    if (st != LM_OK)
        return st;
    lmi_err je = {{0}};
    st = lmi_json_parse(text, len, out, &je);
    lmi_free(text);
    if (st != LM_OK)
        return lmi_fail(e, st, "%s: %s", path, je.msg);
    if ((*out)->type != LMI_JSON_OBJECT) {
        lmi_json_free(*out);
        *out = NULL;
        return lmi_fail(e, LM_ERR_FORMAT, "%s: top level is not a JSON object", path);
    }
    return LM_OK;
}

/* "[a,b,c]" into buf. */
static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int k = 0; k < ndim && o < cap; k++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", k ? "," : "", (long long)shape[k]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
    return buf;
}

/* ---- config.json --------------------------------------------------------------- */


lm_status lmi_cfg_int(const lmi_cfg *c, const lmi_json *obj, const char *key, int64_t dflt,
                         int64_t lo, int64_t hi, int64_t *out, lmi_err *e)
{
    const lmi_json *v = lmi_json_get(obj, key);
    if (!v || v->type == LMI_JSON_NULL) {
        if (dflt < 0)
            return lmi_fail(e, LM_ERR_MISSING, "%s has no \"%s\"", c->path, key);
        *out = dflt;
        return LM_OK;
    }
    if (v->type != LMI_JSON_NUMBER || !v->is_integer)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"%s\" must be an integer", c->path, key);
    if (v->integer < lo || v->integer > hi)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: \"%s\" = %lld is outside [%lld, %lld]", c->path,
                        key, (long long)v->integer, (long long)lo, (long long)hi);
    *out = v->integer;
    return LM_OK;
}

lm_status lmi_cfg_bool(const lmi_cfg *c, const lmi_json *obj, const char *key, int dflt, int *out,
                          lmi_err *e)
{
    const lmi_json *v = lmi_json_get(obj, key);
    if (!v || v->type == LMI_JSON_NULL) {
        *out = dflt;
        return LM_OK;
    }
    if (v->type != LMI_JSON_TRUE && v->type != LMI_JSON_FALSE)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"%s\" must be true or false", c->path, key);
    *out = v->type == LMI_JSON_TRUE;
    return LM_OK;
}

lm_status lmi_cfg_num(const lmi_cfg *c, const lmi_json *obj, const char *key, double dflt,
                         double *out, lmi_err *e)
{
    const lmi_json *v = lmi_json_get(obj, key);
    if (!v || v->type == LMI_JSON_NULL) {
        *out = dflt;
        return LM_OK;
    }
    if (v->type != LMI_JSON_NUMBER || !isfinite(v->num))
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"%s\" must be a finite number", c->path, key);
    *out = v->num;
    return LM_OK;
}

bool lmi_json_str_is(const lmi_json *v, const char *s)
{
    return v && v->type == LMI_JSON_STRING && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

/* Integer or "auto" (= ceil(d_model / 16), as HF and mamba_ssm compute it). */
lm_status lmi_cfg_dt_rank(const lmi_cfg *c, const lmi_json *obj, const char *key, int64_t d_model,
                             int64_t *out, lmi_err *e)
{
    const lmi_json *v = lmi_json_get(obj, key);
    if (!v || v->type == LMI_JSON_NULL || lmi_json_str_is(v, "auto")) {
        *out = (d_model + 15) / 16;
        return LM_OK;
    }
    return lmi_cfg_int(c, obj, key, 0, 1, 1 << 20, out, e);
}

/* d_inner = int(expand * d_model), Python's truncation. */
lm_status lmi_cfg_expand(const lmi_cfg *c, const lmi_json *obj, const char *key, int64_t d_model,
                            int64_t *out, lmi_err *e)
{
    double ex = 0;
    lm_status st = lmi_cfg_num(c, obj, key, 2.0, &ex, e);
    if (st != LM_OK)
        return st;
    double di = floor(ex * (double)d_model);
    if (!(di >= 1 && di <= (double)(1 << 22)))
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: \"%s\" = %g gives an unusable d_inner", c->path,
                        key, ex);
    *out = (int64_t)di;
    return LM_OK;
}

/* Mamba-2 time_step_limit: [lo, hi], where transformers 5 may write the
 * bound as {"__float__": "Infinity"}. */
static lm_status limit_value(const lmi_cfg *c, const lmi_json *v, double *out, lmi_err *e)
{
    if (v->type == LMI_JSON_NUMBER) {
        *out = v->num;
        return LM_OK;
    }
    const lmi_json *f = lmi_json_get(v, "__float__");
    if (lmi_json_str_is(f, "Infinity") || lmi_json_str_is(f, "inf")) {
        *out = INFINITY;
        return LM_OK;
    }
    return lmi_fail(e, LM_ERR_FORMAT, "%s: bad value in \"time_step_limit\"", c->path);
}

lm_status lmi_cfg_time_limit(lmi_cfg *c, const lmi_json *obj, const char *key, lmi_err *e)
{
    c->d.dt_limit_lo = 0.0;
    c->d.dt_limit_hi = INFINITY;
    const lmi_json *v = lmi_json_get(obj, key);
    if (!v || v->type == LMI_JSON_NULL)
        return LM_OK;
    if (v->type != LMI_JSON_ARRAY || v->len != 2)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"%s\" must be a two-element list", c->path, key);
    lm_status st = limit_value(c, &v->items[0], &c->d.dt_limit_lo, e);
    if (st == LM_OK)
        st = limit_value(c, &v->items[1], &c->d.dt_limit_hi, e);
    if (st != LM_OK)
        return st;
    if (isnan(c->d.dt_limit_lo) || isnan(c->d.dt_limit_hi) || c->d.dt_limit_lo < 0 ||
        c->d.dt_limit_lo > c->d.dt_limit_hi)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"%s\" is not a valid range", c->path, key);
    return LM_OK;
}

/* Hugging Face config: the keys every architecture shares, then its own. */
static lm_status parse_hf(const lmi_arch *a, lmi_cfg *c, const lmi_json *j, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_cfg_int(c, j, "hidden_size", -1, 1, 1 << 20, &d->d_model, e)))
        return st;
    if ((st = lmi_cfg_int(c, j, "num_hidden_layers", -1, 1, 4096, &d->n_layer, e)))
        return st;
    if ((st = lmi_cfg_int(c, j, "vocab_size", 0, 1, INT32_MAX, &c->vocab_expected, e)))
        return st;
    if ((st = lmi_cfg_num(c, j, "layer_norm_epsilon", 1e-5, &d->eps, e)))
        return st;
    int tied = 1;
    if ((st = lmi_cfg_bool(c, j, "tie_word_embeddings", a->hf_tied_default ? 1 : 0, &tied, e)))
        return st;
    d->tied = tied;
    if ((st = lmi_cfg_bool(c, j, "use_bias", -1, &c->use_bias, e)))
        return st;
    if ((st = lmi_cfg_bool(c, j, "use_conv_bias", -1, &c->use_conv_bias, e)))
        return st;
    const lmi_json *act = lmi_json_get(j, "hidden_act");
    if (act && !lmi_json_str_is(act, "silu"))
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: hidden_act must be \"silu\"", c->path);
    if ((st = lmi_cfg_int(c, j, "conv_kernel", 4, 1, 64, &d->d_conv, e)))
        return st;

    return a->parse_hf(c, j, e);
}

/* mamba_ssm's MambaConfig: d_model, n_layer, vocab_size, ssm_cfg {...}. */
static lm_status parse_ssm(const lmi_arch *a, lmi_cfg *c, const lmi_json *j, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_cfg_int(c, j, "d_model", -1, 1, 1 << 20, &d->d_model, e)))
        return st;
    if ((st = lmi_cfg_int(c, j, "n_layer", -1, 1, 4096, &d->n_layer, e)))
        return st;
    int64_t vocab = 0, pad = 1, d_int = 0;
    if ((st = lmi_cfg_int(c, j, "vocab_size", 50277, 1, INT32_MAX, &vocab, e)))
        return st;
    if ((st = lmi_cfg_int(c, j, "pad_vocab_size_multiple", 8, 1, 1 << 20, &pad, e)))
        return st;
    c->vocab_expected = (vocab + pad - 1) / pad * pad;
    if ((st = lmi_cfg_int(c, j, "d_intermediate", 0, 0, INT32_MAX, &d_int, e)))
        return st;
    if (d_int != 0)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "%s: MLP blocks (d_intermediate > 0) are not supported", c->path);
    const lmi_json *attn = lmi_json_get(j, "attn_layer_idx");
    if (attn && !(attn->type == LMI_JSON_ARRAY && attn->len == 0) && attn->type != LMI_JSON_NULL)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "%s: attention layers (attn_layer_idx) are not supported", c->path);
    int rms = 1, tied = 1;
    if ((st = lmi_cfg_bool(c, j, "rms_norm", 1, &rms, e)))
        return st;
    if (!rms)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "%s: LayerNorm models (rms_norm=false) are not supported", c->path);
    if ((st = lmi_cfg_bool(c, j, "tie_embeddings", 1, &tied, e)))
        return st;
    d->tied = tied;
    if ((st = lmi_cfg_num(c, j, "norm_epsilon", 1e-5, &d->eps, e)))
        return st;

    static const lmi_json empty = {.type = LMI_JSON_OBJECT};
    const lmi_json *s = lmi_json_get(j, "ssm_cfg");
    if (!s || s->type == LMI_JSON_NULL)
        s = &empty;
    if (s->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"ssm_cfg\" must be an object", c->path);
    if ((st = lmi_cfg_int(c, s, "d_conv", 4, 1, 64, &d->d_conv, e)))
        return st;
    if ((st = lmi_cfg_expand(c, s, "expand", d->d_model, &d->d_inner, e)))
        return st;
    if ((st = lmi_cfg_bool(c, s, "bias", -1, &c->use_bias, e)))
        return st;
    if ((st = lmi_cfg_bool(c, s, "conv_bias", -1, &c->use_conv_bias, e)))
        return st;
    return a->parse_ssm(c, s, e);
}

/* ---- the tables ----------------------------------------------------------------- */

/* One row per architecture (lib/arch/<name>.c). */
static const lmi_arch *const arch_table[] = {&lmi_arch_mamba1, &lmi_arch_mamba2,
                                             &lmi_arch_falcon_mamba};
/* One row per mixer kind. */
static const lmi_mixer_ops *const mixer_table[] = {&lmi_mixer_mamba1, &lmi_mixer_mamba2};

#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))

const lmi_arch *lmi_arch_find(lm_arch arch)
{
    for (size_t k = 0; k < N_ROWS(arch_table); k++)
        if (arch_table[k]->arch == arch) return arch_table[k];
    return NULL;
}

const lmi_mixer_ops *lmi_mixer_find(lmi_mixer_kind kind)
{
    for (size_t k = 0; k < N_ROWS(mixer_table); k++)
        if (mixer_table[k]->kind == kind) return mixer_table[k];
    return NULL;
}

/* The row a config names: model_type, else an "architectures" entry, else
 * (mamba_ssm form) ssm_cfg.layer. */
static lm_status find_arch(const lmi_cfg *c, const lmi_json *j, bool ssm_form, const lmi_arch **out,
                           lmi_err *e)
{
    const lmi_json *mt = lmi_json_get(j, "model_type");
    const lmi_json *archs = lmi_json_get(j, "architectures");
    *out = NULL;
    if (mt && mt->type != LMI_JSON_NULL) {
        if (mt->type != LMI_JSON_STRING)
            return lmi_fail(e, LM_ERR_FORMAT, "%s: \"model_type\" must be a string", c->path);
        for (size_t k = 0; k < N_ROWS(arch_table); k++)
            if (lmi_json_str_is(mt, arch_table[k]->model_type)) *out = arch_table[k];
        if (!*out)
            return lmi_fail(
                e, LM_ERR_UNSUPPORTED,
                "%s: model_type \"%.64s\" is not supported (only \"mamba\", \"mamba2\" and "
                "\"falcon_mamba\")",
                c->path, mt->str);
        return LM_OK;
    }
    if (archs && archs->type == LMI_JSON_ARRAY && archs->len > 0) {
        for (size_t i = 0; i < archs->len && !*out; i++)
            for (size_t k = 0; k < N_ROWS(arch_table) && !*out; k++)
                for (size_t n = 0; n < 3 && arch_table[k]->hf_classes[n]; n++)
                    if (lmi_json_str_is(&archs->items[i], arch_table[k]->hf_classes[n]))
                        *out = arch_table[k];
        if (!*out)
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: architectures name no Mamba model",
                            c->path);
        return LM_OK;
    }
    if (ssm_form) {
        const lmi_json *s = lmi_json_get(j, "ssm_cfg");
        const lmi_json *layer = s ? lmi_json_get(s, "layer") : NULL;
        for (size_t k = 0; k < N_ROWS(arch_table); k++)
            if (layer ? arch_table[k]->ssm_layer && lmi_json_str_is(layer, arch_table[k]->ssm_layer)
                      : arch_table[k]->ssm_layer_default)
                *out = arch_table[k];
        if (!*out)
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: ssm_cfg.layer is neither Mamba1 nor Mamba2",
                            c->path);
        return LM_OK;
    }
    return lmi_fail(e, LM_ERR_UNSUPPORTED,
                    "%s does not describe a Mamba model (no model_type, architectures or d_model)",
                    c->path);
}

static lm_status parse_config(lmi_cfg *c, const lmi_json *j, lmi_err *e)
{
    memset(&c->d, 0, sizeof c->d);
    c->use_bias = c->use_conv_bias = -1;
    c->vocab_expected = 0;
    bool ssm_form = lmi_json_get(j, "d_model") != NULL && lmi_json_get(j, "hidden_size") == NULL;
    const lmi_arch *a = NULL;
    lm_status st = find_arch(c, j, ssm_form, &a, e);
    if (st != LM_OK) return st;
    c->d.arch = a->arch;
    st = ssm_form ? parse_ssm(a, c, j, e) : parse_hf(a, c, j, e);
    if (st != LM_OK) return st;
    if (!(c->d.eps > 0 && c->d.eps < 1))
        return lmi_fail(e, LM_ERR_FORMAT, "%s: layer norm epsilon %g is not in (0, 1)", c->path,
                        c->d.eps);
    return a->finish(c, e);
}

lm_status lmi_config_parse(const char *text, size_t n, lmi_dims *out, lmi_err *e)
{
    if (!text || !out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lmi_config_parse: NULL argument");
    lmi_json *j = NULL;
    lmi_err je = {{0}};
    lm_status st = lmi_json_parse(text, n, &j, &je);
    if (st != LM_OK)
        return lmi_fail(e, st, "config.json: %s", je.msg);
    lmi_cfg c;
    memset(&c, 0, sizeof c);
    c.path = "config.json";
    if (j->type != LMI_JSON_OBJECT)
        st = lmi_fail(e, LM_ERR_FORMAT, "config.json: top level is not a JSON object");
    else
        st = parse_config(&c, j, e);
    lmi_json_free(j);
    if (st == LM_OK)
        *out = c.d;
    return st;
}

/* ---- tensors ----------------------------------------------------------------- */


static const lmi_st_tensor *find_tensor(const lmi_loader *ld, const char *name, size_t *file)
{
    for (size_t k = 0; k < ld->n_files; k++) {
        const lmi_st_tensor *t = lmi_st_find(&ld->files[k], name);
        if (t) {
            if (file)
                *file = k;
            return t;
        }
    }
    return NULL;
}

static bool has_tensor(const lmi_loader *ld, const char *name)
{
    if (ld->gguf)
        return lmi_gguf_find_tensor(ld->gguf, name) != NULL;
    return find_tensor(ld, name, NULL) != NULL;
}

static lm_status own(lm_model *m, void *p, lmi_err *e)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **n = lmi_alloc(cap, sizeof *n);
        if (!n) {
            lmi_free(p);
            return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
        }
        if (m->n_owned)
            memcpy(n, m->owned, m->n_owned * sizeof *n);
        lmi_free(m->owned);
        m->owned = n;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return LM_OK;
}

/* 64-bit FNV-1a. */
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t k = 0; k < n; k++) {
        h ^= b[k];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t fnv_i64(uint64_t h, int64_t v)
{
    uint8_t b[8];
    for (int k = 0; k < 8; k++)
        b[k] = (uint8_t)((uint64_t)v >> (8 * k));
    return fnv_bytes(h, b, 8);
}

static uint64_t fnv_stored(uint64_t h, const lmi_stored *t)
{
    h = fnv_bytes(h, &t->tag, 1);
    return fnv_bytes(h, t->data, t->nbytes);
}

static lmi_wtype wtype_of(lmi_st_dtype dt)
{
    return dt == LMI_ST_F16 ? LMI_W_F16 : dt == LMI_ST_BF16 ? LMI_W_BF16 : LMI_W_F32;
}

/* A stored tensor in the terms lmi_take works in, whatever the format. */
typedef struct found {
    lmi_wtype type;
    uint8_t tag;                    /* fingerprint byte (lmi_stored) */
    int ndim;
    int64_t shape[LMI_ST_MAX_DIMS]; /* row major */
    const uint8_t *data;            /* in a mapping; not necessarily aligned */
    size_t nbytes, nel;
    bool *in_place;                 /* set when a weight points into that mapping */
} found;

/* The ggml types a GGUF weight may have: the one place where a stored type
 * of GGUF files is recognised. */
static lm_status gguf_wtype(const lmi_gguf_tensor *t, found *f, lmi_err *e)
{
    switch (t->type) {
    case LMI_GGML_F32: f->type = LMI_W_F32, f->tag = LMI_ST_F32; return LM_OK;
    case LMI_GGML_F16: f->type = LMI_W_F16, f->tag = LMI_ST_F16; return LM_OK;
    case LMI_GGML_BF16: f->type = LMI_W_BF16, f->tag = LMI_ST_BF16; return LM_OK;
    case LMI_GGML_Q8_0:
        /* GGML's Q8_0 is LMI_W_Q8_0 byte for byte: used in place.  The
         * reader checked that ne[0] is a multiple of 32 and that the byte
         * count (rows * ne[0] / 32 * 34) lies inside the file; lmi_take
         * accepts it only for linear layers (LMI_TAKE_LINEAR).  The tag is
         * past the lmi_st_dtype values; no hashed tensor may be Q8_0. */
        f->type = LMI_W_Q8_0, f->tag = LMI_ST_BOOL + 1;
        return LM_OK;
    default: {
        const char *nm = lmi_gguf_type_name(t->type);
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tensor %s has type %s (ggml type %u); supported: F32, F16, BF16, and "
                        "Q8_0 for the matrices of linear layers",
                        t->name, nm ? nm : "unknown", (unsigned)t->type);
    }
    }
}

/* Looks `name` up; *present false (and LM_OK) when absent. */
static lm_status locate(lmi_loader *ld, const char *name, found *f, bool *present)
{
    memset(f, 0, sizeof *f);
    *present = false;
    if (ld->gguf) {
        const lmi_gguf_tensor *t = lmi_gguf_find_tensor(ld->gguf, name);
        if (!t)
            return LM_OK;
        *present = true;
        lm_status st = gguf_wtype(t, f, ld->e);
        if (st != LM_OK)
            return st;
        /* GGUF lists extents fastest first: reversed, they are PyTorch's. */
        f->ndim = t->ndim;
        for (int k = 0; k < t->ndim; k++)
            f->shape[k] = t->ne[t->ndim - 1 - k];
        f->data = t->data;
        f->nbytes = t->nbytes;
        f->in_place = &ld->gguf_in_place;
    } else {
        size_t fi = 0;
        const lmi_st_tensor *t = find_tensor(ld, name, &fi);
        if (!t)
            return LM_OK;
        *present = true;
        if (t->dtype != LMI_ST_F32 && t->dtype != LMI_ST_F16 && t->dtype != LMI_ST_BF16)
            return lmi_fail(ld->e, LM_ERR_UNSUPPORTED,
                            "tensor %s has dtype %s; only F32, F16 and BF16 are supported", name,
                            lmi_st_dtype_name(t->dtype));
        f->type = wtype_of(t->dtype);
        f->tag = (uint8_t)t->dtype;
        f->ndim = t->ndim;
        memcpy(f->shape, t->shape, sizeof f->shape);
        f->data = t->data;
        f->nbytes = t->nbytes;
        f->in_place = &ld->in_place[fi];
    }
    f->nel = 1;
    for (int k = 0; k < f->ndim; k++)
        f->nel *= (size_t)f->shape[k]; /* fits: the readers checked the byte count */
    return LM_OK;
}

/* n elements of a stored type to fp32; src may be unaligned. */
static void stored_to_f32(lmi_wtype type, const uint8_t *src, size_t n, float *out)
{
    uint16_t h;
    for (size_t k = 0; k < n; k++) {
        switch (type) {
        case LMI_W_F16:
            memcpy(&h, src + 2 * k, 2);
            out[k] = lmi_f16_to_f32(h);
            break;
        case LMI_W_BF16:
            memcpy(&h, src + 2 * k, 2);
            out[k] = lmi_bf16_to_f32(h);
            break;
        default:
            memcpy(out + k, src + 4 * k, 4);
            break;
        }
    }
}

/* Fetches tensor `name` with the given shape, in its stored type.  Absent
 * and not required: out->data = NULL.  LMI_TAKE_F32: fp32 whatever the stored
 * type (converted copies for 16-bit); LMI_TAKE_COPY: an owned, writable copy. */
lm_status lmi_take(lmi_loader *ld, const char *name, int ndim, const int64_t *shape, int flags,
                   lmi_weight *out, lmi_stored *raw)
{
    lmi_err *e = ld->e;
    memset(out, 0, sizeof *out);
    if (raw)
        memset(raw, 0, sizeof *raw);
    found t;
    bool present = false;
    lm_status st = locate(ld, name, &t, &present);
    if (st != LM_OK)
        return st;
    if (!present) {
        if (flags & LMI_TAKE_REQUIRED)
            return lmi_fail(e, LM_ERR_MISSING, "tensor %s is missing from %s", name, ld->where);
        return LM_OK;
    }
    bool same = t.ndim == ndim;
    for (int k = 0; same && k < ndim; k++)
        same = t.shape[k] == shape[k];
    if (!same) {
        char got[160], want[160];
        return lmi_fail(e, LM_ERR_SHAPE, "tensor %s has shape %s, expected %s", name,
                        shape_str(got, sizeof got, t.ndim, t.shape),
                        shape_str(want, sizeof want, ndim, shape));
    }
    const size_t es = lmi_wtype_size(t.type);
    if (es == 0 &&
        (!(flags & LMI_TAKE_LINEAR) || ndim != 2 || (flags & (LMI_TAKE_F32 | LMI_TAKE_COPY))))
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "tensor %s is stored as Q8_0, which only the matrices of linear layers "
                        "may be; this one must be F32, F16 or BF16",
                        name);
    const lmi_wtype type = (flags & LMI_TAKE_F32) ? LMI_W_F32 : t.type;
    out->type = type;
    out->rows = ndim >= 2 ? shape[0] : 1;
    out->cols = out->rows > 0 ? (int64_t)t.nel / out->rows : 0;
    if (es == 0) {
        /* A block type (Q8_0: the kernels read its bytes unaligned) is
         * used in place; its byte count was checked by the reader. */
        const lmi_weight chk = {NULL, type, out->rows, out->cols};
        if (out->rows < 0 || (uint64_t)lmi_weight_row_bytes(&chk) * (uint64_t)out->rows != t.nbytes)
            return lmi_fail(e, LM_ERR_FORMAT,
                            "tensor %s: %zu bytes of Q8_0 data for shape %lld x %lld", name,
                            t.nbytes, (long long)out->rows, (long long)out->cols);
        out->data = t.data;
        *t.in_place = true;
    } else if (t.type == type && ((uintptr_t)t.data % es) == 0 && !(flags & LMI_TAKE_COPY)) {
        /* Zero copy: the mapping is read-only, the model never writes weights. */
        out->data = t.data;
        *t.in_place = true;
    } else {
        void *buf = lmi_alloc_raw(t.nel, lmi_wtype_size(type));
        if (!buf)
            return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory converting tensor %s", name);
        if ((st = own(ld->m, buf, e)) != LM_OK)
            return st;
        if (type == LMI_W_F32)
            stored_to_f32(t.type, t.data, t.nel, buf);
        else if (t.nel)
            memcpy(buf, t.data, t.nbytes); /* unaligned 16-bit: one copy, same type */
        out->data = buf;
    }
    ld->m->n_params += (int64_t)t.nel;
    if (raw)
        *raw = (lmi_stored){t.data, t.nbytes, t.tag};
    return LM_OK;
}

lm_status lmi_check_finite(const float *v, size_t n, const char *name, lmi_err *e)
{
    for (size_t k = 0; k < n; k++)
        if (!isfinite(v[k]))
            return lmi_fail(e, LM_ERR_NUMERIC, "tensor %s has a non-finite value (%g) at index %zu",
                            name, (double)v[k], k);
    return LM_OK;
}

/* A = -exp(A_log), in place on an owned fp32 copy of A_log. */
lm_status lmi_make_A(float *a, size_t n, const char *name, lmi_err *e)
{
    lm_status st = lmi_check_finite(a, n, name, e);
    if (st != LM_OK)
        return st;
    for (size_t k = 0; k < n; k++) {
        // A = -torch.exp(self.A_log.float())
        float v = -expf(a[k]);
        if (!isfinite(v))
            return lmi_fail(e, LM_ERR_NUMERIC, "tensor %s: exp(%g) at index %zu overflows fp32",
                            name, (double)a[k], k);
        a[k] = v;
    }
    return LM_OK;
}

/* Bias flags absent from config.json (always, for GGUF) follow the
 * checkpoint (layer 0). */
static void resolve_flag(const lmi_loader *ld, int *flag, const char *name)
{
    if (*flag < 0)
        *flag = has_tensor(ld, name);
}

lm_status lmi_take_bias(lmi_loader *ld, const char *name, bool flag, const char *field,
                        int64_t n, lmi_weight *out)
{
    memset(out, 0, sizeof *out);
    if (flag) return lmi_take(ld, name, 1, &n, LMI_TAKE_REQUIRED, out, NULL);
    if (has_tensor(ld, name)) {
        if (ld->gguf) /* the flags come from layer 0's tensors */
            return lmi_fail(ld->e, LM_ERR_SHAPE, "tensor %s is present but layer 0 has no %s", name,
                            strcmp(field, "use_bias") == 0 ? "ssm_in.bias" : "ssm_conv1d.bias");
        return lmi_fail(ld->e, LM_ERR_SHAPE, "tensor %s is present but the config has %s=false",
                        name, field);
    }
    return LM_OK;
}

void lmi_loader_hash(lmi_loader *ld, const lmi_stored *t)
{
    ld->fnv = fnv_stored(ld->fnv, t);
}

/* Where the tensors every model has are, per format. */
typedef struct tensor_names {
    const char *embed[2];       /* the first present is the embedding */
    const char *norm_f;
    const char *lm_head;        /* absent: tied */
    const char *layer;          /* layer i's names: layer + i + ... */
    const char *layer_norm;     /* ... + layer_norm */
    const char *mixer;          /* ... + mixer + the mixer's own names */
    const char *in_bias0;       /* layer 0's biases: the bias flags' default */
    const char *conv_bias0;
} tensor_names;

static const tensor_names hf_names = {
    {"backbone.embeddings.weight", "backbone.embedding.weight"}, /* HF, mamba_ssm */
    "backbone.norm_f.weight", "lm_head.weight", "backbone.layers.", ".norm.weight", ".mixer.",
    "backbone.layers.0.mixer.in_proj.bias", "backbone.layers.0.mixer.conv1d.bias"};

/* llama.cpp's names (gguf-py MODEL_TENSOR / TENSOR_NAMES). */
static const tensor_names gguf_names = {
    {"token_embd.weight", NULL}, "output_norm.weight", "output.weight", "blk.",
    ".attn_norm.weight", ".", "blk.0.ssm_in.bias", "blk.0.ssm_conv1d.bias"};

/* Layer i: its norm, then the tensors of its mixer (the row's pattern). */
static lm_status load_layer(lmi_loader *ld, const lmi_cfg *c, const tensor_names *tn, int64_t i)
{
    lm_model *m = ld->m;
    const lmi_arch *a = lmi_arch_find(m->dims.arch);
    lmi_layer *L = &m->layers[i];
    char n[160];
    L->kind = a->mixer_of(&m->dims, i);
    const lmi_mixer_ops *mx = lmi_mixer_find(L->kind);
    if (!mx) return lmi_fail(ld->e, LM_ERR_UNSUPPORTED, "layer %lld: unknown mixer kind %d",
                             (long long)i, (int)L->kind);
    if (ld->gguf && !mx->gguf)
        return lmi_fail(ld->e, LM_ERR_UNSUPPORTED, "layer %lld: %s layers have no GGUF form",
                        (long long)i, mx->name);
    int64_t s_d[1] = {m->dims.d_model};
    snprintf(n, sizeof n, "%s%lld%s", tn->layer, (long long)i, tn->layer_norm);
    lm_status st = lmi_take(ld, n, 1, s_d, LMI_TAKE_REQUIRED, &L->norm_w, NULL);
    if (st != LM_OK) return st;
    snprintf(n, sizeof n, "%s%lld%s", tn->layer, (long long)i, tn->mixer);
    return mx->load(ld, c, n, L);
}

/* Opens model.safetensors, or the shards listed in the index. */
static lm_status open_files(lmi_loader *ld, const char *dir, char **where_buf)
{
    lmi_err *e = ld->e;
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    lmi_json *idx = NULL;
    lm_status st = LM_OK;
    if (!single || !index) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    if (file_exists(single) || !file_exists(index)) {
        if (!file_exists(single)) {
            char *bin = path_join(dir, "pytorch_model.bin");
            bool has_bin = bin && file_exists(bin);
            lmi_free(bin);
            st = lmi_fail(
                e, LM_ERR_MISSING, "%s has no model.safetensors or model.safetensors.index.json%s",
                dir, has_bin ? " (pytorch_model.bin found: convert it to safetensors first)" : "");
            goto done;
        }
        ld->files = lmi_alloc(1, sizeof *ld->files);
        ld->file_names = lmi_alloc(1, sizeof *ld->file_names);
        ld->in_place = lmi_alloc(1, sizeof *ld->in_place);
        if (!ld->files || !ld->file_names || !ld->in_place) {
            st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        st = lmi_st_open(single, &ld->files[0], e);
        if (st != LM_OK)
            goto done;
        ld->n_files = 1;
        *where_buf = single;
        single = NULL;
        goto done;
    }

    /* Sharded: weight_map { tensor name: shard file }. */
    st = read_json_file(index, &idx, e);
    if (st != LM_OK)
        goto done;
    const lmi_json *wm = lmi_json_get(idx, "weight_map");
    if (!wm || wm->type != LMI_JSON_OBJECT || wm->len == 0) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: no \"weight_map\" object", index);
        goto done;
    }
    ld->files = lmi_alloc(wm->len, sizeof *ld->files);
    ld->file_names = lmi_alloc(wm->len, sizeof *ld->file_names);
    ld->in_place = lmi_alloc(wm->len, sizeof *ld->in_place);
    size_t *shard_of = lmi_alloc(wm->len, sizeof *shard_of);
    if (!ld->files || !ld->file_names || !ld->in_place || !shard_of) {
        lmi_free(shard_of);
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < wm->len && st == LM_OK; k++) {
        const lmi_json *v = &wm->items[k];
        if (v->type != LMI_JSON_STRING || v->len == 0 || strlen(v->str) != v->len ||
            strchr(v->str, '/') || v->str[0] == '.') {
            st = lmi_fail(e, LM_ERR_FORMAT, "%s: bad shard file name for tensor %.200s", index,
                          wm->keys[k]);
            break;
        }
        size_t f = 0;
        while (f < ld->n_files && strcmp(ld->file_names[f], v->str) != 0)
            f++;
        if (f == ld->n_files) {
            /* Each shard is opened once, on its first mention. */
            char *sp = path_join(dir, v->str);
            char *nm = lmi_alloc(v->len + 1, 1);
            if (!sp || !nm) {
                lmi_free(sp);
                lmi_free(nm);
                st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
                break;
            }
            memcpy(nm, v->str, v->len + 1);
            st = lmi_st_open(sp, &ld->files[f], e);
            lmi_free(sp);
            if (st != LM_OK) {
                lmi_free(nm);
                break;
            }
            ld->file_names[f] = nm;
            ld->n_files++;
        }
        shard_of[k] = f;
    }
    /* The index must agree with the shards' own headers. */
    for (size_t k = 0; k < wm->len && st == LM_OK; k++) {
        if (!lmi_st_find(&ld->files[shard_of[k]], wm->keys[k]))
            st = lmi_fail(e, LM_ERR_MISSING, "tensor %.200s is listed in %s but absent from %s",
                          wm->keys[k], index, ld->file_names[shard_of[k]]);
    }
    lmi_free(shard_of);
    if (st == LM_OK) {
        *where_buf = index;
        index = NULL;
    }
done:
    lmi_json_free(idx);
    lmi_free(single);
    lmi_free(index);
    return st;
}

static void close_files(lmi_loader *ld)
{
    for (size_t k = 0; k < ld->n_files; k++) {
        lmi_st_close(&ld->files[k]);
        if (ld->file_names)
            lmi_free(ld->file_names[k]);
    }
    lmi_free(ld->files);
    lmi_free(ld->file_names);
    lmi_free(ld->in_place);
    ld->files = NULL;
    ld->n_files = 0;
}

/* The tensors every model has, then each layer's, in the names of the
 * open format; dims and flags from the configuration. */
static lm_status load_tensors(lmi_loader *ld, const lmi_cfg *c_in, const tensor_names *tn)
{
    lm_model *m = ld->m;
    lmi_err *e = ld->e;
    lmi_cfg c = *c_in;
    lm_status st;
    lmi_dims *d = &m->dims;
    *d = c.d;
    const char *emb_name = NULL;
    found et;
    bool present = false;
    for (int k = 0; k < 2 && !present && tn->embed[k]; k++) {
        emb_name = tn->embed[k];
        if ((st = locate(ld, emb_name, &et, &present)))
            return st;
    }
    if (!present) {
        if (tn->embed[1])
            return lmi_fail(e, LM_ERR_MISSING, "tensor %s (or %s) is missing from %s",
                            tn->embed[0], tn->embed[1], ld->where);
        return lmi_fail(e, LM_ERR_MISSING, "tensor %s is missing from %s", tn->embed[0],
                        ld->where);
    }
    int64_t rows = et.ndim == 2 ? et.shape[0] : 0;
    if (c.vocab_expected > 0)
        rows = c.vocab_expected;
    if (rows < 1)
        rows = 1;
    d->vocab = rows;
    m->dtype = et.type == LMI_W_F16 ? LM_DTYPE_F16 : et.type == LMI_W_BF16 ? LM_DTYPE_BF16
                                                                            : LM_DTYPE_F32;

    ld->fnv = FNV_OFFSET;
    const int64_t dims_hashed[] = {d->arch,    d->d_model,  d->d_inner, d->d_state,
                                   d->dt_rank, d->d_conv,   d->n_layer, d->vocab,
                                   d->n_heads, d->head_dim, d->n_groups};
    for (size_t k = 0; k < sizeof dims_hashed / sizeof dims_hashed[0]; k++)
        ld->fnv = fnv_i64(ld->fnv, dims_hashed[k]);
    if (d->bcdt_rms_eps > 0.0) { /* Falcon-Mamba; other models keep their fingerprints */
        int64_t bits;
        memcpy(&bits, &d->bcdt_rms_eps, sizeof bits);
        ld->fnv = fnv_i64(ld->fnv, bits);
    }

    int64_t s_vd[2] = {d->vocab, d->d_model}, s_d[1] = {d->d_model};
    /* The embedding is read a row at a time through lmi_weight_convert and,
     * tied, is the lm_head: any type, Q8_0 included. */
    if ((st = lmi_take(ld, emb_name, 2, s_vd, LMI_TAKE_REQUIRED | LMI_TAKE_LINEAR, &m->embed,
                       NULL)))
        return st;
    lmi_stored rnorm;
    if ((st = lmi_take(ld, tn->norm_f, 1, s_d, LMI_TAKE_REQUIRED, &m->norm_f, &rnorm)))
        return st;
    /* transformers: tie_word_embeddings means lm_head *is* the embedding,
     * whatever a stored lm_head.weight holds; an absent head is tied too
     * (GGUF: the converter drops output.weight when it equals the
     * embedding). */
    if (!d->tied) {
        if ((st = lmi_take(ld, tn->lm_head, 2, s_vd, LMI_TAKE_LINEAR, &m->lm_head, NULL)))
            return st;
        if (!m->lm_head.data)
            d->tied = true;
    }
    if (d->tied)
        m->lm_head = m->embed;

    resolve_flag(ld, &c.use_bias, tn->in_bias0);
    resolve_flag(ld, &c.use_conv_bias, tn->conv_bias0);
    d->use_bias = c.use_bias == 1;
    d->use_conv_bias = c.use_conv_bias == 1;

    m->layers = lmi_alloc((size_t)d->n_layer, sizeof *m->layers);
    if (!m->layers)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < d->n_layer; i++)
        if ((st = load_layer(ld, &c, tn, i)))
            return st;
    ld->fnv = fnv_stored(ld->fnv, &rnorm);
    m->fingerprint = ld->fnv;
    return LM_OK;
}

static lm_status load_weights(lmi_loader *ld, const lmi_cfg *c, const char *dir)
{
    lm_model *m = ld->m;
    char *where = NULL;
    lm_status st = open_files(ld, dir, &where);
    if (st != LM_OK)
        return st;
    /* `where` names the file in messages; keep only the base name. */
    const char *slash = strrchr(where, '/');
    char wbuf[256];
    snprintf(wbuf, sizeof wbuf, "%s", slash ? slash + 1 : where);
    lmi_free(where);
    ld->where = wbuf;

    m->maps = lmi_alloc(ld->n_files, sizeof *m->maps);
    if (!m->maps)
        return lmi_fail(ld->e, LM_ERR_NO_MEMORY, "out of memory");
    if ((st = load_tensors(ld, c, &hf_names)))
        return st;
    /* Keep the mappings that tensors point into; release the others. */
    for (size_t k = 0; k < ld->n_files; k++) {
        if (!ld->in_place[k])
            continue;
        m->maps[m->n_maps++] = ld->files[k].map;
        ld->files[k].map.addr = NULL;
    }
    return LM_OK;
}

/* ---- GGUF ---------------------------------------------------------------------- */

lm_status lmi_gguf_cfg_int(const lmi_cfg *c, const lmi_gguf_file *g, const char *arch,
                           const char *key, int64_t dflt, int64_t lo, int64_t hi, int64_t *out,
                           lmi_err *e)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (!lmi_gguf_find_kv(g, full)) {
        if (dflt < 0)
            return lmi_fail(e, LM_ERR_MISSING, "%s has no metadata key %s", c->path, full);
        *out = dflt;
        return LM_OK;
    }
    uint64_t v = 0;
    lmi_err ge = {{0}};
    lm_status st = lmi_gguf_get_uint(g, full, &v, &ge);
    if (st != LM_OK)
        return lmi_fail(e, st, "%s: %s", c->path, ge.msg);
    if (v < (uint64_t)lo || v > (uint64_t)hi)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: %s = %llu is outside [%lld, %lld]", c->path,
                        full, (unsigned long long)v, (long long)lo, (long long)hi);
    *out = (int64_t)v;
    return LM_OK;
}

/* An F32 value as the decimal it most likely was: the converter wrote the
 * config's epsilon (1e-5, a double) as float32; the shortest decimal that
 * rounds to the same float gives back the double, so the RMSNorm sees the
 * same epsilon as from config.json. */
static double shortest_decimal(float f)
{
    char buf[48];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double v = strtod(buf, NULL);
        if ((float)v == f)
            return v;
    }
    return f;
}

/* general.architecture picks the row; the keys every architecture shares,
 * then the row's own, then its derived dimensions. */
static lm_status gguf_config(const lmi_gguf_file *g, lmi_cfg *c, lmi_err *e)
{
    memset(&c->d, 0, sizeof c->d);
    c->use_bias = c->use_conv_bias = -1; /* from layer 0's tensors */
    c->vocab_expected = 0;
    lmi_err ge = {{0}};
    lmi_gguf_str an;
    lm_status st = lmi_gguf_get_str(g, "general.architecture", &an, &ge);
    if (st != LM_OK)
        return lmi_fail(e, st, "%s: %s", c->path, ge.msg);
    const lmi_arch *a = NULL;
    for (size_t k = 0; k < N_ROWS(arch_table) && !a; k++) {
        const char *ga = arch_table[k]->gguf_arch;
        if (ga && strlen(ga) == an.len && memcmp(ga, an.p, an.len) == 0)
            a = arch_table[k];
    }
    if (!a)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "%s: general.architecture \"%.*s\" is not supported (only \"mamba\" and "
                        "\"mamba2\")",
                        c->path, (int)(an.len > 64 ? 64 : an.len), an.p);
    lmi_dims *d = &c->d;
    d->arch = a->arch;
    const char *arch = a->gguf_arch;
    if ((st = lmi_gguf_cfg_int(c, g, arch, "embedding_length", -1, 1, 1 << 20, &d->d_model, e)) ||
        (st = lmi_gguf_cfg_int(c, g, arch, "block_count", -1, 1, 4096, &d->n_layer, e)) ||
        (st = lmi_gguf_cfg_int(c, g, arch, "ssm.conv_kernel", -1, 1, 64, &d->d_conv, e)) ||
        (st = lmi_gguf_cfg_int(c, g, arch, "ssm.inner_size", -1, 1, 1 << 22, &d->d_inner, e)) ||
        (st = lmi_gguf_cfg_int(c, g, arch, "ssm.state_size", -1, 1, 4096, &d->d_state, e)))
        return st;
    char key[160];
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    const lmi_gguf_kv *ek = lmi_gguf_find_kv(g, key);
    if (!ek)
        return lmi_fail(e, LM_ERR_MISSING, "%s has no metadata key %s", c->path, key);
    if ((st = lmi_gguf_get_float(g, key, &d->eps, &ge)))
        return lmi_fail(e, st, "%s: %s", c->path, ge.msg);
    if (ek->type == LMI_GGUF_F32)
        d->eps = shortest_decimal((float)d->eps);
    d->tied = false; /* decided by output.weight */
    /* The vocabulary is the token list's length; the embedding must have
     * that many rows (llama.cpp's rule). */
    if (lmi_gguf_find_kv(g, "tokenizer.ggml.tokens")) {
        uint64_t n = 0;
        const uint8_t *first;
        if ((st = lmi_gguf_get_arr(g, "tokenizer.ggml.tokens", LMI_GGUF_STRING, &n, &first, &ge)))
            return lmi_fail(e, st, "%s: %s", c->path, ge.msg);
        if (n < 1 || n > INT32_MAX)
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: tokenizer.ggml.tokens lists %llu tokens",
                            c->path, (unsigned long long)n);
        c->vocab_expected = (int64_t)n;
    }
    if ((st = a->gguf_dims(c, g, arch, e)))
        return st;
    if (!(d->eps > 0 && d->eps < 1))
        return lmi_fail(e, LM_ERR_FORMAT, "%s: layer norm epsilon %g is not in (0, 1)", c->path,
                        d->eps);
    return a->finish(c, e);
}

lm_status lmi_model_from_gguf(lmi_gguf_file *g, const char *where, lm_model **out, lmi_err *e)
{
    if (out)
        *out = NULL;
    if (!g || !out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lmi_model_from_gguf: NULL argument");
    const char *slash = where ? strrchr(where, '/') : NULL;
    char wbuf[256];
    snprintf(wbuf, sizeof wbuf, "%s", slash ? slash + 1 : where ? where : "GGUF file");
    lmi_cfg c;
    memset(&c, 0, sizeof c);
    c.path = wbuf;
    lm_status st = gguf_config(g, &c, e);
    if (st != LM_OK)
        return st;
    lm_model *m = lmi_alloc(1, sizeof *m);
    if (!m)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    lmi_loader ld = {.m = m, .e = e, .gguf = g, .where = wbuf};
    m->maps = lmi_alloc(1, sizeof *m->maps);
    st = m->maps ? load_tensors(&ld, &c, &gguf_names)
                 : lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    if (st != LM_OK) {
        lm_model_free(m);
        return st;
    }
    /* The model keeps the mapping when a weight points into it. */
    if (ld.gguf_in_place && g->map.addr) {
        m->maps[m->n_maps++] = g->map;
        g->map.addr = NULL;
    }
    *out = m;
    return LM_OK;
}

static lm_status read_gguf(const char *path, lm_model **out, lmi_err *e)
{
    lmi_gguf_file g;
    lm_status st = lmi_gguf_open(path, &g, e);
    if (st != LM_OK)
        return st;
    st = lmi_model_from_gguf(&g, path, out, e);
    lmi_gguf_close(&g);
    return st;
}

/* ---- load-time weight formats ---------------------------------------------- */

/* The stored bytes of w are not read again: an owned copy is freed; pages
 * of the mapping that lie wholly inside the tensor are dropped from the
 * process (MADV_DONTNEED: a read-only private file mapping would refault
 * them from the file, but nothing reads them). */
static void release_stored(lm_model *m, const lmi_weight *w)
{
    for (size_t k = 0; k < m->n_owned; k++)
        if (m->owned[k] == w->data) {
            lmi_free(m->owned[k]);
            m->owned[k] = NULL;
            return;
        }
    const uintptr_t lo = (uintptr_t)w->data;
    const uintptr_t hi = lo + (uintptr_t)w->rows * lmi_weight_row_bytes(w);
    const long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    for (size_t k = 0; k < m->n_maps; k++) {
        const uintptr_t a = (uintptr_t)m->maps[k].addr;
        if (!m->maps[k].addr || lo < a || hi > a + m->maps[k].size) continue;
        const uintptr_t p0 = (lo + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
        const uintptr_t p1 = hi / (uintptr_t)pg * (uintptr_t)pg;
        if (p1 > p0) (void)madvise((void *)p0, p1 - p0, MADV_DONTNEED); /* advice only */
        return;
    }
}

/* w -> Q8_0 blocks owned by the model (cols a multiple of 32; others keep
 * their stored type). */
static lm_status to_q8_0(lm_model *m, lmi_weight *w, const char *name, lmi_err *e)
{
    if (!w->data || w->type == LMI_W_Q8_0 || w->cols <= 0 || w->cols % LMI_Q8_0_BLOCK != 0)
        return LM_OK;
    const lmi_weight q = {NULL, LMI_W_Q8_0, w->rows, w->cols};
    void *buf = lmi_alloc_raw((size_t)w->rows, lmi_weight_row_bytes(&q));
    if (!buf) return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory quantising %s to Q8_0", name);
    lm_status st = lmi_weight_quantize_q8_0(w, buf, name, e);
    if (st != LM_OK) {
        lmi_free(buf);
        return st;
    }
    if ((st = own(m, buf, e)) != LM_OK) return st;
    release_stored(m, w);
    w->data = buf;
    w->type = LMI_W_Q8_0;
    return LM_OK;
}

lm_status lmi_model_set_weights(lm_model *m, lm_weight_format f, lmi_err *e)
{
    if (f == LM_WEIGHTS_AS_STORED) return LM_OK;
    if (f != LM_WEIGHTS_Q8_0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "unknown weight format %d", (int)f);
    char name[96];
    for (int64_t l = 0; l < m->dims.n_layer; l++) {
        lmi_layer *L = &m->layers[l];
        const lmi_mixer_ops *mx = lmi_mixer_find(L->kind);
        if (!mx || !mx->linears) continue;
        lmi_weight *w[LMI_MAX_LINEARS];
        const char *nm[LMI_MAX_LINEARS];
        const size_t n = mx->linears(L, w, nm);
        for (size_t k = 0; k < n; k++) {
            snprintf(name, sizeof name, "layer %lld %s", (long long)l, nm[k]);
            lm_status st = to_q8_0(m, w[k], name, e);
            if (st != LM_OK) return st;
        }
    }
    /* The embedding stays as stored: a token reads one row of it, so 8
     * bits save no time there, and it is the model's input, every layer
     * sees its error.  Tied, it is the lm_head too and keeps its type with
     * it.  (On the bundled model, 256 rows, quantising it as well moved
     * perplexity by under 0.001%: README, "8-bit weights".) */
    if (m->lm_head.data && m->lm_head.data != m->embed.data) {
        lm_status st = to_q8_0(m, &m->lm_head, "lm_head", e);
        if (st != LM_OK) return st;
    }
    m->weights = f;
    return LM_OK;
}

/* ---- the public entry points ------------------------------------------------- */

static lm_status select_backend(lm_model *m, lm_backend want, lmi_err *e)
{
    /* Load the CUDA module only when CUDA may be chosen: an explicit CPU
     * model never maps cudart or cuBLAS. */
    if (want != LM_BACKEND_CPU) {
        lmi_cuda_lib cl;
        lmi_err why = {{0}};
        if (lmi_cuda_open(&cl, &why) == LM_OK) {
            m->backend = LM_BACKEND_CUDA;
            m->cuda_module = cl.handle; /* this model's reference, closed in lm_model_free */
            m->vt = cl.mod->vt;
            return LM_OK;
        }
        if (want == LM_BACKEND_CUDA) {
            if (e)
                *e = why;
            return LM_ERR_BACKEND_UNAVAILABLE;
        }
        lmi_log(m->log_fn, m->log_user, m->log_level, LM_LOG_INFO, "backend auto: cpu (%s)",
                why.msg);
    }
    m->backend = LM_BACKEND_CPU;
    m->vt = &lmi_cpu_backend;
    return LM_OK;
}

lm_status lmi_model_read(const char *dir, lm_model **out, lmi_err *e)
{
    if (out)
        *out = NULL;
    if (!dir || !out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lm_model_load: NULL argument");
    struct stat sb;
    char eb[128];
    if (stat(dir, &sb) != 0) {
        int err = errno;
        return lmi_fail(e, err == ENOENT ? LM_ERR_MISSING : LM_ERR_IO, "%s: %s", dir,
                        strerror_r(err, eb, sizeof eb));
    }
    if (S_ISREG(sb.st_mode) && lmi_gguf_probe(dir))
        return read_gguf(dir, out, e);
    if (!S_ISDIR(sb.st_mode))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%s is neither a model directory nor a GGUF file",
                        dir);

    lmi_cfg c;
    memset(&c, 0, sizeof c);
    char *cpath = path_join(dir, "config.json");
    if (!cpath)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    c.path = cpath;
    lmi_json *cj = NULL;
    lm_status st = read_json_file(cpath, &cj, e);
    if (st == LM_OK)
        st = parse_config(&c, cj, e);
    lmi_json_free(cj);
    lmi_free(cpath);
    c.path = NULL;
    if (st != LM_OK)
        return st;

    lm_model *m = lmi_alloc(1, sizeof *m);
    if (!m)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    lmi_loader ld = {.m = m, .e = e};
    st = load_weights(&ld, &c, dir);
    close_files(&ld);
    if (st != LM_OK) {
        lm_model_free(m);
        return st;
    }
    *out = m;
    return LM_OK;
}

static lm_status load(const char *dir, const lm_model_params *params, lm_model **out, lmi_err *e)
{
    if (!dir || !out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lm_model_load: NULL argument");
    lm_model_params p;
    lm_model_params_init(&p);
    if (params) {
        if (params->struct_size < sizeof(uint32_t))
            return lmi_fail(
                e, LM_ERR_INVALID_ARGUMENT,
                "lm_model_load: params->struct_size is not set (use lm_model_params_init)");
        size_t n = params->struct_size < sizeof p ? params->struct_size : sizeof p;
        memcpy(&p, params, n);
    }
    if ((int)p.backend < LM_BACKEND_AUTO || (int)p.backend > LM_BACKEND_CUDA)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lm_model_load: unknown backend %d",
                        (int)p.backend);
    if (p.n_threads < 0 || p.device < 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "lm_model_load: n_threads and device must be >= 0");
    if ((int)p.log_level < LM_LOG_ERROR || (int)p.log_level > LM_LOG_DEBUG)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lm_model_load: unknown log level %d",
                        (int)p.log_level);
    if ((int)p.weights < LM_WEIGHTS_AS_STORED || (int)p.weights > LM_WEIGHTS_Q8_0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "lm_model_load: unknown weight format %d (LM_WEIGHTS_AS_STORED = 0 or "
                        "LM_WEIGHTS_Q8_0 = 1)",
                        (int)p.weights);

    lm_model *m = NULL;
    lm_status st = lmi_model_read(dir, &m, e);
    if (st != LM_OK)
        return st;
    if ((st = lmi_model_set_weights(m, p.weights, e)) != LM_OK) {
        lm_model_free(m);
        return st;
    }
    m->n_threads = p.n_threads;
    if (m->n_threads == 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        m->n_threads = nc > 0 && nc < INT32_MAX ? (int32_t)nc : 1;
    }
    m->device = p.device;
    m->log_fn = p.log_fn;
    m->log_user = p.log_user;
    m->log_level = p.log_level;
    st = select_backend(m, p.backend, e);
    if (st == LM_OK && m->vt->model_init)
        st = m->vt->model_init(m, e);
    if (st != LM_OK) {
        lm_model_free(m);
        return st;
    }
    lmi_log(m->log_fn, m->log_user, m->log_level, LM_LOG_INFO,
            "loaded %s: %s, d_model %lld, d_inner %lld, d_state %lld, %lld layers, vocab "
            "%lld, %lld parameters, %s weights%s, %s backend",
            dir, lmi_arch_find(m->dims.arch)->name, (long long)m->dims.d_model,
            (long long)m->dims.d_inner, (long long)m->dims.d_state, (long long)m->dims.n_layer,
            (long long)m->dims.vocab, (long long)m->n_params,
            m->dtype == LM_DTYPE_F32   ? "F32"
            : m->dtype == LM_DTYPE_F16 ? "F16"
                                       : "BF16",
            m->weights == LM_WEIGHTS_Q8_0 ? " (linear layers Q8_0)" : "",
            lm_backend_name(m->backend));
    *out = m;
    return LM_OK;
}

lm_status lm_model_load(const char *dir, const lm_model_params *params, lm_model **out, char *err,
                        size_t err_cap)
{
    lmi_err e = {{0}};
    if (out)
        *out = NULL;
    lm_status st = load(dir, params, out, &e);
    lmi_err_copy(st == LM_OK ? NULL : &e, err, err_cap);
    if (st != LM_OK && params && params->struct_size >= sizeof(uint32_t)) {
        /* Failures are logged through the caller's callback as well. */
        lm_model_params p;
        lm_model_params_init(&p);
        size_t n = params->struct_size < sizeof p ? params->struct_size : sizeof p;
        memcpy(&p, params, n);
        lmi_log(p.log_fn, p.log_user, p.log_level, LM_LOG_ERROR, "lm_model_load: %s", e.msg);
    }
    return st;
}

void lm_model_free(lm_model *m)
{
    if (!m)
        return;
    /* Backends' model_free must accept a model whose model_init failed or
     * never ran (bk NULL). */
    if (m->vt && m->vt->model_free)
        m->vt->model_free(m);
    if (m->cuda_module) /* after model_free: that code lives in the module */
        dlclose(m->cuda_module);
    for (size_t k = 0; k < m->n_owned; k++)
        lmi_free(m->owned[k]);
    lmi_free(m->owned);
    for (size_t k = 0; k < m->n_maps; k++)
        if (m->maps[k].addr)
            munmap(m->maps[k].addr, m->maps[k].size);
    lmi_free(m->maps);
    lmi_free(m->layers);
    lmi_free(m);
}

lm_status lm_model_get_info(const lm_model *m, lm_model_info *info)
{
    if (!m || !info)
        return LM_ERR_INVALID_ARGUMENT;
    if (info->struct_size < offsetof(lm_model_info, arch) + sizeof info->arch)
        return LM_ERR_INVALID_ARGUMENT;
    lm_model_info full;
    memset(&full, 0, sizeof full);
    full.struct_size = info->struct_size;
    full.arch = m->dims.arch;
    full.dtype = m->dtype;
    full.backend = m->backend;
    full.d_model = m->dims.d_model;
    full.d_inner = m->dims.d_inner;
    full.d_state = m->dims.d_state;
    full.d_conv = m->dims.d_conv;
    full.dt_rank = m->dims.dt_rank;
    full.n_layer = m->dims.n_layer;
    full.vocab_size = m->dims.vocab;
    full.n_heads = m->dims.n_heads;
    full.head_dim = m->dims.head_dim;
    full.n_groups = m->dims.n_groups;
    full.n_channels = m->dims.n_channels;
    full.n_params = m->n_params;
    full.tied_embeddings = m->dims.tied ? 1 : 0;
    full.n_threads = m->n_threads;
    full.fingerprint = m->fingerprint;
    full.weights = m->weights;
    size_t n = info->struct_size < sizeof full ? info->struct_size : sizeof full;
    memcpy(info, &full, n);
    return LM_OK;
}

/* ---- weights as the model holds them ----------------------------------------- */

/* Entry `index` of the model's weight list: embedding, final norm, lm_head,
 * then per layer its norm and its mixer's weights. */
static bool weight_at(const lm_model *m, size_t index, lm_weight_info *o, const lmi_weight **wp)
{
    const lmi_weight *top[3] = {&m->embed, &m->norm_f, &m->lm_head};
    static const char *const top_names[3] = {"embedding", "norm_f", "lm_head"};
    static const bool top_linear[3] = {true, false, true};
    if (index < 3) {
        *wp = top[index];
        o->name = top_names[index];
        o->layer = -1;
        o->linear = top_linear[index];
        o->shared = index == 2 && m->lm_head.data == m->embed.data;
        return true;
    }
    size_t k = index - 3;
    for (int64_t l = 0; m->layers && l < m->dims.n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        if (k == 0) {
            *wp = &L->norm_w;
            o->name = "norm";
            o->layer = l;
            o->linear = 0;
            o->shared = 0;
            return true;
        }
        k--;
        const lmi_mixer_ops *mx = lmi_mixer_find(L->kind);
        if (!mx || !mx->weights) continue;
        const lmi_weight *w[LMI_MAX_MIXER_WEIGHTS];
        const char *nm[LMI_MAX_MIXER_WEIGHTS];
        bool lin[LMI_MAX_MIXER_WEIGHTS];
        const size_t n = mx->weights(L, w, nm, lin);
        if (k < n) {
            *wp = w[k];
            o->name = nm[k];
            o->layer = l;
            o->linear = lin[k];
            o->shared = 0;
            return true;
        }
        k -= n;
    }
    return false;
}

lm_status lm_model_weight_count(const lm_model *model, size_t *count, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    if (count) *count = 0;
    if (!model || !count) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "lm_model_weight_count: %s is NULL",
                      model ? "count" : "model");
    } else {
        lm_weight_info tmp;
        const lmi_weight *w;
        size_t n = 0;
        while (weight_at(model, n, &tmp, &w)) n++;
        *count = n;
    }
    lmi_err_copy(st == LM_OK ? NULL : &e, err, err_cap);
    return st;
}

lm_status lm_model_weight_info(const lm_model *model, size_t index, lm_weight_info *info,
                               char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    lm_weight_info full;
    memset(&full, 0, sizeof full);
    const lmi_weight *w = NULL;
    if (!model || !info)
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "lm_model_weight_info: %s is NULL",
                      model ? "info" : "model");
    else if (info->struct_size < offsetof(lm_weight_info, name) + sizeof info->name)
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                      "lm_model_weight_info: info->struct_size %u is too small (set it to "
                      "sizeof(lm_weight_info))",
                      (unsigned)info->struct_size);
    else if (!weight_at(model, index, &full, &w))
        st = lmi_fail(&e, LM_ERR_OUT_OF_RANGE,
                      "lm_model_weight_info: index %zu is past the model's weights "
                      "(lm_model_weight_count)",
                      index);
    if (st == LM_OK) {
        full.struct_size = info->struct_size;
        full.type = w->type == LMI_W_F16    ? LM_WTYPE_F16
                    : w->type == LMI_W_BF16 ? LM_WTYPE_BF16
                    : w->type == LMI_W_Q8_0 ? LM_WTYPE_Q8_0
                                            : LM_WTYPE_F32;
        full.rows = w->rows;
        full.cols = w->cols;
        full.bytes = (uint64_t)w->rows * (uint64_t)lmi_weight_row_bytes(w);
        const uintptr_t p = (uintptr_t)w->data;
        full.mapped = 0;
        for (size_t k = 0; k < model->n_maps; k++) {
            const uintptr_t a = (uintptr_t)model->maps[k].addr;
            if (model->maps[k].addr && p >= a && p < a + model->maps[k].size) full.mapped = 1;
        }
        size_t n = info->struct_size < sizeof full ? info->struct_size : sizeof full;
        memcpy(info, &full, n);
    }
    lmi_err_copy(st == LM_OK ? NULL : &e, err, err_cap);
    return st;
}

const char *lm_weight_type_name(lm_weight_type type)
{
    switch (type) {
    case LM_WTYPE_F32: return "F32";
    case LM_WTYPE_F16: return "F16";
    case LM_WTYPE_BF16: return "BF16";
    case LM_WTYPE_Q8_0: return "Q8_0";
    }
    return "unknown";
}
