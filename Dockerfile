# biomaj in one container: every actor in one process (`biomaj serve --all`).
# Data, configuration and the SQLite store live in the /var/lib/biomaj volume; on first start
# the entrypoint runs `biomaj init` there. Scale out with `serve --role download` containers
# sharing the volume and pointing RABBITMQ_HOST / REDIS_HOST at the brokers.
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /var/lib/biomaj --uid 1000 biomaj

WORKDIR /opt/biomaj
COPY pyproject.toml README.md ./
COPY biomaj ./biomaj
RUN pip install --no-cache-dir '.[fast]'
COPY docker/entrypoint.sh /usr/local/bin/biomaj-entrypoint

USER biomaj
ENV BIOMAJ_CONFIG=/var/lib/biomaj/config.yml
VOLUME ["/var/lib/biomaj"]
EXPOSE 5000 2121
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEB_PORT', '5000'), timeout=4)"
ENTRYPOINT ["biomaj-entrypoint"]
CMD ["serve", "--all"]
