# Tripwire worker image for compose.yaml (production shape). Built the way a user installs:
# the two wheels (tripwire-sdk, tripwire) from this repository, installed at the versions
# constraints.txt pins, with no source tree in the final image.
FROM python:3.11-slim AS wheels
# A C compiler for the compiled detector modules (compile_detectors.py); the final image gets
# the built wheel only. Without it the wheel would hold the pure-Python modules alone.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py compile_detectors.py MANIFEST.in README.md constraints.txt ./
COPY sdk sdk
COPY schemas schemas
COPY streams streams
COPY detectors detectors
COPY sinks sinks
COPY simulator simulator
COPY bench bench
COPY dashboards dashboards
RUN pip wheel --no-cache-dir --no-deps -w /wheels ./sdk \
 && TRIPWIRE_SDK_BY_VERSION=1 pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
COPY --from=wheels /wheels /wheels
COPY constraints.txt /wheels/constraints.txt
RUN pip install --no-cache-dir -c /wheels/constraints.txt --find-links /wheels tripwire \
 && mkdir -p /var/lib/tripwire && chown nobody /var/lib/tripwire
USER nobody
WORKDIR /var/lib/tripwire
ENV TRIPWIRE_DATA_DIR=/var/lib/tripwire
ENTRYPOINT ["tripwire"]
CMD ["worker"]
