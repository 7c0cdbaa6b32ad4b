#!/usr/bin/env python3
"""Gradient check of the Triton scan against the float64 PyTorch reference,
then (on a GPU, with --bench) timings of the scan and of whole training steps.

CPU (Triton interpreter, small shapes):
    TRITON_INTERPRET=1 python3 scripts/train/check_scan.py --device cpu
GPU:
    python3 scripts/train/check_scan.py --bench
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan import SelectiveScanTriton, scan_ref  # noqa: E402


def make_inputs(bsz, L, E, N, dtype, device, gen):
    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * scale)
    u = r(bsz, L, E)
    dt = r(bsz, L, E, scale=1.5) - 1.0
    A = -torch.exp(r(E, N, scale=0.5) + 0.5)
    B = r(bsz, L, N)
    C = r(bsz, L, N)
    D = r(E)
    # z as a strided slice of a bigger tensor, like the in_proj output
    xz = r(bsz, L, 2 * E) * 2.0
    z = xz[..., E:]
    # B/C as slices of one x_proj-like output
    bc = torch.cat([r(bsz, L, 3), B, C], -1)
    B = bc[..., 3:3 + N]
    C = bc[..., 3 + N:]
    bias = r(E, scale=0.5) - 2.0
    # make one channel hit the softplus linear branch
    dt[..., 0] = 22.0 + dt[..., 0].abs()
    out = dict(u=u, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=bias)
    leafs = {}
    for k, v in out.items():
        dtp = torch.float32 if k in ("A", "D", "dt_bias") else dtype
        leafs[k] = v.to(device=device, dtype=dtp).detach()
    # keep the strided layouts of z, B and C on the device
    zz = xz.to(device=device, dtype=dtype)[..., E:].detach()
    bc_d = bc.to(device=device, dtype=dtype)
    leafs["z"], leafs["B"], leafs["C"] = zz, bc_d[..., 3:3 + N].detach(), bc_d[..., 3 + N:].detach()
    return leafs


def rel(a, b):
    a = a.double().cpu()
    b = b.double().cpu()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def grad_check(bsz, L, E, N, dtype, device, cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    x = make_inputs(bsz, L, E, N, dtype, device, gen)
    names = ["u", "dt", "A", "B", "C", "D", "z", "dt_bias"]
    # float64 reference on CPU from the same (rounded) inputs
    ref_in = {k: v.detach().cpu().double().requires_grad_(True) for k, v in x.items()}
    tri_in = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
    y_ref = scan_ref(*[ref_in[k] for k in names])
    dy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    y_ref.backward(dy)
    y = SelectiveScanTriton.apply(*[tri_in[k] for k in names], *cfg)
    y.backward(dy.to(device=device, dtype=y.dtype))
    res = {"y": rel(y, y_ref)}
    for k in names:
        res["d" + k] = rel(tri_in[k].grad, ref_in[k].grad)
    return res


def bench_scan(bsz, L, E, N, cfg, device="cuda"):
    import triton
    gen = torch.Generator().manual_seed(1)
    x = make_inputs(bsz, L, E, N, torch.bfloat16, device, gen)
    names = ["u", "dt", "A", "B", "C", "D", "z", "dt_bias"]
    ins = {k: v.requires_grad_(True) for k, v in x.items()}
    dy = torch.randn(bsz, L, E, device=device, dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            SelectiveScanTriton.apply(*[ins[k] for k in names], *cfg)

    def fwdbwd():
        y = SelectiveScanTriton.apply(*[ins[k] for k in names], *cfg)
        y.backward(dy)

    tf = triton.testing.do_bench(fwd, warmup=50, rep=200, return_mode="median")
    tfb = triton.testing.do_bench(fwdbwd, warmup=50, rep=400, return_mode="median")
    return tf, tfb


def bench_step(d, nl, bsz, L, cfg, n_warm=3, n_time=8):
    """Times whole training steps (forward, backward, AdamW) of the model
    that train.py trains, on random bytes."""
    from model import ByteMamba, Cfg, n_params
    import torch.nn.functional as F
    torch.cuda.reset_peak_memory_stats()
    model = ByteMamba(Cfg(d_model=d, n_layer=nl)).cuda()
    model.init_weights(torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, fused=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randint(0, 256, (bsz, L + 1), device="cuda", generator=gen)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lg = model(x[:, :-1], scan_impl="triton", scan_cfg=cfg)
        loss = F.cross_entropy(lg.float().reshape(-1, 256), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(n_warm):
        step()
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(n_time):
        loss = step()
    torch.cuda.synchronize()
    ms = (time.time() - t) / n_time * 1e3
    if not torch.isfinite(loss):
        raise RuntimeError("non-finite loss")
    return {"ms": ms, "tok_s": bsz * L / ms * 1e3, "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "params": n_params(model)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--steps", default="512,8,64,32,32,1,1;512,8,128,32,32,1,1",
                    help="';'-separated d_model,n_layer,batch,BLOCK_E,CHUNK,warps,pf for whole-step timings")
    args = ap.parse_args()
    dev = args.device
    report = {"grad_check": [], "scan_bench": [], "step_bench": []}
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if interp:
        shapes = [(2, 45, 48, 16, torch.float32, (32, 16, 1, 0)), (2, 45, 48, 16, torch.float32, (32, 16, 1, 1)),
                  (1, 20, 32, 16, torch.bfloat16, (32, 8, 1, 1))]
    else:
        shapes = [(2, 300, 96, 16, torch.float32, (32, 32, 1, 0)),
                  (2, 300, 96, 16, torch.float32, (32, 32, 1, 1)),
                  (3, 517, 160, 16, torch.float32, (64, 64, 2, 1)),
                  (2, 1, 64, 16, torch.float32, (32, 32, 1, 1)),
                  (2, 300, 96, 16, torch.bfloat16, (32, 32, 1, 1))]
    ok = True
    print("grad check vs float64 reference (relative L2 error)")
    for i, (b, L, E, N, dt, cfg) in enumerate(shapes):
        r = grad_check(b, L, E, N, dt, dev, cfg, seed=100 + i)
        tol = 1e-5 if dt == torch.float32 else 1.5e-2
        worst = max(r.values())
        passed = worst == worst and worst < tol
        ok &= passed
        print(f"  b={b} L={L} E={E} N={N} {str(dt):15s} cfg={cfg} worst={worst:.2e} tol={tol:g} "
              f"{'PASS' if passed else 'FAIL'}  " + " ".join(f"{k}={v:.1e}" for k, v in r.items()))
        report["grad_check"].append(dict(shape=[b, L, E, N], dtype=str(dt), cfg=cfg, err=r, passed=passed))
    if args.bench:
        bsz, L, E, N = 64, 2048, 1024, 16
        print(f"scan timings, bf16 inputs, b={bsz} L={L} E={E} N={N} (median ms)")
        for cfg in [(32, 32, 1, 0), (32, 32, 1, 1), (32, 64, 1, 1), (64, 32, 2, 1), (16, 32, 1, 1)]:
            try:
                tf, tfb = bench_scan(bsz, L, E, N, cfg)
            except Exception as ex:  # keep benchmarking other configs
                print(f"  cfg={cfg} failed: {ex}")
                continue
            toks = bsz * L
            print(f"  cfg={cfg}: fwd {tf:.3f} ms ({toks / tf / 1e3:.2f} Mtok/s per layer), "
                  f"fwd+bwd {tfb:.3f} ms ({toks / tfb / 1e3:.2f} Mtok/s per layer)")
            report["scan_bench"].append(dict(cfg=cfg, fwd_ms=tf, fwdbwd_ms=tfb))
    if args.bench and args.steps:
        for spec in args.steps.split(";"):
            d, nl, bsz, cfgs = spec.split(",", 3)
            cfg = tuple(int(v) for v in cfgs.split(","))
            try:
                r = bench_step(int(d), int(nl), int(bsz), 2048, cfg)
            except Exception as ex:
                print(f"  step bench {spec} failed: {ex!r}")
                torch.cuda.empty_cache()
                continue
            print(f"train step d_model={d} n_layer={nl} batch={bsz}x2048 scan={cfg}: {r['ms']:.1f} ms, "
                  f"{r['tok_s']:,.0f} tok/s, peak {r['peak_gb']:.1f} GB, params {r['params']:,}")
            report["step_bench"].append(dict(spec=spec, **r))
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print("ALL PASS" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
