# ultra-signals runner image: slim, non-root, the CLI as entrypoint, healthy while the exporter answers.
#
#   docker build -t ultra-signals:$(python -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])") .
#   docker run --rm ultra-signals:<version> shadow --duration 120         # the embedded default, no network needed
#
# Settings: the packaged defaults (inside the wheel, ultra_signals/defaults/) apply until you mount your own
# /app/settings.yaml (and /app/profiles/; `ultra-signals init DIR` writes editable copies), and give secrets
# through the environment or ULTRA_SIGNALS_SECRETS_FILE (never bake them into an image).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ultra_signals ./ultra_signals
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ULTRA_SIGNALS_METRICS__HOST=0.0.0.0
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin ultra
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
# The same exact versions as CI: the lock file constrains every dependency of the wheel.
RUN pip install --no-cache-dir -c /tmp/requirements.lock /wheels/*.whl && rm -rf /wheels /tmp/requirements.lock
WORKDIR /app
RUN mkdir -p /app/var /app/reports && chown -R ultra:ultra /app/var /app/reports
USER ultra
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('ULTRA_SIGNALS_METRICS__PORT', '9108'), timeout=4)"]
ENTRYPOINT ["ultra-signals"]
CMD ["shadow", "--duration", "120"]
