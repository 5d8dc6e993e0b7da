# kg for the compose files: talks to Ollama or vLLM and PostgreSQL; no embedded model inside.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kg ./kg
COPY cli ./cli
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home kg
USER kg
ENTRYPOINT ["kg"]
