/* tokenizer.c - OWNER: tokenizer helper. Placeholder until it lands. */
#include "internal.h"
lm_status lm_tokenizer_load(const char *path, lm_tokenizer **out, char *err, size_t cap) { (void)path; (void)out; (void)err; (void)cap; return LM_ERR_UNSUPPORTED; }
void lm_tokenizer_free(lm_tokenizer *t) { (void)t; }
int64_t lm_tokenizer_vocab_size(const lm_tokenizer *t) { (void)t; return -1; }
lm_status lm_tokenizer_encode(const lm_tokenizer *t, const char *x, size_t n, int32_t *ids, size_t cap, size_t *nid, char *err, size_t ec)
{ (void)t; (void)x; (void)n; (void)ids; (void)cap; (void)nid; (void)err; (void)ec; return LM_ERR_UNSUPPORTED; }
lm_status lm_tokenizer_decode(const lm_tokenizer *t, const int32_t *ids, size_t n, char *x, size_t cap, size_t *nb, char *err, size_t ec)
{ (void)t; (void)ids; (void)n; (void)x; (void)cap; (void)nb; (void)err; (void)ec; return LM_ERR_UNSUPPORTED; }
