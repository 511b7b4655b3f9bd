# embedgate: slim, non-root, CPU torch by default. Nothing is downloaded at run time: models
# are mounted (HF_HUB_OFFLINE=1), the bundled MiniLM ships inside the package.
#   docker build -t embedgate .
#   docker run -p 8000:8000 -e EMBEDGATE_HOST=0.0.0.0 -v embedgate:/var/lib/embedgate embedgate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    EMBEDGATE_DATA_DIR=/var/lib/embedgate

# CPU torch first and pinned: an unpinned torch pulls gigabytes of CUDA libraries
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /var/lib/embedgate --create-home embedgate
USER embedgate
WORKDIR /var/lib/embedgate
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status != 200)"

ENTRYPOINT ["embedgate", "serve"]
