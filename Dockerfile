# syntax=docker/dockerfile:1
# The bridge's container image. Two stages: wheels are built in the first, the second only
# installs them (no compiler, no build tools, no pip left) and runs as a non-root user.
#
#   docker build -t <registry>/venue-bridge:0.1.0 .
#
# This project's CI has no Docker engine, so the image is not built there: tests check this
# file's promises (stages, user, entry point matching the Helm chart) and that the wheel it
# installs carries the Avro schemas and the `bridge` command.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# bridge/schemas is a symlink to the top-level schemas/: both are needed for the wheel.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY bridge ./bridge
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels bridge \
    && pip uninstall --yes pip setuptools wheel \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bridge
# The lab (simulators, dev broker and registry launchers, the demo) is not the service.
RUN python -c "import bridge, pathlib, shutil; shutil.rmtree(pathlib.Path(bridge.__file__).parent / 'dev')"
# Numeric, so Kubernetes' runAsNonRoot can verify it (the chart runs as 10001:10001 too).
USER 10001:10001
EXPOSE 9108
ENTRYPOINT ["bridge"]
CMD ["run", "--config", "/etc/bridge/bridge.yaml"]
