#!/usr/bin/env bash
# bench/gpu/build_mamba_ssm.sh SDIST_DIR DEST - the peer for the GPU
# benchmarks: mamba_ssm and causal-conv1d built from their unmodified PyPI
# source packages on the GPU machine (which has no network), forward only,
# for sm_90.  Prints the PYTHONPATH to use on its last line.
#
#   SDIST_DIR  holds mamba_ssm-2.3.2.post1.tar.gz and causal_conv1d-1.7.0.tar.gz
#              (fetched on a machine with PyPI: bench/gpu/fetch_mamba_ssm.sh)
#   DEST       build folder; a finished build there is reused (a second call
#              on a warm machine costs nothing)
#
# What is changed in the unpacked sources, and why (MAMBA.md section 6):
#   - setup.py's -gencode list becomes sm_90 only: nvcc 13 rejects the old
#     architectures it lists, and only Hopper is timed;
#   - mamba_ssm's backward .cu files are not compiled and its backward entry
#     raises instead: only the forward is timed, and it halves the build.
# Then `python3 setup.py build_ext --inplace` for both, in parallel.  Needs
# torch with CUDA, nvcc, and about 60-90 s on 16 cores.
# Status 2026-12-07: written, the source patch checked on the sdists here; not
# yet run on a GPU (no device time left): gpu_check.sh uses it only when .peer/
# is carried.
set -euo pipefail

sdists=$(cd "${1:?usage: build_mamba_ssm.sh SDIST_DIR DEST}" && pwd)
dest=${2:?usage: build_mamba_ssm.sh SDIST_DIR DEST}
MAMBA=mamba_ssm-2.3.2.post1
CONV=causal_conv1d-1.7.0
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
stamp=$dest/built.ok

if [ ! -f "$stamp" ]; then
    rm -rf "${dest:?}/$MAMBA" "${dest:?}/$CONV"
    tar -xzf "$sdists/$MAMBA.tar.gz" -C "$dest"
    tar -xzf "$sdists/$CONV.tar.gz" -C "$dest"
    python3 - "$dest/$MAMBA" "$dest/$CONV" <<'PY'
import pathlib, re, sys
SM90 = '    cc_flag = [f for f in cc_flag if f != "-gencode" and not f.startswith("arch=")] + ["-gencode", "arch=compute_90,code=sm_90"]\n'
for root in sys.argv[1:]:
    p = pathlib.Path(root, "setup.py")
    s = p.read_text()
    anchor = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
    assert s.count(anchor) == 1, f"{p}: gencode anchor not found"
    s = s.replace(anchor, SM90 + anchor)
    if "mamba_ssm" in root:
        n = len(re.findall(r'^\s*"csrc/selective_scan/selective_scan_bwd_[a-z0-9_]+\.cu",\n', s, re.M))
        assert n == 6, f"{p}: expected 6 backward sources, found {n}"
        s = re.sub(r'^\s*"csrc/selective_scan/selective_scan_bwd_[a-z0-9_]+\.cu",\n', "", s, flags=re.M)
        cpp = pathlib.Path(root, "csrc/selective_scan/selective_scan.cpp")
        c = cpp.read_text()
        call = "selective_scan_bwd_cuda<input_t, weight_t>(params, stream);"
        assert c.count(call) == 1, f"{cpp}: backward call not found"
        cpp.write_text(c.replace(call, 'TORCH_CHECK(false, "selective_scan backward is not built (benchmark build)");'))
    p.write_text(s)
print("patched:", ", ".join(sys.argv[1:]))
PY
    build() {  # build DIR FORCE_VAR
        (cd "$1" && env "$2=TRUE" TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="${MAX_JOBS:-8}" \
            python3 setup.py build_ext --inplace >build.log 2>&1) ||
            { tail -30 "$1/build.log" >&2; echo "build_mamba_ssm: build of $1 failed" >&2; return 1; }
    }
    build "$dest/$CONV" CAUSAL_CONV1D_FORCE_BUILD &
    p1=$!
    build "$dest/$MAMBA" MAMBA_FORCE_BUILD &
    p2=$!
    wait $p1 && wait $p2
    touch "$stamp"
fi

# Check before use: the selective scan in bf16 against a float64 reference
# computed here (not mamba_ssm's own reference), and the causal conv in fp32.
PYTHONPATH="$dest/$MAMBA:$dest/$CONV${PYTHONPATH:+:$PYTHONPATH}" python3 - <<'PY' >&2
import torch, torch.nn.functional as F
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
from causal_conv1d import causal_conv1d_fn
g = torch.Generator().manual_seed(0)
Bt, E, N, L = 2, 64, 16, 300
u = torch.randn(Bt, E, L, generator=g); dt = torch.randn(Bt, E, L, generator=g) * 0.5
A = -torch.rand(E, N, generator=g) - 0.1; Bm = torch.randn(Bt, N, L, generator=g)
Cm = torch.randn(Bt, N, L, generator=g); D = torch.randn(E, generator=g); z = torch.randn(Bt, E, L, generator=g)
db = torch.randn(E, generator=g) * 0.1
bf = lambda x: x.to(torch.bfloat16)
y = selective_scan_fn(bf(u).cuda(), bf(dt).cuda(), A.cuda(), bf(Bm).cuda(), bf(Cm).cuda(), D.cuda(), bf(z).cuda(),
                      db.cuda(), delta_softplus=True).float().cpu()
# float64 reference on the bf16-rounded inputs (A, D, the Δ bias stay fp32)
u64, dt64, B64, C64, z64 = (bf(x).double() for x in (u, dt, Bm, Cm, z))
delta = F.softplus(dt64 + db.double()[None, :, None])
h = torch.zeros(Bt, E, N, dtype=torch.float64); ys = []
for t in range(L):
    h = torch.exp(delta[:, :, t, None] * A.double()) * h + delta[:, :, t, None] * B64[:, None, :, t] * u64[:, :, t, None]
    ys.append((h * C64[:, None, :, t]).sum(-1))
ref = (torch.stack(ys, -1) + D.double()[None, :, None] * u64) * F.silu(z64)
err = float((y.double() - ref).abs().max() / ref.abs().max())
print(f"mamba_ssm selective_scan_fn bf16 vs float64: {err:.2e} of max|y|")
assert err < 1e-2, err
x = torch.randn(Bt, E, L, generator=g); w = torch.randn(E, 4, generator=g); b = torch.randn(E, generator=g)
yc = causal_conv1d_fn(x.cuda(), w.cuda(), b.cuda(), activation="silu").cpu()
rc = F.silu(F.conv1d(F.pad(x.double(), (3, 0)), w.double()[:, None, :], b.double(), groups=E))
errc = float((yc.double() - rc).abs().max() / rc.abs().max())
print(f"causal_conv1d_fn fp32 vs float64: {errc:.2e} of max|y|")
assert errc < 1e-5, errc
PY
echo "$dest/$MAMBA:$dest/$CONV"
