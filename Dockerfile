# docker-hygiene-exporter: a small image that runs as a non-root user on a read-only root
# filesystem.
#
#   docker build -t docker-hygiene-exporter .
#   docker run -d --name docker-hygiene-exporter --read-only --cap-drop ALL \
#     --security-opt no-new-privileges -p 10221:10221 \
#     -e DOCKER_HOST=tcp://socket-proxy:2375 docker-hygiene-exporter
#
# BASE is any image with Python 3.11 or newer and its venv module (python:3.12-slim,
# debian:bookworm with python3-venv, ...). To build without a package index, put wheels of
# the dependencies and of setuptools (the build backend) in wheels/ in the build context
# first; pip then installs from there only (--no-index).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
WORKDIR /src
COPY . .
RUN python3 -m venv /opt/docker-hygiene-exporter \
 && if [ -d wheels ]; then set -- --no-index --find-links wheels; fi \
 && /opt/docker-hygiene-exporter/bin/pip install --no-cache-dir --disable-pip-version-check \
        "$@" . \
 && install -m 0644 deploy/healthcheck.py /opt/docker-hygiene-exporter/healthcheck.py \
 && /opt/docker-hygiene-exporter/bin/docker-hygiene-exporter --version

FROM ${BASE}
COPY --from=build /opt/docker-hygiene-exporter /opt/docker-hygiene-exporter
# The only file the exporter writes is its state (drift-since times, registry documents), on
# a volume so the root filesystem can be read-only. Without a writable volume it keeps the
# state in memory and says so (docker_exporter_state_persistent 0).
RUN mkdir -p /var/lib/docker-hygiene-exporter \
 && chown 65532:65532 /var/lib/docker-hygiene-exporter \
 && chmod 0700 /var/lib/docker-hygiene-exporter
ENV PATH=/opt/docker-hygiene-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOCKER_HYGIENE_STATE_PATH=/var/lib/docker-hygiene-exporter/state.db
VOLUME /var/lib/docker-hygiene-exporter
# Numeric, so it needs no passwd entry. Mounting the Docker socket instead of using a socket
# proxy needs the socket's group too: --group-add $(stat -c %g /var/run/docker.sock).
USER 65532:65532
EXPOSE 10221
# Python asks /-/healthy (no curl in the image), on DOCKER_HYGIENE_WEB_LISTEN_ADDRESS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python3", "/opt/docker-hygiene-exporter/healthcheck.py"]
ENTRYPOINT ["docker-hygiene-exporter"]
