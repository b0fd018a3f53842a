# eosdetect web service: docker build -t eosdetect . && docker run -p 8000:8000 eosdetect
# then open http://localhost:8000/ (the API schema is at /openapi.json).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY eosdetect ./eosdetect
# The package with its web extras. The networks run on LiteRT (ai-edge-litert), so TensorFlow is
# not installed (training needs it: ".[train]"); the bundled models are package data, so they come along.
RUN pip install ".[serve]" \
 && useradd --create-home --uid 10001 eosdetect

USER eosdetect
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["eosdetect", "serve", "--host", "0.0.0.0", "--port", "8000"]
