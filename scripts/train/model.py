"""Byte-level Mamba-1 language model for training (docs/MAMBA.md section 1).

Parameter names are exactly the Hugging Face MambaForCausalLM ones
(MAMBA.md section 3), so the state dict exports without renaming; the LM
head is tied to the embedding (no lm_head.weight is written).
"""
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scan import selective_scan


@dataclass
class Cfg:
    d_model: int = 512
    n_layer: int = 8
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0          # 0: ceil(d_model / 16)
    vocab: int = 256
    eps: float = 1e-5

    def __post_init__(self):
        if self.dt_rank <= 0:
            self.dt_rank = math.ceil(self.d_model / 16)

    @property
    def d_inner(self):
        return self.expand * self.d_model


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        # stats in fp32 (HF MambaRMSNorm: x.float() * rsqrt(mean(x^2) + eps) * w)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)


class Mixer(nn.Module):
    def __init__(self, cfg: Cfg):
        super().__init__()
        d, E, N, R, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
        self.E, self.N, self.R, self.K = E, N, R, K
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d, bias=False)

    def forward(self, h, scan_impl="auto", scan_cfg=(32, 32, 1, 1)):
        L = h.shape[1]
        xz = self.in_proj(h)                                   # [b, L, 2E]: x first, z second
        x, z = xz[..., :self.E], xz[..., self.E:]
        u = self.conv1d(x.transpose(1, 2))[..., :L]            # causal: left zero padding
        u = F.silu(u).transpose(1, 2).contiguous()             # [b, L, E]
        xdbl = self.x_proj(u)                                  # [dt_low | B | C]
        dt_low = xdbl[..., :self.R]
        Bm = xdbl[..., self.R:self.R + self.N]
        Cm = xdbl[..., self.R + self.N:]
        dt = F.linear(dt_low, self.dt_proj.weight)             # bias added (fp32) inside the scan
        A = -torch.exp(self.A_log.float())
        y = selective_scan(u, dt, A, Bm, Cm, self.D.float(), z, self.dt_proj.bias.float(),
                           impl=scan_impl, cfg=scan_cfg)
        return self.out_proj(y)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.eps)
        self.mixer = Mixer(cfg)


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab, cfg.d_model)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = RMSNorm(cfg.d_model, cfg.eps)


class ByteMamba(nn.Module):
    def __init__(self, cfg: Cfg):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)

    @torch.no_grad()
    def init_weights(self, gen, dt_min=0.001, dt_max=0.1, dt_floor=1e-4):
        """mamba_ssm's initialisation: normal(0.02) embedding, default Linear
        init, dt_proj weight U(+-R^-0.5), dt bias = softplus^-1 of a log-uniform
        dt in [dt_min, dt_max], A_log = log(1..N), D = 1, out_proj rescaled by
        1/sqrt(n_layer) (prenorm residual)."""
        cfg = self.cfg

        def uni(t, bound):
            t.copy_(torch.rand(t.shape, generator=gen) * 2 * bound - bound)

        self.backbone.embeddings.weight.copy_(torch.randn(self.backbone.embeddings.weight.shape, generator=gen) * 0.02)
        for blk in self.backbone.layers:
            m = blk.mixer
            for lin in (m.in_proj, m.x_proj, m.out_proj):
                uni(lin.weight, 1.0 / math.sqrt(lin.weight.shape[1]))   # kaiming_uniform(a=sqrt(5))
            m.out_proj.weight /= math.sqrt(cfg.n_layer)
            uni(m.conv1d.weight, 1.0 / math.sqrt(cfg.d_conv))
            uni(m.conv1d.bias, 1.0 / math.sqrt(cfg.d_conv))
            uni(m.dt_proj.weight, cfg.dt_rank ** -0.5)
            dt = torch.exp(torch.rand(cfg.d_inner, generator=gen) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=dt_floor)
            m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            m.A_log.copy_(torch.log(torch.arange(1, cfg.d_state + 1, dtype=torch.float32)).repeat(cfg.d_inner, 1))
            m.D.fill_(1.0)
            blk.norm.weight.fill_(1.0)
        self.backbone.norm_f.weight.fill_(1.0)

    def forward(self, ids, scan_impl="auto", scan_cfg=(32, 32, 1, 1)):
        """ids [b, L] int64 -> logits [b, L, vocab] (dtype of the autocast)."""
        bb = self.backbone
        res = bb.embeddings(ids).float()                       # residual stream in fp32
        for blk in bb.layers:
            res = res + blk.mixer(blk.norm(res), scan_impl, scan_cfg).float()
        hf = bb.norm_f(res)
        return F.linear(hf, bb.embeddings.weight)              # tied LM head

    def param_groups(self, weight_decay):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if name.endswith("A_log") or name.endswith(".D") or name.endswith("bias") \
                    or "norm" in name or "embeddings" in name:
                no_decay.append(p)
            else:
                decay.append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]


def hf_config(cfg: Cfg, dtype="float16"):
    """config.json for transformers' MambaForCausalLM (fields of MAMBA.md 3)."""
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_inner,
        "state_size": cfg.d_state,
        "num_hidden_layers": cfg.n_layer,
        "conv_kernel": cfg.d_conv,
        "expand": cfg.expand,
        "time_step_rank": cfg.dt_rank,
        "layer_norm_epsilon": cfg.eps,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "tie_word_embeddings": True,
        "rescale_prenorm_residual": False,
        "time_step_scale": 1.0,
        "time_step_min": 0.001,
        "time_step_max": 0.1,
        "time_step_init_scheme": "random",
        "time_step_floor": 0.0001,
        "initializer_range": 0.1,
        "use_cache": True,
        "use_mambapy": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "dtype": dtype,
    }


def export_hf(model: ByteMamba, out_dir, dtype=torch.float16, metadata=None):
    """Writes out_dir/config.json and out_dir/model.safetensors (all tensors
    in `dtype`). Returns the safetensors path."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt"}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    path = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, path, metadata=meta)
    dname = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model.cfg, dname), f, indent=2)
        f.write("\n")
    return path


def load_hf(model_dir, device="cpu"):
    """Loads a directory written by export_hf (or any HF Mamba-1 checkpoint
    with a tied head) into a float32 ByteMamba."""
    from safetensors.torch import load_file
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    rank = c["time_step_rank"]
    cfg = Cfg(d_model=c["hidden_size"], n_layer=c["num_hidden_layers"], d_state=c["state_size"],
              expand=c.get("expand", 2), d_conv=c["conv_kernel"],
              dt_rank=0 if rank == "auto" else int(rank), vocab=c["vocab_size"], eps=c["layer_norm_epsilon"])
    model = ByteMamba(cfg)
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.to(device)


def n_params(model):
    return sum(p.numel() for p in model.parameters())
