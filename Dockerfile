# One image for every role of the system: api, trainer, pretrain and simulator.
FROM python:3.11-slim

# PyTorch's CPU wheels; the default PyPI wheel of torch brings several GB of CUDA packages.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    IALP_DATA_DIR=/data \
    IALP_CACHE_DIR=/var/cache/ialp

WORKDIR /srv/ialp
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY app ./app
COPY policy ./policy
COPY trainer ./trainer
COPY simulator_client ./simulator_client
COPY ialp ./ialp
RUN pip install ".[embed]" && useradd --create-home --uid 10001 ialp \
    && mkdir -p /var/cache/ialp /checkpoints /state && chown -R ialp /var/cache/ialp /checkpoints /state
USER ialp
EXPOSE 8000
ENTRYPOINT ["ialp"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
