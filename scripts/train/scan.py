"""Selective scan (Mamba-1, docs/MAMBA.md section 1) for training.

Two implementations of the same function

    delta = softplus(dt + dt_bias)                    (fp32, threshold 20)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t     (fp32 state)
    y_t   = (sum_n h_t[:, n] * C_t[n] + D * u_t) * silu(z_t)

on (batch, time, channel) tensors:

* scan_ref: pure PyTorch, sequential over time, differentiable through
  autograd. The reference for the gradient check and the CPU smoke path.
* SelectiveScanTriton: fused Triton kernels, forward and backward.
  One program = one batch row x BLOCK_E channels; the [BLOCK_E, N] state
  lives in registers and the program walks time sequentially (parallelism
  comes from batch x channel blocks, as in llama.cpp's scan). The forward
  writes the state entering every CHUNK-step chunk (hc); the backward walks
  the chunks in reverse, re-computes the chunk's states from hc into a small
  per-program scratch buffer, then walks the chunk backwards in time carrying
  the adjoint g_t = exp(delta_{t+1} A) g_{t+1} + C_t dy_t.

Backward formulas (per channel e, state n), with s_t = h_t - delta_t B_t u_t
= exp(delta_t A) h_{t-1} (h_{t-1} read back from scratch, so no
cancellation):
    dC_t[n]  = sum_e dys_t[e] h_t[e, n]          dys = dy * silu(z)
    du_t     = delta_t sum_n g B_t + D dys
    ddelta_t = sum_n g (B_t u_t + A s_t)
    dB_t[n]  = sum_e g delta_t u_t
    dA      += g delta_t s_t
    dD      += dys u_t
    dz       = dy (ys + D u) silu'(z)
"""

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except Exception:  # pragma: no cover - CPU-only machines without triton
    HAVE_TRITON = False


def scan_ref(u, dt, A, B, C, D, z, dt_bias):
    """Reference scan. u, dt, z: [b, L, E]; A: [E, N]; B, C: [b, L, N];
    D, dt_bias: [E]. Computes in the promoted dtype of (u, fp32) so it runs
    in float64 when given float64 inputs."""
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = F.softplus(dt.to(ct) + dt_bias.to(ct))
    uu = u.to(ct)
    Bc, Cc = B.to(ct), C.to(ct)
    dA = torch.exp(delta.unsqueeze(-1) * A.to(ct))              # [b, L, E, N]
    dBu = (delta * uu).unsqueeze(-1) * Bc.unsqueeze(2)           # [b, L, E, N]
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=ct, device=u.device)
    ys = []
    for t in range(u.shape[1]):
        h = dA[:, t] * h + dBu[:, t]
        ys.append((h * Cc[:, t].unsqueeze(1)).sum(-1))
    ys = torch.stack(ys, 1)
    y = (ys + D.to(ct) * uu) * F.silu(z.to(ct))
    return y.to(u.dtype)


