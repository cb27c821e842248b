# Tripwire worker image for compose.yaml (production shape).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY schemas schemas
COPY detectors detectors
COPY sinks sinks
COPY sdk sdk
COPY simulator simulator
COPY bench bench
COPY dashboards dashboards
RUN pip install --no-cache-dir .
USER nobody
ENV TRIPWIRE_DATA_DIR=/tmp/tripwire
ENTRYPOINT ["tripwire"]
CMD ["worker"]
