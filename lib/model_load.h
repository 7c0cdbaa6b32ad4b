/*
 * model_load.h - the loader's internal entry point (lib/model_load.c).
 */
#ifndef LMI_MODEL_LOAD_H
#define LMI_MODEL_LOAD_H

#include "internal.h"
#include "format/gguf.h"

/* Reads dir/config.json and the weights into a new model with dims,
 * weights, dtype, n_params and fingerprint filled, but no backend
 * (vt NULL, n_threads 0): lm_model_load is this plus parameters and backend
 * initialisation.  Free with lm_model_free.
 *
 * fingerprint: 64-bit FNV-1a over, in order, the little-endian int64 values
 * arch, d_model, d_inner, d_state, dt_rank, d_conv, n_layer, vocab,
 * n_heads, head_dim, n_groups (Falcon-Mamba: then the bits of its
 * mixer_rms_eps as a binary64, as an int64); then for each layer, for each of A_log, D
 * and the dt bias (Mamba-1 dt_proj.bias, Mamba-2 dt_bias) one byte with the
 * lmi_st_dtype followed by the tensor's stored bytes; then the same for
 * backbone.norm_f.weight.  Re-sharding a checkpoint keeps it; converting
 * its dtype changes it.
 *
 * dir may also be a GGUF file (a regular file named *.gguf or starting
 * with the magic): lmi_model_from_gguf. */
lm_status lmi_model_read(const char *dir, lm_model **out, lmi_err *e);

/* Reads a model from a parsed GGUF file in llama.cpp's conventions
 * (general.architecture "mamba" / "mamba2", <arch>.embedding_length,
 * .block_count, .ssm.*, .attention.layer_norm_rms_epsilon; vocabulary =
 * length of tokenizer.ggml.tokens when present; token_embd, output_norm,
 * output (absent: tied), blk.N.attn_norm and the mixer's blk.N.ssm_*).
 * Weights point into g's image when aligned, and the model then takes
 * g's mapping (g->map.addr becomes NULL); close g afterwards either way.
 * where names the file in messages.  The GGUF fuzz target's entry.
 *
 * fingerprint: as above, the same dims, then per layer ssm_a (A itself,
 * the converter stores -exp(A_log)), ssm_d and ssm_dt.bias, then
 * output_norm.weight, each as one tag byte (the lmi_st_dtype of its
 * element type: F32 0, F16 1, BF16 2) and its stored bytes.  So a GGUF
 * file and the safetensors checkpoint it came from have different
 * fingerprints (A_log vs A, and the converter stores norms as F32). */
lm_status lmi_model_from_gguf(lmi_gguf_file *g, const char *where, lm_model **out, lmi_err *e);
/* Puts the model's weights into format f (lm_model_params.weights):
 * LM_WEIGHTS_Q8_0 quantises every mixer's linears (lmi_mixer_ops.linears)
 * and an untied lm_head whose input size is a multiple of 32 into Q8_0
 * buffers the model owns, and lets go of their stored bytes.  Before the
 * backend's model_init. */
lm_status lmi_model_set_weights(lm_model *m, lm_weight_format f, lmi_err *e);

/* Parses config.json text (Hugging Face or mamba_ssm form) into dims, with
 * the checks lmi_model_read applies before it opens any weights; the
 * config fuzz target's entry point. */
lm_status lmi_config_parse(const char *text, size_t n, lmi_dims *out, lmi_err *e);

#endif
