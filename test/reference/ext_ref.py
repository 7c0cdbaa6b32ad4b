"""Independent float64 NumPy reference of MambaExtend and Mamba Modulation.

Written from ../shared/docs/METHODS.md (§1, §2, §6, §8) and MAMBA.md (§1,
§2), not from the library's C code.  A whole model (Mamba-1, Falcon-Mamba,
Mamba-2) runs token by token in float64 from its safetensors checkpoint:

    load_model(dir)                  config.json + model.safetensors
    Model.run(ids, state, hooks)     logits of every position, state after

Hooks of a prefill (METHODS.md; decode steps run with none, §8):
    delta_scale[l]   MambaExtend: Δ' = s_l · softplus(...) (Mamba-2 after the
                     time_step_limit clamp), after LongMamba's mask (§6)
    a_log_scale[l]   Modulation: A' = −exp(s_l · A_log) (not A·s)
    global_mask[l], tau[l]   LongMamba: a global channel (Mamba-2: head)
                     keeps token t iff Δ_t > τ (strict), on the unscaled Δ
Also the per-layer Δ of a run (for LongMamba's decay under A', §6), and
the scales' calibration (§1, Pile schedule, with the objective of §8):

    cross_entropy(model, windows, hooks)   mean next-token CE, every position
    spsa(model, mode, windows, K, seed)    s0, the scales after K iterations
"""

import json
import math
import os
import struct

import numpy as np

# ---------------------------------------------------------------- files


def read_safetensors(path):
    """name -> float64 array, from the format (MAMBA.md §3) directly."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = raw[base + b:base + end]
        dt = e["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4")
        elif dt == "F64":
            a = np.frombuffer(buf, dtype="<f8")
        elif dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2")
        elif dt == "I32":
            a = np.frombuffer(buf, dtype="<i4")
        elif dt == "I64":
            a = np.frombuffer(buf, dtype="<i8")
        else:
            raise ValueError("dtype %s" % dt)
        a = a.reshape(e["shape"])
        out[name] = a.astype(np.int64) if dt in ("I32", "I64") else a.astype(np.float64)
    return out


def _limit(v):
    if isinstance(v, dict):
        return float(v["__float__"])
    return float(v)


# ---------------------------------------------------------------- math


def softplus(v):
    """torch's softplus: v above 20, else log1p(exp(v))."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v > 20.0, v, np.log1p(np.exp(np.minimum(v, 20.0))))


def silu(v):
    return v / (1.0 + np.exp(-v))


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def conv_step(win, x, w, b):
    """Depthwise causal conv on one token: win [C][K-1] oldest first, x [C];
    tap K-1 multiplies the current token.  Returns (SiLU(out), new window)."""
    full = np.concatenate([win, x[:, None]], axis=1)
    out = (full * w).sum(axis=1) + (b if b is not None else 0.0)
    return silu(out), full[:, 1:]


# ---------------------------------------------------------------- models


