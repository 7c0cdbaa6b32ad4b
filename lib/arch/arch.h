/*
 * arch/arch.h - what an architecture file (lib/arch/<name>.c) provides
 * and what the loader (lib/model_load.c) lends it.
 *
 * An architecture is one row (lmi_arch): how its config.json is
 * recognised, which dimensions it reads, and the layer pattern (the mixer
 * of each layer).  A mixer kind (lmi_mixer_ops, internal.h) reads its own
 * tensors.  The table of rows is in model_load.c; adding an architecture
 * is its file and one row there.  Each row and mixer also says how its
 * model looks in a GGUF file (llama.cpp's metadata keys, tensor names and
 * layouts), next to the Hugging Face form.
 */
#ifndef LMI_ARCH_H
#define LMI_ARCH_H

#include "internal.h"
#include "format/json.h"
#include "format/safetensors.h"
#include "format/gguf.h"

/* Configuration read from config.json; -1 in a tri-state means "absent:
 * decide from the checkpoint". */
typedef struct lmi_cfg {
    lmi_dims d;
    int64_t vocab_expected; /* embedding rows implied by config, 0 = unknown */
    int use_bias;           /* 1, 0 or -1 */
    int use_conv_bias;
    const char *path;       /* for messages */
} lmi_cfg;

/* Readers of one config key with its default (dflt < 0 for lmi_cfg_int:
 * required), range and type checks; messages name c->path and the key. */
lm_status lmi_cfg_int(const lmi_cfg *c, const lmi_json *obj, const char *key, int64_t dflt,
                      int64_t lo, int64_t hi, int64_t *out, lmi_err *e);
lm_status lmi_cfg_bool(const lmi_cfg *c, const lmi_json *obj, const char *key, int dflt, int *out,
                       lmi_err *e);
lm_status lmi_cfg_num(const lmi_cfg *c, const lmi_json *obj, const char *key, double dflt,
                      double *out, lmi_err *e);
/* Integer or "auto" (= ceil(d_model / 16)). */
lm_status lmi_cfg_dt_rank(const lmi_cfg *c, const lmi_json *obj, const char *key, int64_t d_model,
                          int64_t *out, lmi_err *e);
/* d_inner = int(expand * d_model), Python's truncation. */
lm_status lmi_cfg_expand(const lmi_cfg *c, const lmi_json *obj, const char *key, int64_t d_model,
                         int64_t *out, lmi_err *e);
/* [lo, hi] into c->d.dt_limit_lo / hi ((0, +inf) when absent). */
lm_status lmi_cfg_time_limit(lmi_cfg *c, const lmi_json *obj, const char *key, lmi_err *e);
bool lmi_json_str_is(const lmi_json *v, const char *s);

/* The open checkpoint while a model is read: safetensors files, or one
 * GGUF file (gguf not NULL, files unused). */
typedef struct lmi_loader {
    lm_model *m;
    lmi_st_file *files;
    char **file_names;  /* base names, for messages */
    bool *in_place;     /* a tensor points into this file's mapping */
    size_t n_files;
    lmi_gguf_file *gguf;
    bool gguf_in_place;
    const char *where;  /* "model.safetensors", the index or the GGUF file name */
    uint64_t fnv;       /* fingerprint being built */
    lmi_err *e;
} lmi_loader;

/* LMI_TAKE_LINEAR: the tensor is a linear layer's matrix (read through
 * lmi_linear / lmi_weight_convert), so a block type (GGUF Q8_0) is taken
 * as it is stored; without it a block type is LM_ERR_UNSUPPORTED. */
enum { LMI_TAKE_REQUIRED = 1, LMI_TAKE_COPY = 2, LMI_TAKE_F32 = 4, LMI_TAKE_LINEAR = 8 };

/* A tensor as stored in the file, whatever the format: what the
 * fingerprint hashes (tag: the lmi_st_dtype of its element type). */
typedef struct lmi_stored {
    const uint8_t *data;
    size_t nbytes;
    uint8_t tag;
} lmi_stored;

