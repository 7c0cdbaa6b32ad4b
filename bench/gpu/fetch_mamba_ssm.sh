#!/usr/bin/env bash
# bench/gpu/fetch_mamba_ssm.sh [DIR] - on a machine with PyPI (not the GPU
# machine): download the unmodified source packages of the benchmark's peer,
# mamba_ssm 2.3.2.post1 and causal-conv1d 1.7.0, into DIR (default
# .peer/, git-ignored; name it in the device tool's carry).
# Their setup.py imports torch only to read metadata; a stub torch package
# (written to a temporary folder, never installed) answers those imports, so
# this machine needs neither torch nor a GPU.  bench/gpu/build_mamba_ssm.sh
# builds them on the GPU machine.
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")/../.." && pwd)/.peer}
mkdir -p "$dir"
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/torch/utils"
cat >"$stub/torch/__init__.py" <<'PY'
__version__ = "2.11.0"
class _Version:
    cuda = "13.0"
    hip = None
    git_version = "0"
version = _Version()
PY
: >"$stub/torch/utils/__init__.py"
cat >"$stub/torch/utils/cpp_extension.py" <<'PY'
CUDA_HOME = HIP_HOME = ROCM_HOME = None
IS_HIP_EXTENSION = False
class BuildExtension: pass
def CUDAExtension(*a, **k): return None
def CppExtension(*a, **k): return None
PY
python3 -m pip install -q wheel packaging >/dev/null 2>&1 || true  # their setup.py imports them
for p in mamba_ssm==2.3.2.post1 causal-conv1d==1.7.0; do
    PYTHONPATH=$stub MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
        python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$dir" "$p"
done
ls -l "$dir"