if HAVE_TRITON:

    @triton.jit
    def _softplus(x):
        return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))

    @triton.jit
    def _scan_fwd_kernel(
        u_ptr, dt_ptr, z_ptr, b_ptr, c_ptr, y_ptr,
        a_ptr, d_ptr, bias_ptr, hc_ptr,
        L, E,
        s_u_b, s_u_t, s_dt_b, s_dt_t, s_z_b, s_z_t,
        s_b_b, s_b_t, s_c_b, s_c_t, s_y_b, s_y_t,
        s_hc_b, s_hc_c,
        N: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr,
        SAVE: tl.constexpr, PF: tl.constexpr,
    ):
        # PF: issue the loads of step t+1 before the math of step t, so that
        # their latency overlaps the arithmetic (the loop is latency bound).
        pid_b = tl.program_id(0).to(tl.int64)
        pid_e = tl.program_id(1)
        e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        em = e < E
        n = tl.arange(0, N)
        en_off = e[:, None] * N + n[None, :]
        a2 = tl.load(a_ptr + en_off, mask=em[:, None], other=0.0) * 1.4426950408889634
        dv = tl.load(d_ptr + e, mask=em, other=0.0)
        bias = tl.load(bias_ptr + e, mask=em, other=0.0)
        u_base = u_ptr + pid_b * s_u_b + e
        dt_base = dt_ptr + pid_b * s_dt_b + e
        z_base = z_ptr + pid_b * s_z_b + e
        y_base = y_ptr + pid_b * s_y_b + e
        b_base = b_ptr + pid_b * s_b_b + n
        c_base = c_ptr + pid_b * s_c_b + n
        h = tl.zeros([BLOCK_E, N], dtype=tl.float32)
        n_chunks = tl.cdiv(L, CHUNK)
        if PF:
            u_n = tl.load(u_base, mask=em, other=0.0)
            dt_n = tl.load(dt_base, mask=em, other=0.0)
            z_n = tl.load(z_base, mask=em, other=0.0)
            b_n = tl.load(b_base)
            c_n = tl.load(c_base)
        for ci in range(0, n_chunks):
            if SAVE:
                tl.store(hc_ptr + pid_b * s_hc_b + ci * s_hc_c + en_off, h, mask=em[:, None])
            t0 = ci * CHUNK
            t1 = tl.minimum(t0 + CHUNK, L)
            for t in range(t0, t1):
                if PF:
                    u = u_n.to(tl.float32)
                    dtr = dt_n.to(tl.float32)
                    zz = z_n.to(tl.float32)
                    bb = b_n.to(tl.float32)
                    cc = c_n.to(tl.float32)
                    tn = tl.minimum(t + 1, L - 1)
                    u_n = tl.load(u_base + tn * s_u_t, mask=em, other=0.0)
                    dt_n = tl.load(dt_base + tn * s_dt_t, mask=em, other=0.0)
                    z_n = tl.load(z_base + tn * s_z_t, mask=em, other=0.0)
                    b_n = tl.load(b_base + tn * s_b_t)
                    c_n = tl.load(c_base + tn * s_c_t)
                else:
                    u = tl.load(u_base + t * s_u_t, mask=em, other=0.0).to(tl.float32)
                    dtr = tl.load(dt_base + t * s_dt_t, mask=em, other=0.0).to(tl.float32)
                    zz = tl.load(z_base + t * s_z_t, mask=em, other=0.0).to(tl.float32)
                    bb = tl.load(b_base + t * s_b_t).to(tl.float32)
                    cc = tl.load(c_base + t * s_c_t).to(tl.float32)
                delta = _softplus(dtr + bias)
                h = tl.exp2(delta[:, None] * a2) * h + (delta * u)[:, None] * bb[None, :]
                ys = tl.sum(h * cc[None, :], axis=1)
                out = (ys + dv * u) * (zz / (1.0 + tl.exp(-zz)))
                tl.store(y_base + t * s_y_t, out.to(y_ptr.dtype.element_ty), mask=em)

    @triton.jit
    def _scan_bwd_kernel(
        u_ptr, dt_ptr, z_ptr, b_ptr, c_ptr, dy_ptr,
        a_ptr, d_ptr, bias_ptr, hc_ptr, scr_ptr,
        du_ptr, ddt_ptr, dz_ptr, db_ptr, dc_ptr, da_ptr, dd_ptr, dbias_ptr,
        L, E,
        s_u_b, s_u_t, s_dt_b, s_dt_t, s_z_b, s_z_t,
        s_b_b, s_b_t, s_c_b, s_c_t, s_dy_b, s_dy_t,
        s_hc_b, s_hc_c,
        N: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr, PF: tl.constexpr,
    ):
        # Outputs du/ddt/dz are [b, L, E] contiguous; db/dc are partial sums
        # [b, n_eblk, L, N]; da [b, E, N]; dd, dbias [b, E] (summed on the host).
        pid_b = tl.program_id(0).to(tl.int64)
        pid_e = tl.program_id(1)
        n_eblk = tl.num_programs(1)
        e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        em = e < E
        n = tl.arange(0, N)
        en_off = e[:, None] * N + n[None, :]
        a = tl.load(a_ptr + en_off, mask=em[:, None], other=0.0)
        a2 = a * 1.4426950408889634
        dv = tl.load(d_ptr + e, mask=em, other=0.0)
        bias = tl.load(bias_ptr + e, mask=em, other=0.0)
        u_base = u_ptr + pid_b * s_u_b + e
        dt_base = dt_ptr + pid_b * s_dt_b + e
        z_base = z_ptr + pid_b * s_z_b + e
        dy_base = dy_ptr + pid_b * s_dy_b + e
        b_base = b_ptr + pid_b * s_b_b + n
        c_base = c_ptr + pid_b * s_c_b + n
        g_base = pid_b * L * E + e          # du / ddt / dz, contiguous [b, L, E]
        p_base = (pid_b * n_eblk + pid_e) * L * N + n   # db / dc partials
        prog = pid_b * n_eblk + pid_e
        scr = scr_ptr + prog * (CHUNK * BLOCK_E * N) + tl.arange(0, BLOCK_E)[:, None] * N + n[None, :]

        g_carry = tl.zeros([BLOCK_E, N], dtype=tl.float32)
        da_acc = tl.zeros([BLOCK_E, N], dtype=tl.float32)
        dd_acc = tl.zeros([BLOCK_E], dtype=tl.float32)
        dbias_acc = tl.zeros([BLOCK_E], dtype=tl.float32)
        n_chunks = tl.cdiv(L, CHUNK)
        for cr in range(0, n_chunks):
            ci = n_chunks - 1 - cr
            t0 = ci * CHUNK
            t1 = tl.minimum(t0 + CHUNK, L)
            h0 = tl.load(hc_ptr + pid_b * s_hc_b + ci * s_hc_c + en_off, mask=em[:, None], other=0.0)
            h = h0
            # re-compute the chunk's states into scratch
            if PF:
                u_n = tl.load(u_base + t0 * s_u_t, mask=em, other=0.0)
                dt_n = tl.load(dt_base + t0 * s_dt_t, mask=em, other=0.0)
                b_n = tl.load(b_base + t0 * s_b_t)
            for t in range(t0, t1):
                if PF:
                    u = u_n.to(tl.float32)
                    dtr = dt_n.to(tl.float32)
                    bb = b_n.to(tl.float32)
                    tn = tl.minimum(t + 1, t1 - 1)
                    u_n = tl.load(u_base + tn * s_u_t, mask=em, other=0.0)
                    dt_n = tl.load(dt_base + tn * s_dt_t, mask=em, other=0.0)
                    b_n = tl.load(b_base + tn * s_b_t)
                else:
                    u = tl.load(u_base + t * s_u_t, mask=em, other=0.0).to(tl.float32)
                    dtr = tl.load(dt_base + t * s_dt_t, mask=em, other=0.0).to(tl.float32)
                    bb = tl.load(b_base + t * s_b_t).to(tl.float32)
                delta = _softplus(dtr + bias)
                h = tl.exp2(delta[:, None] * a2) * h + (delta * u)[:, None] * bb[None, :]
                tl.store(scr + (t - t0) * (BLOCK_E * N), h)
            tl.debug_barrier()
            # walk the chunk backwards
            h = tl.load(scr + (t1 - 1 - t0) * (BLOCK_E * N))
            if PF:
                tl_ = t1 - 1
                u_n = tl.load(u_base + tl_ * s_u_t, mask=em, other=0.0)
                dt_n = tl.load(dt_base + tl_ * s_dt_t, mask=em, other=0.0)
                z_n = tl.load(z_base + tl_ * s_z_t, mask=em, other=0.0)
                dy_n = tl.load(dy_base + tl_ * s_dy_t, mask=em, other=0.0)
                b_n = tl.load(b_base + tl_ * s_b_t)
                c_n = tl.load(c_base + tl_ * s_c_t)
                hp_n = tl.load(scr + tl.maximum(tl_ - 1 - t0, 0) * (BLOCK_E * N))
            for tt in range(0, t1 - t0):
                t = t1 - 1 - tt
                if PF:
                    hp = hp_n
                    u = u_n.to(tl.float32)
                    dtr = dt_n.to(tl.float32)
                    zz = z_n.to(tl.float32)
                    dy = dy_n.to(tl.float32)
                    bb = b_n.to(tl.float32)
                    cc = c_n.to(tl.float32)
                    tn = tl.maximum(t - 1, t0)
                    u_n = tl.load(u_base + tn * s_u_t, mask=em, other=0.0)
                    dt_n = tl.load(dt_base + tn * s_dt_t, mask=em, other=0.0)
                    z_n = tl.load(z_base + tn * s_z_t, mask=em, other=0.0)
                    dy_n = tl.load(dy_base + tn * s_dy_t, mask=em, other=0.0)
                    b_n = tl.load(b_base + tn * s_b_t)
                    c_n = tl.load(c_base + tn * s_c_t)
                    hp_n = tl.load(scr + tl.maximum(tn - 1 - t0, 0) * (BLOCK_E * N))
                else:
                    hp = tl.load(scr + tl.maximum(t - 1 - t0, 0) * (BLOCK_E * N))
                    u = tl.load(u_base + t * s_u_t, mask=em, other=0.0).to(tl.float32)
                    dtr = tl.load(dt_base + t * s_dt_t, mask=em, other=0.0).to(tl.float32)
                    zz = tl.load(z_base + t * s_z_t, mask=em, other=0.0).to(tl.float32)
                    dy = tl.load(dy_base + t * s_dy_t, mask=em, other=0.0).to(tl.float32)
                    bb = tl.load(b_base + t * s_b_t).to(tl.float32)
                    cc = tl.load(c_base + t * s_c_t).to(tl.float32)
                # h_{t-1}: scratch, or the chunk's entry state at t0
                hp = tl.where(t > t0, hp, h0)
                x = dtr + bias
                delta = _softplus(x)
                sig_z = 1.0 / (1.0 + tl.exp(-zz))
                ys = tl.sum(h * cc[None, :], axis=1)
                pre = ys + dv * u
                dz = dy * pre * sig_z * (1.0 + zz * (1.0 - sig_z))
                dys = dy * zz * sig_z
                g = g_carry + dys[:, None] * cc[None, :]
                dc_t = tl.sum(dys[:, None] * h, axis=0)
                bu = bb[None, :] * u[:, None]
                da_t = tl.exp2(delta[:, None] * a2)
                s = da_t * hp   # = h - delta B u, without the cancellation
                du = delta * tl.sum(g * bb[None, :], axis=1) + dv * dys
                ddelta = tl.sum(g * (bu + a * s), axis=1)
                db_t = tl.sum(g * (delta * u)[:, None], axis=0)
                da_acc += g * delta[:, None] * s
                dd_acc += dys * u
                ddt = ddelta * tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-x)))
                dbias_acc += ddt
                tl.store(du_ptr + g_base + t * E, du.to(du_ptr.dtype.element_ty), mask=em)
                tl.store(ddt_ptr + g_base + t * E, ddt.to(ddt_ptr.dtype.element_ty), mask=em)
                tl.store(dz_ptr + g_base + t * E, dz.to(dz_ptr.dtype.element_ty), mask=em)
                tl.store(db_ptr + p_base + t * N, db_t)
                tl.store(dc_ptr + p_base + t * N, dc_t)
                g_carry = da_t * g
                h = hp
            tl.debug_barrier()
        tl.store(da_ptr + pid_b * E * N + en_off, da_acc, mask=em[:, None])
        tl.store(dd_ptr + pid_b * E + e, dd_acc, mask=em)
        tl.store(dbias_ptr + pid_b * E + e, dbias_acc, mask=em)


