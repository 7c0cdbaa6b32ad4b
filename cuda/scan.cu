/*
 * scan.cu - Mamba-1 selective scan, parallel along the sequence.
 *
 * Mapping: one thread per (channel e, chunk of `chunk` tokens, batch row);
 * a block holds 128 consecutive channels of one chunk, so the loads of
 * u, dt, z and the store of y are coalesced rows, and B/C of the chunk are
 * staged once in shared memory and read back as broadcasts.  Each thread
 * keeps its NS (>= N, padded with A = 0, B = C = 0) states in registers.
 *
 *   phase 1  (chunk_kernel<false>): scan each chunk from h = 0; store the
 *            chunk's end state H_c[n] and its Δ sum S_c (the chunk's decay
 *            is exp(A[n] * S_c), the product of its per-token decays);
 *   phase 2  (carry_kernel): per (e, n), walk the chunks in order:
 *            start_c = h; h = exp(A[n] S_c) h + H_c;  h is the final state;
 *   phase 3  (chunk_kernel<true>): rescan each chunk from start_c, write y.
 * One chunk (L <= chunk, every decode step) runs phase 3 alone, reading
 * and writing the state in place.
 * Packed sequences of different lengths (varlen, lmc_scan_args.n_seq):
 * the same phases over the chunks of all of them (a chunk never crosses
 * two), the carry per sequence, each from and into its own state; the
 * single-sequence kernels are the VL = false instances, unchanged.
 *
 * Phase 1 and 3 both evaluate exp(Δ A) per (t, e, n): the price of the
 * sequence parallelism (bench/gpu/NOTES.md has the numbers).
 *
 * PyTorch (transformers' slow path) the loop implements:
 *   discrete_A = torch.exp(A[None, :, None, :] * discrete_time_step[:, :, :, None])
 *   deltaB_u = discrete_time_step[:, :, :, None] * B[:, None, :, :].float() * hidden_states[:, :, :, None].float()
 *   ssm_state = discrete_A[:, :, i, :] * ssm_state + deltaB_u[:, :, i, :]
 *   scan_output = torch.matmul(ssm_state.to(dtype), C[:, i, :].unsqueeze(-1))
 *   scan_output = scan_output + (hidden_states * self.D[None, :, None])
 *   scan_output = scan_output * self.act(gate)
 */



#include "scan.cuh"

namespace {

/* Measured on the H100 (E 1536, L 16k, chunk 256): 0.376 ms for N = 16 with 2 of
 * the 16 decays of phase 1 on the FMA pipe, phase 3 all on the SFU and registers
 * capped for 6 blocks/SM (80); development variants in bench/gpu/dev/scan_prev.cu. */
template <typename T, bool VL>
cudaError_t run_t(const ScanP &p, int64_t batch, cudaStream_t st)
{
    switch (pick_ns(p.N)) {
    case 4: return run<T, 4, 0, 0, 1, 1, VL>(p, batch, st);
    case 8: return run<T, 8, 0, 0, 1, 1, VL>(p, batch, st);
    case 16: return run<T, 16, 2, 0, 6, 6, VL>(p, batch, st);
    case 32: return run<T, 32, 0, 0, 1, 1, VL>(p, batch, st);
    default: return run<T, 64, 0, 0, 1, 1, VL>(p, batch, st);
    }
}

} // namespace

extern "C" int lmc_scan_chunk(int64_t batch, int64_t L, int64_t E, int64_t N, int chunk, int n_sm)
{
    const int cmax = max_chunk(pick_ns(N));
    if (chunk > 0) return chunk < cmax ? chunk : cmax;
    if (n_sm <= 0) n_sm = 132;
    /* Resident 128-thread blocks per SM: 6 (N <= 16: 80 registers); pick the
     * chunk (32..128) with the smallest estimated time: whole waves of
     * blocks times the chunk length plus a per-chunk overhead of ~24
     * token-steps (B/C staging, state load and store).  Chunks of 256 are
     * left out: one wave of them measured slower than two of 128 (E 1536,
     * L 16k: 0.389 vs 0.366 ms; E 5120: 1.106 vs 1.074 ms), the model
     * predicting the opposite (the last blocks' tail is not in it). */
    const int64_t eb = ((E + kThreads - 1) / kThreads) * batch;
    const int64_t cap = 6 * (int64_t)n_sm;
    const int cauto = cmax < 128 ? cmax : 128;
    int best = 32;
    int64_t best_cost = INT64_MAX;
    for (int c = 32; c <= cauto; c *= 2) {
        const int64_t blocks = eb * ((L + c - 1) / c);
        const int64_t cost = ((blocks + cap - 1) / cap) * (c + 24);
        if (cost <= best_cost) {
            best_cost = cost;
            best = c;
        }
        if ((L + c - 1) / c <= 1) break;
    }
    return best;
}

extern "C" size_t lmc_scan_scratch_s(int64_t batch, int64_t L, int64_t E, int64_t N, int chunk,
                                     int n_sm)
{
    const int c = lmc_scan_chunk(batch, L, E, N, chunk, n_sm);
    const int64_t nc = (L + c - 1) / c;
    if (nc <= 1) return 0;
    return (size_t)(batch * nc * E + 63) / 64 * 64;
}

extern "C" size_t lmc_scan_scratch_floats(int64_t batch, int64_t L, int64_t E, int64_t N,
                                          int chunk, int n_sm)
{
    const int c = lmc_scan_chunk(batch, L, E, N, chunk, n_sm);
    const int64_t nc = (L + c - 1) / c;
    if (nc <= 1) return 0;
    return lmc_scan_scratch_s(batch, L, E, N, chunk, n_sm) + (size_t)(batch * nc * N * E);
}

extern "C" cudaError_t lmc_scan(const lmc_scan_args *a, cudaStream_t st)
{
    ScanP p;
    if (!scan_params(a, p)) return cudaErrorInvalidValue;
    if (p.ns > 0) /* packed sequences: the VL kernels */
        return a->dtype == LMC_BF16 ? run_t<lmc_bf16, true>(p, 1, st) : run_t<float, true>(p, 1, st);
    return a->dtype == LMC_BF16 ? run_t<lmc_bf16, false>(p, a->batch, st) : run_t<float, false>(p, a->batch, st);
}
