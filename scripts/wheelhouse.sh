#!/usr/bin/env bash
# `make wheelhouse`: every wheel the image installs (CPU torch, the project's dependencies,
# their build tools) into ./wheelhouse/, so `docker build --network=none .` needs nothing else.
#
# The wheels are resolved by the image's own Python, in a container of PYTHON_IMAGE: an
# interpreter of another version (even 3.11.7 against Debian's 3.11.2) evaluates environment
# markers differently and leaves out wheels (redis needs async-timeout below 3.11.3). The
# host's pip configuration (its files, PIP_* variables and the local paths they name: a
# find-links folder, a file:// index, a CA bundle for a TLS-inspecting proxy) is passed in.
#
# Variables: PYTHON_IMAGE (the Dockerfile's base; default python:3.11-slim-bookworm),
# EXTRAS (e.g. gguf: compiles llama.cpp in the container, which then needs apt and a network),
# TORCH (torch==2.13.0), TORCH_INDEX_URL (where CPU torch comes from when pip's own sources
# have no +cpu build; default the PyTorch CPU index), DOCKER (default docker).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
EXTRAS=${EXTRAS:-}
TORCH=${TORCH:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
DOCKER=${DOCKER:-docker}

mkdir -p wheelhouse
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp pyproject.toml README.md "$stage/"
cp -r src "$stage/src"
find "$stage/src" -name __pycache__ -prune -exec rm -rf {} +

mounts=(-v "$stage:/stage:ro" -v "$PWD/wheelhouse:/wheelhouse")
envs=(-e HOME=/tmp/home -e "TORCH=$TORCH" -e "TORCH_INDEX_URL=$TORCH_INDEX_URL" -e "EXTRAS=$EXTRAS")
for name in $(compgen -e | grep '^PIP_' || true); do
  envs+=(-e "$name")
done
for file in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip"; do
  [ -e "$file" ] || continue
  target=$file
  case $file in "$HOME"/*) target=/tmp/home/${file#"$HOME"/} ;; esac
  mounts+=(-v "$file:$target:ro")
done
# local paths that the pip configuration names (find-links, file:// indexes, cert, constraint)
config=$(python3 -m pip config list 2>/dev/null || true)
for word in $(printf '%s\n' "$config" | tr "='\" " '\n\n\n\n'); do
  path=${word#file://}
  path=${path%/}
  # a file:// index's pages link to files beside its simple/ folder: mount the folder above
  case $word in file://*/simple | file://*/simple/) path=$(dirname "$path") ;; esac
  case $path in /*) [ -e "$path" ] && mounts+=(-v "$path:$path:ro") ;; esac
done

# the image's Python, a throwaway venv with its pip; wheels for what is sdist-only
# (jieba, the project itself) are built there too
script='
set -eu
python3 -m venv /tmp/venv
pip=/tmp/venv/bin/pip
$pip install --quiet --upgrade pip setuptools wheel  # legacy sdists (jieba) build with these
export PIP_DISABLE_PIP_VERSION_CHECK=1
torch_index=""
if ! $pip download --quiet --no-deps --no-index -d /tmp/probe "$TORCH" 2>/dev/null \
   || ! ls /tmp/probe/torch-*+cpu-*.whl >/dev/null 2>&1; then
  torch_index="--extra-index-url $TORCH_INDEX_URL"
fi
case ",$EXTRAS," in *,gguf,*)
  apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake g++ make >/dev/null
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF" ;;
esac
cp -r /stage /tmp/embedgate
spec=/tmp/embedgate
[ -n "$EXTRAS" ] && spec="/tmp/embedgate[$EXTRAS]"
# torch pinned in the same run, so the resolver never swaps in a CUDA build
$pip wheel --quiet --wheel-dir /wheelhouse $torch_index "$TORCH" "$spec" wheel
python3 -c "import platform; print(platform.python_version())" > /wheelhouse/PYTHON_VERSION
chown -R "$OWNER" /wheelhouse
'
echo "wheelhouse: resolving with the Python of $PYTHON_IMAGE" >&2
"$DOCKER" run --rm --network=host -e "OWNER=$(id -u):$(id -g)" "${mounts[@]}" "${envs[@]}" \
  "$PYTHON_IMAGE" sh -c "$script"

if ls wheelhouse/nvidia_* >/dev/null 2>&1; then
  echo "wheelhouse: a CUDA torch was resolved (nvidia-* wheels); set TORCH_INDEX_URL to a CPU index" >&2
  exit 1
fi
rm -f wheelhouse/embedgate-*.whl  # the image installs the project from its source
echo "wheelhouse: $(ls wheelhouse/*.whl | wc -l) wheels, $(du -sh wheelhouse | cut -f1), for Python $(cat wheelhouse/PYTHON_VERSION)" >&2
