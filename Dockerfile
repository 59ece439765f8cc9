# biomaj in a container: every actor in one process by default (`biomaj serve --all`), or some roles
# per container (`serve --role download`) over RabbitMQ and Redis (docker-compose.yml).
# Data, bank files, logs and the SQLite store live in the /var/lib/biomaj volume; on first start the
# entrypoint runs `biomaj init` there (never again: a volume that holds a config.yml is kept as is).
#
#   docker build -t biomaj .                      (or: podman build --format docker -t biomaj .)
#   docker run -d -p 5000:5000 -v biomaj:/var/lib/biomaj biomaj
#   docker exec CONTAINER biomaj ctl update example --follow
#
# Any base with Python >= 3.11.4 and its venv module will do:
#   --build-arg PYTHON_IMAGE=python:3.12-slim        (docker/smoke.sh builds on Debian trixie's 3.13)
ARG PYTHON_IMAGE=python:3.13-slim

# --- build: biomaj and its dependencies in a virtual environment, nothing else ------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY biomaj ./biomaj
RUN python3 -m venv /opt/biomaj \
 && /opt/biomaj/bin/pip install --quiet '.[fast]' \
 && /opt/biomaj/bin/pip uninstall --quiet --yes pip \
 && /opt/biomaj/bin/biomaj --version

# --- the image: the base, the virtual environment, a user, two scripts ----------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 1000 biomaj \
 && useradd --uid 1000 --gid biomaj --home-dir /var/lib/biomaj --no-create-home --shell /usr/sbin/nologin biomaj \
 && mkdir -p /var/lib/biomaj \
 && chown biomaj:biomaj /var/lib/biomaj
COPY --from=build /opt/biomaj /opt/biomaj
COPY docker/entrypoint.sh /usr/local/bin/biomaj-entrypoint
COPY docker/healthcheck.py /usr/local/lib/biomaj-healthcheck.py

ENV PATH=/opt/biomaj/bin:$PATH \
    BIOMAJ_CONFIG=/var/lib/biomaj/config.yml \
    PYTHONUNBUFFERED=1
USER biomaj
WORKDIR /var/lib/biomaj
VOLUME ["/var/lib/biomaj"]
EXPOSE 5000 2121
# GET /healthz of this container's web actor (host and port from config.yml and WEB_PORT).
# A container without the web role (serve --role download) has no health endpoint: disable it there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "/usr/local/lib/biomaj-healthcheck.py"]
# The entrypoint execs biomaj, so biomaj is PID 1 and gets SIGTERM itself: it unregisters the node,
# gives in-flight work node.stop_grace seconds (10) and exits 0. Give `docker stop` more than that
# (`--time 30`, compose: stop_grace_period) when downloads may be running.
STOPSIGNAL SIGTERM
ENTRYPOINT ["biomaj-entrypoint"]
CMD ["serve", "--all"]
