# embedgate: non-root, CPU torch, nothing downloaded at run time (models are mounted; the
# bundled MiniLM ships inside the package).
#
# Online:      docker build -t embedgate .
# Air-gapped:  make wheelhouse            (on a connected machine: ./wheelhouse/, ~0.5 GB)
#              docker build --network=none -t embedgate .   (from the wheelhouse alone)
# Run:         docker run -p 8000:8000 -v embedgate:/var/lib/embedgate embedgate
#
# Build arguments:
#   PYTHON_IMAGE     the base (a Python 3.11 with venv); the wheelhouse must be made for the
#                    same image (make wheelhouse PYTHON_IMAGE=...)
#   EXTRAS           pip extras, e.g. "gguf" (llama.cpp; online builds compile it here)
#   TORCH            the pinned torch; TORCH_INDEX_URL where an online build gets CPU torch
#   EXTRA_CA_CERTS   PEM text of extra CA certificates for an online build behind a
#                    TLS-inspecting proxy: --build-arg EXTRA_CA_CERTS="$(cat corp-ca.pem)"
#                    (used by the build stage only; the final image does not carry it)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRA_CA_CERTS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/embedgate
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md /src/
COPY src /src/src
# With wheels in ./wheelhouse: from them alone (--no-index; works with --network=none).
# Without: from the indexes, CPU torch first and pinned (an unpinned torch pulls CUDA).
RUN set -eu; \
    pip=/opt/embedgate/bin/pip; \
    spec=/src; [ -z "$EXTRAS" ] || spec="/src[$EXTRAS]"; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        made_for=$(cat /wheelhouse/PYTHON_VERSION 2>/dev/null || echo unknown); \
        here=$(python3 -c 'import platform; print(platform.python_version())'); \
        if [ "$made_for" != "$here" ]; then \
            echo "the wheelhouse was made for Python $made_for, this image has $here:" \
                 "run make wheelhouse PYTHON_IMAGE=<this base>" >&2; exit 1; \
        fi; \
        $pip install --no-index --find-links /wheelhouse "$TORCH" "$spec"; \
    else \
        if [ -n "$EXTRA_CA_CERTS" ]; then \
            cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem 2>/dev/null || true; \
            printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem; \
            export PIP_CERT=/tmp/ca.pem; \
        fi; \
        case ",$EXTRAS," in *,gguf,*) \
            apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake g++ make; \
            export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF";; \
        esac; \
        $pip install --extra-index-url "$TORCH_INDEX_URL" "$TORCH"; \
        $pip install "$spec" "$TORCH"; \
    fi; \
    $pip uninstall --yes pip >/dev/null; \
    find /opt/embedgate -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/embedgate /opt/embedgate
RUN groupadd --system --gid 10001 embedgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/embedgate --create-home \
        --shell /usr/sbin/nologin embedgate \
    && chmod 0700 /var/lib/embedgate
# In a container the port is published by the runtime, so listen on every interface (auth
# stays on: every route but /health and /ready needs a key). Bare metal keeps loopback.
ENV PATH=/opt/embedgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    EMBEDGATE_HOST=0.0.0.0 EMBEDGATE_PORT=8000 \
    EMBEDGATE_DATA_DIR=/var/lib/embedgate
USER 10001:10001
WORKDIR /var/lib/embedgate
VOLUME ["/var/lib/embedgate"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; port = os.environ.get('EMBEDGATE_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2).status != 200)"]
ENTRYPOINT ["embedgate", "serve"]
