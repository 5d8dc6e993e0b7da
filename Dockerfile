# kg for the compose files: talks to Ollama or vLLM and PostgreSQL; no embedded model inside.
# Everything installed is pinned: the base image by its full tag, Python packages by
# requirements.txt (exact versions of the tested environment; scripts/lock_requirements.py).
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Tesseract reads images and scanned PDF pages (English; add tesseract-ocr-LANG packs for
# KG_OCR_LANGUAGES). Debian's package, from the base image's pinned release.
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
# --no-deps: nothing unpinned comes in; `pip check` below proves the list is complete.
RUN pip install --no-deps -r requirements.txt

COPY pyproject.toml README.md ./
COPY kg ./kg
COPY migrations ./migrations
RUN pip install --no-deps . && pip check && useradd --create-home kg

USER kg
ENV KG_HOME=/home/kg/.kg
ENTRYPOINT ["kg"]
