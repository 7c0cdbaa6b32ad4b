#!/usr/bin/env python3
"""Train a byte-level (vocab 256) Mamba-1 LM on the bundled books, with
pass-key samples mixed in, and export it in the Hugging Face Mamba format.

GPU run (Triton scan, bf16 autocast, fp32 master weights and scan state):
    python3 scripts/train/train.py --data .traindata --out $OUT/run \
        --steps 2000 --batch 96 --ctx 2048 --time-budget 540
Resume from an exported checkpoint (weights only; Adam restarts with a short
re-warm-up, the LR schedule continues from the saved step):
    python3 scripts/train/train.py ... --resume models/byte-mamba-2k
CPU smoke test (reference PyTorch scan, tiny model):
    python3 scripts/train/train.py --tiny --out /tmp/smoke

Writes in --out: model/{config.json, model.safetensors[.partN]} (F16,
tensor names of docs/MAMBA.md 3), state.json (step, tokens, schedule),
eval.json (final evaluation) and log.txt. Files over --split-mb are split
into .partN pieces (the device tool returns files of at most 16 MiB):
reassemble with `cat model.safetensors.part* > model.safetensors`.
"""
import argparse
import glob
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import Batcher, load_split, passkey_set  # noqa: E402
from model import ByteMamba, Cfg, export_hf, load_hf, n_params  # noqa: E402

LN2 = math.log(2.0)


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder of *.txt.xz (default .traindata, else ../shared/data/text/train)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", default=None,
                    help="an earlier --out folder: state.json and model/ (config.json, model.safetensors[.part*])")
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000, help="planned steps (LR schedule length)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--decay-frac", type=float, default=0.25, help="final share of steps with linear LR decay")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--pk-frac", type=float, default=0.25, help="share of rows that are pass-key samples")
    ap.add_argument("--dense-frac", type=float, default=0.0,
                    help="share of rows made of back-to-back short pass-key episodes")
    ap.add_argument("--curriculum", type=float, default=0.0,
                    help="progress at which the needle gaps reach their full range (0: no curriculum)")
    ap.add_argument("--pk-weight", type=float, default=1.0, help="weight of the extra loss on the answer bytes")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--val-frac", type=float, default=0.02)
    ap.add_argument("--time-budget", type=float, default=540.0, help="wall seconds for the whole script")
    ap.add_argument("--reserve", type=float, default=75.0, help="seconds kept for the final eval/export")
    ap.add_argument("--schedule-time", action="store_true",
                    help="LR schedule progress = max(step/steps, time used/time available): the decay "
                         "always completes inside --time-budget")
    ap.add_argument("--ckpt-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--scan", default="auto", choices=["auto", "triton", "ref"])
    ap.add_argument("--scan-cfg", default="32,32,1,1", help="BLOCK_E,CHUNK,num_warps,prefetch of the Triton scan")
    ap.add_argument("--split-mb", type=float, default=15.0)
    ap.add_argument("--final-pk-n", type=int, default=200)
    ap.add_argument("--pk-lengths", default="2048,4096,8192,16384")
    ap.add_argument("--no-hf-check", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke preset")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    if a.tiny:
        preset = dict(d_model=64, n_layer=2, ctx=160, batch=4, steps=30, warmup=5, eval_every=15, log_every=5,
                      final_pk_n=8, pk_lengths="160,320", scan="ref", reserve=10.0, pk_frac=0.5)
        for k, v in preset.items():
            if "--" + k.replace("_", "-") not in sys.argv:   # explicit flags win
                setattr(a, k, v)
    return a


class Log:
    def __init__(self, path):
        self.f = open(path, "a")

    def __call__(self, *msg):
        s = " ".join(str(m) for m in msg)
        print(s, flush=True)
        self.f.write(s + "\n")
        self.f.flush()


def lr_at(step, progress, a, rewarm_from=None):
    """Warm-up, constant, then linear decay over the last decay_frac of
    `progress` (in [0, 1]: the larger of step/steps and, with
    --schedule-time, the share of the training time used)."""
    if step < a.warmup:
        f = (step + 1) / a.warmup
    else:
        d0 = 1.0 - a.decay_frac
        f = 1.0 if progress < d0 else max(0.0, (1.0 - progress) / a.decay_frac)
        f = a.min_lr_frac + (1.0 - a.min_lr_frac) * f
    if rewarm_from is not None and step - rewarm_from < 50:
        f *= (step - rewarm_from + 1) / 50.0
    return a.lr * f


def split_big(path, max_mb):
    """Splits `path` into path.part0.. when larger than max_mb (MiB)."""
    size = os.path.getsize(path)
    lim = int(max_mb * 1024 * 1024)
    for old in glob.glob(path + ".part*"):
        os.remove(old)
    if size <= lim:
        return [path]
    parts = []
    with open(path, "rb") as f:
        i = 0
        while True:
            chunk = f.read(lim)
            if not chunk:
                break
            p = f"{path}.part{i}"
            with open(p, "wb") as g:
                g.write(chunk)
            parts.append(p)
            i += 1
    os.remove(path)
    return parts


def join_parts(folder):
    """Makes folder/model.safetensors from .part files if needed; returns a
    folder holding config.json + model.safetensors."""
    st = os.path.join(folder, "model.safetensors")
    if os.path.exists(st):
        return folder
    parts = sorted(glob.glob(st + ".part*"), key=lambda p: int(p.rsplit("part", 1)[1]))
    if not parts:
        raise FileNotFoundError(f"no model.safetensors in {folder}")
    tmp = "/tmp/resume_model"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "model.safetensors"), "wb") as g:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, g)
    shutil.copy(os.path.join(folder, "config.json"), tmp)
    return tmp