def _chk(x, name):
    if x.stride(-1) != 1:
        raise ValueError(f"{name}: last dimension must be contiguous")


def scan_fwd_triton(u, dt, A, B, C, D, z, dt_bias, block_e=32, chunk=32, num_warps=1, pf=1, save=False):
    """Forward kernel launch; returns (y, hc) with hc None unless save."""
    bsz, L, E = u.shape
    N = A.shape[1]
    for x, nm in ((u, "u"), (dt, "dt"), (z, "z"), (B, "B"), (C, "C")):
        _chk(x, nm)
    A = A.contiguous().float()
    D = D.contiguous().float()
    dt_bias = dt_bias.contiguous().float()
    y = torch.empty(bsz, L, E, dtype=u.dtype, device=u.device)
    n_chunks = triton.cdiv(L, chunk)
    if save:
        hc = torch.empty(bsz, n_chunks, E, N, dtype=torch.float32, device=u.device)
    else:
        hc = torch.empty(1, dtype=torch.float32, device=u.device)
    grid = (bsz, triton.cdiv(E, block_e))
    _scan_fwd_kernel[grid](
        u, dt, z, B, C, y, A, D, dt_bias, hc, L, E,
        u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), z.stride(0), z.stride(1),
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), y.stride(0), y.stride(1),
        n_chunks * E * N, E * N,
        N=N, BLOCK_E=block_e, CHUNK=chunk, SAVE=save, PF=bool(pf), num_warps=num_warps)
    return y, (hc if save else None)