class Model:
    """A checkpoint in float64.  kind: 'mamba1' (with rms_eps > 0 for
    Falcon-Mamba) or 'mamba2'."""

    def __init__(self, cfg, t):
        self.cfg = cfg
        mt = cfg.get("model_type", "mamba")
        self.kind = "mamba2" if mt == "mamba2" else "mamba1"
        self.rms_eps = float(cfg.get("mixer_rms_eps", 0.0)) if mt == "falcon_mamba" else 0.0
        self.eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        self.nl = int(cfg["num_hidden_layers"])
        self.K = int(cfg["conv_kernel"])
        self.N = int(cfg["state_size"])
        self.t = t
        self.embed = t["backbone.embeddings.weight"]
        self.head = t.get("lm_head.weight", self.embed)
        self.V = self.embed.shape[0]
        if self.kind == "mamba1":
            self.E = int(cfg["intermediate_size"])
            r = cfg["time_step_rank"]
            self.R = int(math.ceil(cfg["hidden_size"] / 16)) if r == "auto" else int(r)
            self.C = self.E
        else:
            self.H = int(cfg["num_heads"])
            self.P = int(cfg["head_dim"])
            self.G = int(cfg["n_groups"])
            self.E = self.H * self.P
            lim = cfg.get("time_step_limit", [0.0, float("inf")])
            self.lo, self.hi = _limit(lim[0]), _limit(lim[1])
            self.C = self.H
        self.CD = self.E if self.kind == "mamba1" else self.E + 2 * self.G * self.N

    def p(self, l, name):
        return self.t.get("backbone.layers.%d.%s" % (l, name))

    def zero_state(self):
        return [{"conv": np.zeros((self.CD, self.K - 1)),
                 "ssm": np.zeros((self.E, self.N)) if self.kind == "mamba1"
                 else np.zeros((self.H, self.P, self.N))} for _ in range(self.nl)]

    def copy_state(self, st):
        return [{k: v.copy() for k, v in s.items()} for s in st]

    def A_of(self, l, a_log_scale):
        """A = -exp(A_log); Modulation: A' = -exp(s * A_log) (METHODS.md §2)."""
        A_log = self.p(l, "mixer.A_log")
        s = 1.0 if a_log_scale is None else float(a_log_scale[l])
        return -np.exp(s * A_log)

    def run(self, ids, state=None, delta_scale=None, a_log_scale=None, global_mask=None,
            tau=None, want_delta=False):
        """Tokens ids from state (None: zeros).  Returns (logits [L][V], state,
        deltas) with deltas[l] the unscaled, unfiltered Δ [L][C] when asked."""
        st = self.zero_state() if state is None else self.copy_state(state)
        L = len(ids)
        logits = np.empty((L, self.V))
        deltas = [np.empty((L, self.C)) for _ in range(self.nl)] if want_delta else None
        A = [self.A_of(l, a_log_scale) for l in range(self.nl)]
        for t, tok in enumerate(ids):
            res = self.embed[int(tok)].copy()
            for l in range(self.nl):
                h = rmsnorm(res, self.p(l, "norm.weight"), self.eps)
                mix = self.m1_step if self.kind == "mamba1" else self.m2_step
                hook = (None if delta_scale is None else float(delta_scale[l]),
                        None if global_mask is None else global_mask[l],
                        None if tau is None else tau[l])
                out, d = mix(l, h, st[l], A[l], hook)
                if want_delta:
                    deltas[l][t] = d
                res = res + out
            hf = rmsnorm(res, self.t["backbone.norm_f.weight"], self.eps)
            logits[t] = self.head @ hf
        return logits, st, deltas

    @staticmethod
    def _hook_delta(d, hook):
        """LongMamba's mask on the unscaled Δ, then MambaExtend's scale (§6)."""
        s, g, tau = hook
        if g is not None:
            d = np.where(np.asarray(g, dtype=bool) & ~(d > tau), 0.0, d)
        if s is not None:
            d = d * s
        return d

    def m1_step(self, l, h, st, A, hook):
        E, N, R = self.E, self.N, self.R
        xz = self.p(l, "mixer.in_proj.weight") @ h
        b = self.p(l, "mixer.in_proj.bias")
        if b is not None:
            xz = xz + b
        x, z = xz[:E], xz[E:]
        u, st["conv"] = conv_step(st["conv"], x, self.p(l, "mixer.conv1d.weight")[:, 0, :],
                                  self.p(l, "mixer.conv1d.bias"))
        dbc = self.p(l, "mixer.x_proj.weight") @ u
        dt_low, B, C = dbc[:R], dbc[R:R + N], dbc[R + N:]
        if self.rms_eps > 0:
            # Falcon-Mamba: each divided by its own RMS
            dt_low, B, C = (v / np.sqrt(np.mean(v * v) + self.rms_eps) for v in (dt_low, B, C))
        d = softplus(self.p(l, "mixer.dt_proj.weight") @ dt_low + self.p(l, "mixer.dt_proj.bias"))
        dh = self._hook_delta(d, hook)
        st["ssm"] = np.exp(dh[:, None] * A) * st["ssm"] + dh[:, None] * B[None, :] * u[:, None]
        y = (st["ssm"] @ C + self.p(l, "mixer.D") * u) * silu(z)
        out = self.p(l, "mixer.out_proj.weight") @ y
        b = self.p(l, "mixer.out_proj.bias")
        return (out + b if b is not None else out), d

    def m2_step(self, l, h, st, A, hook):
        E, N, H, P, G, CD = self.E, self.N, self.H, self.P, self.G, self.CD
        zx = self.p(l, "mixer.in_proj.weight") @ h
        b = self.p(l, "mixer.in_proj.bias")
        if b is not None:
            zx = zx + b
        z, xBC, dt = zx[:E], zx[E:E + CD], zx[E + CD:]
        xBC, st["conv"] = conv_step(st["conv"], xBC, self.p(l, "mixer.conv1d.weight")[:, 0, :],
                                    self.p(l, "mixer.conv1d.bias"))
        x = xBC[:E].reshape(H, P)
        B = xBC[E:E + G * N].reshape(G, N)
        C = xBC[E + G * N:].reshape(G, N)
        d = np.clip(softplus(dt + self.p(l, "mixer.dt_bias")), self.lo, self.hi)
        dh = self._hook_delta(d, hook)
        g = np.arange(H) // (H // G)
        st["ssm"] = (np.exp(dh * A)[:, None, None] * st["ssm"]
                     + dh[:, None, None] * x[:, :, None] * B[g][:, None, :])
        y = np.einsum("hpn,hn->hp", st["ssm"], C[g]) + self.p(l, "mixer.D")[:, None] * x
        y = y.reshape(E) * silu(z)
        y = rmsnorm(y.reshape(G, E // G), self.p(l, "mixer.norm.weight").reshape(G, E // G),
                    self.eps).reshape(E)
        out = self.p(l, "mixer.out_proj.weight") @ y
        b = self.p(l, "mixer.out_proj.bias")
        return (out + b if b is not None else out), d


def load_model(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    return Model(cfg, read_safetensors(os.path.join(d, "model.safetensors")))


def log_decay(model, deltas, a_log_scale):
    """Per layer and channel, LongMamba's log of the cumulative decay over a
    window (LONGMAMBA.md §2) with the modulated A' (METHODS.md §6):
    Mamba-1 Σ_t log(mean_n exp(Δ_t A'_{c,n})), Mamba-2 A'_h Σ_t Δ_t."""
    out = np.empty((model.nl, model.C))
    for l in range(model.nl):
        A = model.A_of(l, a_log_scale)
        d = deltas[l]
        if model.kind == "mamba1":
            x = d[:, :, None] * A[None, :, :]            # [L][E][N]
            m = x.max(axis=2, keepdims=True)
            lme = m[:, :, 0] + np.log(np.exp(x - m).sum(axis=2)) - math.log(model.N)
            out[l] = lme.sum(axis=0)
        else:
            out[l] = A * d.sum(axis=0)
    return out


# ---------------------------------------------------------------- SPSA (§1, §8)

MASK64 = (1 << 64) - 1


class SplitMix:
    """The header's generator: x = seed; per draw x += golden, z = mix(x)."""

    def __init__(self, seed):
        self.x = seed & MASK64

    def next(self):
        self.x = (self.x + 0x9E3779B97F4A7C15) & MASK64
        z = self.x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def cross_entropy(model, windows, mode, scales):
    """Mean over windows and positions t < T-1 of -log softmax(logits_t)[x_{t+1}],
    each window a prefill from zero state with the mode's hook at scales."""
    hook = {"delta_scale" if mode == "mambaextend" else "a_log_scale": scales}
    total, count = 0.0, 0
    for w in windows:
        lg, _, _ = model.run(w, **hook)
        lg = lg[:-1]
        m = lg.max(axis=1)
        lse = m + np.log(np.exp(lg - m[:, None]).sum(axis=1))
        total += float((lse - lg[np.arange(len(w) - 1), np.asarray(w[1:])]).sum())
        count += len(w) - 1
    return total / count


def spsa(model, mode, windows, K, seed, f=None):
    """METHODS.md §1, Pile: s0 ~ U[0.75, 1); c_k = 0.1/(1+k)^0.1;
    a_k = 1e-3 cos(k pi / 198); Rademacher delta; clamp at 0.01.
    Returns (s0, s, f(s0), f(s)); f defaults to cross_entropy."""
    f = f or (lambda s: cross_entropy(model, windows, mode, s))
    rng = SplitMix(seed)
    s0 = np.array([0.75 + 0.25 * ((rng.next() >> 11) * 2.0 ** -53) for _ in range(model.nl)])
    s = s0.copy()
    for k in range(K):
        ck = 0.1 / (1.0 + k) ** 0.1
        ak = 1e-3 * math.cos(k * math.pi / 198.0)
        delta = np.array([1.0 if rng.next() >> 63 else -1.0 for _ in range(model.nl)])
        fp = f(np.maximum(s + ck * delta, 0.01))
        fm = f(np.maximum(s - ck * delta, 0.01))
        s = np.maximum(s - ak * (fp - fm) / (2.0 * ck) * delta, 0.01)
    return s0, s, f(s0), f(s)
