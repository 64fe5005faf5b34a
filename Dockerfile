# syntax=docker/dockerfile:1
# The bridge's container image. Two stages: the first installs the bridge and its dependencies
# into a virtualenv (/opt/bridge), the second copies that virtualenv onto a clean base (no
# compiler, no build tools, no pip) and runs it as a non-root user.
#
#   docker build -t <registry>/venue-bridge:0.1.0 .
#
# CI builds and runs it without Docker (`make image image-test`, .ci/image.sh): with Debian's
# buildah, on a base image made from Debian's packages, passed as PYTHON_IMAGE. Any base with
# `python3` (with its venv module) and `useradd` works.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# For builds without the package index (CI): PIP_NO_INDEX=1, PIP_FIND_LINKS=<a wheelhouse
# mounted into the build>. Unset, pip uses the index as usual.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# bridge/schemas is a symlink to the top-level schemas/: both are needed for the package.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY bridge ./bridge
# pip compiles every module to bytecode as it installs: the read-only root filesystem of the
# pod never needs a __pycache__ write. The lab (simulators, the dev Kafka broker and schema
# registry with their Maven launchers, `bridge demo`) is for developers: it is removed here.
RUN python3 -m venv /opt/bridge \
    && /opt/bridge/bin/pip install . \
    && cd /opt/bridge/lib/python3*/site-packages/bridge \
    && rm -rf dev \
    && /opt/bridge/bin/pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base's own pip (python:*-slim has one) goes too: nothing installs anything at run time.
RUN if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel; \
    fi \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bridge
COPY --from=build /opt/bridge /opt/bridge
# Numeric, so Kubernetes' runAsNonRoot can verify it (the chart runs as 10001:10001 too).
USER 10001:10001
EXPOSE 9108
ENTRYPOINT ["bridge"]
CMD ["run", "--config", "/etc/bridge/bridge.yaml"]
