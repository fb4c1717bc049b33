# The baseline-operator image: a virtualenv built in one stage, copied into a clean one.
# The runtime runs as an unprivileged user and needs no shell and no writable root
# filesystem (the Deployment mounts an emptyDir at /tmp, the only writable place).
#
#   docker build -t baseline-operator:0.1.0 .
#
# Both stages use the same base image, so the virtualenv's interpreter path
# (/usr/local/bin/python3.11) exists in the final stage. Pin it by digest in your
# registry mirror for reproducible builds.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Not editable and without extras (no `demo`, no `test`): the package is copied into the
# virtualenv with its runtime dependencies only, and pip compiles its bytecode here, since
# nothing can be written at runtime. tests/unit/test_runtime_install.py installs it the same
# way and runs the CLI as an unprivileged user; .ci/hadolint lints this file.
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="baseline-operator" \
      org.opencontainers.image.description="Makes every selected namespace converge on a declared security posture" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
ENTRYPOINT ["baseline-operator"]
CMD ["run"]