class SelectiveScanTriton(torch.autograd.Function):
    """Autograd wrapper; config = (BLOCK_E, CHUNK, num_warps, prefetch)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, z, dt_bias, block_e=32, chunk=32, num_warps=1, pf=1):
        y, hc = scan_fwd_triton(u, dt, A, B, C, D, z, dt_bias, block_e, chunk, num_warps, pf, save=True)
        ctx.save_for_backward(u, dt, A.contiguous().float(), B, C, D.contiguous().float(), z,
                              dt_bias.contiguous().float(), hc)
        ctx.cfg = (block_e, chunk, num_warps, pf)
        ctx.dtypes = (A.dtype, D.dtype, dt_bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, dt, A, B, C, D, z, dt_bias, hc = ctx.saved_tensors
        block_e, chunk, num_warps, pf = ctx.cfg
        bsz, L, E = u.shape
        N = A.shape[1]
        dy = dy if dy.stride(-1) == 1 else dy.contiguous()
        n_eblk = triton.cdiv(E, block_e)
        dev = u.device
        du = torch.empty(bsz, L, E, dtype=u.dtype, device=dev)
        ddt = torch.empty(bsz, L, E, dtype=dt.dtype, device=dev)
        dz = torch.empty(bsz, L, E, dtype=z.dtype, device=dev)
        db = torch.empty(bsz, n_eblk, L, N, dtype=torch.float32, device=dev)
        dc = torch.empty(bsz, n_eblk, L, N, dtype=torch.float32, device=dev)
        da = torch.empty(bsz, E, N, dtype=torch.float32, device=dev)
        dd = torch.empty(bsz, E, dtype=torch.float32, device=dev)
        dbias = torch.empty(bsz, E, dtype=torch.float32, device=dev)
        scr = torch.empty(bsz * n_eblk * chunk * block_e * N, dtype=torch.float32, device=dev)
        grid = (bsz, n_eblk)
        _scan_bwd_kernel[grid](
            u, dt, z, B, C, dy, A, D, dt_bias, hc, scr,
            du, ddt, dz, db, dc, da, dd, dbias, L, E,
            u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), z.stride(0), z.stride(1),
            B.stride(0), B.stride(1), C.stride(0), C.stride(1), dy.stride(0), dy.stride(1),
            hc.stride(0), hc.stride(1),
            N=N, BLOCK_E=block_e, CHUNK=chunk, PF=bool(pf), num_warps=num_warps)
        dB = db.sum(1).to(B.dtype)
        dC = dc.sum(1).to(C.dtype)
        a_dt, d_dt, b_dt = ctx.dtypes
        return (du, ddt, da.sum(0).to(a_dt), dB, dC, dd.sum(0).to(d_dt), dz, dbias.sum(0).to(b_dt),
                None, None, None, None)


def selective_scan(u, dt, A, B, C, D, z, dt_bias, impl="auto", cfg=(32, 32, 1, 1)):
    """y = scan(...) (see module doc). impl: 'triton', 'ref' or 'auto'
    (triton on CUDA tensors, the reference otherwise)."""
    if impl == "auto":
        impl = "triton" if (HAVE_TRITON and u.is_cuda) else "ref"
    if impl == "ref":
        return scan_ref(u, dt, A, B, C, D, z, dt_bias)
    need = torch.is_grad_enabled() and any(
        t.requires_grad for t in (u, dt, A, B, C, D, z, dt_bias))
    if not need:
        return scan_fwd_triton(u, dt, A, B, C, D, z, dt_bias, *cfg, save=False)[0]
    return SelectiveScanTriton.apply(u, dt, A, B, C, D, z, dt_bias, *cfg)