@torch.no_grad()
def eval_bpb(model, val, L, n_windows, bsz, dev, fwd):
    """Mean cross-entropy (bits/byte) over all positions of non-overlapping
    windows of L+1 bytes of held-out text (first n_windows)."""
    data = torch.as_tensor(val)
    nw = min(n_windows, (data.numel() - 1) // L)
    tot, cnt = 0.0, 0
    for i in range(0, nw, bsz):
        k = min(bsz, nw - i)
        idx = (torch.arange(i, i + k)[:, None] * L) + torch.arange(L + 1)
        w = data[idx].long().to(dev)
        logits = fwd(w[:, :-1])
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
        tot += ce.item()
        cnt += w[:, 1:].numel()
    return tot / cnt / LN2, cnt


@torch.no_grad()
def eval_passkey(model, val, L, n, dev, fwd, bsz, grass=False, seed=777):
    """Greedy exact-match accuracy of the answer (space + digits): with
    teacher forcing, all answer bytes being the argmax is the same as greedy
    decoding reproducing them. Returns (accuracy, per-depth-bin accuracy)."""
    ids, ans = passkey_set(val, L, n, seed + L, dev, grass=grass)
    A = ans.shape[1]
    ok = []
    for i in range(0, n, bsz):
        x = ids[i:i + bsz]
        logits = fwd(x[:, :-1])
        pred = logits[:, L - A - 1:L - 1].argmax(-1)
        ok.append((pred == ans[i:i + bsz]).all(-1))
    ok = torch.cat(ok).float().cpu()
    bins = [ok[j * n // 5:(j + 1) * n // 5].mean().item() for j in range(5)]
    return ok.mean().item(), bins


def main():
    a = parse()
    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.time()
    os.makedirs(a.out, exist_ok=True)
    log = Log(os.path.join(a.out, "log.txt"))
    log(f"# train.py {' '.join(sys.argv[1:])}")
    log(f"# device {dev} {torch.cuda.get_device_name() if dev == 'cuda' else ''} torch {torch.__version__}")
    torch.manual_seed(a.seed)
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data_dir = a.data
    if data_dir is None:
        here = os.path.dirname(os.path.abspath(__file__))
        root = os.path.dirname(os.path.dirname(here))
        for cand in (os.path.join(root, ".traindata"), os.path.join(root, "..", "shared", "data", "text", "train")):
            if glob.glob(os.path.join(cand, "*.txt.xz")):
                data_dir = cand
                break
    train, val, files = load_split(data_dir, a.val_frac)
    log(f"# data {data_dir}: {len(files)} files, train {len(train)} bytes, held-out {len(val)} bytes")

    scan_cfg = tuple(int(v) for v in a.scan_cfg.split(","))
    start_step, tokens_seen, rewarm = 0, 0, None
    state = {}
    if a.resume:
        with open(os.path.join(a.resume, "state.json")) as f:
            state = json.load(f)
        mdir = os.path.join(a.resume, "model")
        model = load_hf(join_parts(mdir if os.path.isdir(mdir) else a.resume))
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        rewarm = start_step
        for k in ("steps", "lr", "warmup", "decay_frac", "batch", "ctx", "pk_frac", "pk_weight", "min_lr_frac",
                  "dense_frac", "curriculum"):
            # the saved run's settings, unless given again on this command line
            if k in state.get("args", {}) and "--" + k.replace("_", "-") not in sys.argv:
                setattr(a, k, state["args"][k])
        log(f"# resumed from {a.resume} at step {start_step}, {tokens_seen} tokens")
    else:
        model = ByteMamba(Cfg(d_model=a.d_model, n_layer=a.n_layer, d_state=a.d_state))
        model.init_weights(torch.Generator().manual_seed(a.seed))
    model = model.to(dev)
    cfg = model.cfg
    log(f"# model d_model={cfg.d_model} n_layer={cfg.n_layer} d_inner={cfg.d_inner} d_state={cfg.d_state} "
        f"dt_rank={cfg.dt_rank} params={n_params(model)}")

    opt = torch.optim.AdamW(model.param_groups(a.wd), lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=(dev == "cuda"))
    amp = dev == "cuda"

    def fwd(x):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            return model(x, scan_impl=a.scan, scan_cfg=scan_cfg)

    batcher = Batcher(train, a.ctx, dev, seed=a.seed + 7919 * start_step, pk_frac=a.pk_frac,
                      dense_frac=a.dense_frac, curriculum=a.curriculum)
    ck_dir = os.path.join(a.out, "model")

    def checkpoint(step, extra=None):
        st = {"step": step, "tokens_seen": tokens_seen, "args": vars(a), "files": files,
              "elapsed_s": time.time() - t_start, "resumed_from": state.get("step")}
        st.update(extra or {})
        export_hf(model, ck_dir, torch.float16, metadata={"step": step, "tokens_seen": tokens_seen})
        split_big(os.path.join(ck_dir, "model.safetensors"), a.split_mb)
        with open(os.path.join(a.out, "state.json"), "w") as f:
            json.dump(st, f, indent=1)

    step = start_step
    last_ck = time.time()
    t_log, tok_log = time.time(), 0
    train_time, loss_ema, hist = 0.0, None, []
    log(f"# setup {time.time() - t_start:.1f}s; training to step {a.steps}")
    model.train()
    t_train0 = time.time()
    avail = a.time_budget - a.reserve - (t_train0 - t_start)
    while True:
        # progress of this call's segment (a resumed run starts a new segment)
        progress = (step - start_step) / max(1, a.steps - start_step)
        if a.schedule_time:
            progress = max(progress, (time.time() - t_train0) / avail)
        if progress >= 1.0:
            break
        if time.time() - t_start > a.time_budget - a.reserve:
            log(f"# time budget reached at step {step}")
            break
        t0 = time.time()
        lr = lr_at(step, progress, a, rewarm)
        for g in opt.param_groups:
            g["lr"] = lr
        batcher.progress = progress
        x, y, am = batcher.batch(a.batch)
        logits = fwd(x)
        lg = logits.float().reshape(-1, cfg.vocab)
        ce_all = F.cross_entropy(lg, y.reshape(-1), reduction="none")
        ce = ce_all.mean()
        amf = am.reshape(-1).float()
        ce_ans = (ce_all * amf).sum() / amf.sum().clamp(min=1.0)   # no host sync
        loss = ce + a.pk_weight * ce_ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        step += 1
        tokens_seen += x.numel()
        tok_log += x.numel()
        if step % a.log_every == 0:
            if dev == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t_log
            cev, cav, gnv = ce.item(), ce_ans.item(), gn.item()
            loss_ema = cev if loss_ema is None else 0.9 * loss_ema + 0.1 * cev
            log(f"step {step:5d} lr {lr:.2e} loss {cev:.4f} ({cev / LN2:.3f} bpb) ans {cav:.3f} gnorm {gnv:.2f} "
                f"tok/s {tok_log / dt:,.0f} tokens {tokens_seen:,} t {time.time() - t_start:.0f}s")
            t_log, tok_log = time.time(), 0
        train_time += time.time() - t0
        if step % a.eval_every == 0:
            model.eval()
            te = time.time()
            bpb, _ = eval_bpb(model, val, a.ctx, 64, 16, dev, fwd)
            pk, bins = eval_passkey(model, val, a.ctx, 64, dev, fwd, 16)
            log(f"eval step {step} val_bpb {bpb:.4f} passkey@{a.ctx} {pk:.3f} "
                f"(depth bins {' '.join(f'{b:.2f}' for b in bins)}) ({time.time() - te:.1f}s)")
            hist.append({"step": step, "tokens": tokens_seen, "val_bpb": bpb, "passkey": pk})
            model.train()
            t_log, tok_log = time.time(), 0
        if time.time() - last_ck > a.ckpt_every:
            checkpoint(step)
            last_ck = time.time()
            t_log, tok_log = time.time(), 0

    # ---- final: checkpoint/export, evaluation, transformers check ----
    model.eval()
    checkpoint(step)
    log(f"# checkpoint at step {step} written ({time.time() - t_start:.0f}s)")
    res = {"step": step, "planned_steps": a.steps, "finished": progress >= 1.0, "tokens_seen": tokens_seen,
           "params": n_params(model), "ctx": a.ctx, "batch": a.batch, "history": hist,
           "train_wall_s": train_time}
    bpb, nb = eval_bpb(model, val, a.ctx, 1000, 16, dev, fwd)
    res["val_bpb"], res["val_bytes"] = bpb, nb
    log(f"final held-out train text: {bpb:.4f} bits/byte over {nb} bytes (windows of {a.ctx})")
    # evaluate the exported (F16-rounded) weights, as others will load them
    exp_dir = join_parts(ck_dir) if not os.path.exists(os.path.join(ck_dir, "model.safetensors")) else ck_dir
    m16 = load_hf(exp_dir, dev).eval()

    def fwd16(x):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            return m16(x, scan_impl=a.scan, scan_cfg=scan_cfg)

    res["passkey"] = {}
    for L in [int(v) for v in a.pk_lengths.split(",")]:
        if time.time() - t_start > a.time_budget - 10:
            log("# out of time for further pass-key lengths")
            break
        bs = max(1, min(32, (16 * 2048) // L))
        acc, bins = eval_passkey(m16, val, L, a.final_pk_n, dev, fwd16, bs)
        accg, _ = eval_passkey(m16, val, L, max(8, a.final_pk_n // 2), dev, fwd16, bs, grass=True)
        res["passkey"][str(L)] = {"books": acc, "books_by_depth": bins, "grass": accg}
        log(f"passkey L={L}: books {acc:.3f} (depth bins {' '.join(f'{b:.2f}' for b in bins)}), grass {accg:.3f}")
    if not a.no_hf_check:
        try:
            res["hf_check"] = hf_check(exp_dir, m16, val, dev, a.scan, scan_cfg, log)
        except Exception as ex:  # report, do not lose the run
            log(f"# HF check failed: {ex!r}")
            res["hf_check"] = {"error": repr(ex)}
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(res, f, indent=1)
    log(f"# done in {time.time() - t_start:.0f}s")


@torch.no_grad()
def hf_check(model_dir, m16, val, dev, scan, scan_cfg, log, L=256, n=2):
    """Loads model_dir with transformers' MambaForCausalLM (fp32) and compares
    its logits with this model's (same F16 weights, fp32, Triton scan)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import MambaForCausalLM
    # true fp32 on both sides (no TF32 matmuls/convs) so the comparison means something
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    hf = MambaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    data = torch.as_tensor(val)
    x = torch.stack([data[1000 + i * 5000:1000 + i * 5000 + L] for i in range(n)]).long().to(dev)
    ref = hf(x).logits.float()
    mine = m16(x, scan_impl=scan, scan_cfg=scan_cfg).float()
    d = (mine - ref).abs().max().item()
    scale = ref.abs().max().item()
    agree = (mine.argmax(-1) == ref.argmax(-1)).float().mean().item()
    ok = d <= 1e-4 * max(1.0, scale)
    log(f"HF MambaForCausalLM check: max|diff| {d:.2e} (logit scale {scale:.1f}), argmax agreement {agree:.4f} "
        f"{'PASS' if ok else 'FAIL'}")
    return {"max_abs_diff": d, "logit_scale": scale, "argmax_agree": agree, "pass": ok, "L": L, "n": n}


if __name__ == "__main__":
    main()