/* Fetches tensor `name` with the given shape (row major, PyTorch order:
 * a GGUF tensor's extents reversed), in its stored type.  Absent and not
 * required: out->data = NULL.  LMI_TAKE_F32: fp32 whatever the stored
 * type; LMI_TAKE_COPY: an owned, writable copy.  *raw (optional): the
 * stored tensor, for the fingerprint (zeroed when absent). */
lm_status lmi_take(lmi_loader *ld, const char *name, int ndim, const int64_t *shape, int flags,
                   lmi_weight *out, lmi_stored *raw);
/* A bias present iff `flag` (the config's use_bias / use_conv_bias; for
 * GGUF, whether layer 0 has that bias). */
lm_status lmi_take_bias(lmi_loader *ld, const char *name, bool flag, const char *field,
                        int64_t n, lmi_weight *out);
/* Adds a stored tensor (tag byte + bytes) to the fingerprint. */
void lmi_loader_hash(lmi_loader *ld, const lmi_stored *t);
/* A vector weight seen as one row of n (GGUF stores some as [n][1] or
 * [groups][n / groups]; the backends read them flat). */
static inline void lmi_weight_flatten(lmi_weight *w)
{
    if (w->data) {
        w->cols = w->rows * w->cols;
        w->rows = 1;
    }
}
lm_status lmi_check_finite(const float *v, size_t n, const char *name, lmi_err *e);
/* A = -exp(A_log), in place on an owned fp32 copy of A_log. */
lm_status lmi_make_A(float *a, size_t n, const char *name, lmi_err *e);

/* One architecture. */
typedef struct lmi_arch {
    lm_arch arch;
    const char *name;               /* in messages */
    const char *model_type;         /* Hugging Face config "model_type" */
    const char *hf_classes[3];      /* "architectures" entries (NULL-padded) */
    const char *ssm_layer;          /* mamba_ssm config: ssm_cfg.layer (NULL: no such form) */
    bool ssm_layer_default;         /* the one meant when ssm_cfg.layer is absent */
    bool hf_tied_default;           /* tie_word_embeddings when absent */
    double default_theta;           /* LongMamba θ when the caller passes 0 */
    /* The mixer dimensions, after the keys every architecture shares:
     * from a Hugging Face config (top level) or from mamba_ssm's ssm_cfg. */
    lm_status (*parse_hf)(lmi_cfg *c, const lmi_json *j, lmi_err *e);
    lm_status (*parse_ssm)(lmi_cfg *c, const lmi_json *ssm_cfg, lmi_err *e);
    /* Derived dimensions (conv_dim, n_channels, ...) and their checks. */
    lm_status (*finish)(lmi_cfg *c, lmi_err *e);
    /* The layer pattern: the mixer of layer i. */
    lmi_mixer_kind (*mixer_of)(const lmi_dims *d, int64_t i);
    /* GGUF: general.architecture, and the mixer dimensions read from the
     * metadata (keys "<gguf_arch>.ssm...."; lmi_gguf_cfg_int) after the keys
     * every architecture shares.  gguf_arch NULL: no GGUF form. */
    const char *gguf_arch;
    lm_status (*gguf_dims)(lmi_cfg *c, const lmi_gguf_file *g, const char *arch, lmi_err *e);
} lmi_arch;

/* GGUF metadata key "<arch>.<key>" as an integer in [lo, hi]; dflt < 0:
 * required (LM_ERR_MISSING naming the key). */
lm_status lmi_gguf_cfg_int(const lmi_cfg *c, const lmi_gguf_file *g, const char *arch,
                           const char *key, int64_t dflt, int64_t lo, int64_t hi, int64_t *out,
                           lmi_err *e);

extern const lmi_arch lmi_arch_mamba1;   /* lib/arch/mamba1.c */
extern const lmi_arch lmi_arch_mamba2;   /* lib/arch/mamba2.c */
extern const lmi_arch lmi_arch_falcon_mamba; /* lib/arch/falcon_mamba.c */

/* The row of an lm_arch value, or NULL. */
const lmi_arch *lmi_arch_find(lm_arch arch);

#endif
