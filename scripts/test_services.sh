#!/usr/bin/env bash
# Make sure the real parts the tests talk to are present: a Redis on 127.0.0.1:6379 (started if none answers),
# Prometheus' promtool/server (Debian package `prometheus`) for the Prometheus kit tests, and Debian's `chromium`
# (driven by Playwright) for the web page's browser test.
set -u
if ! (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "test services: no Redis on 127.0.0.1:6379, starting one"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
    for _ in $(seq 1 50); do
      (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break
      sleep 0.1
    done
  else
    echo "test services: no Redis on 127.0.0.1:6379 and no redis-server installed (apt-get install redis-server)" >&2
  fi
fi
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test services: installing Debian's prometheus package (promtool + server)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 \
      || echo "test services: could not install prometheus; its tests will skip (or fail under CI=true)" >&2
    # The package's service is not wanted: tests start their own server on a free port.
    pkill -x prometheus >/dev/null 2>&1 || true
  else
    echo "test services: promtool not found; Prometheus kit tests will skip (or fail under CI=true)" >&2
  fi
fi
if ! command -v amtool >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test services: installing Debian's prometheus-alertmanager package (amtool)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager) >/dev/null 2>&1 \
      || echo "test services: could not install prometheus-alertmanager; its test will skip (or fail under CI=true)" >&2
  else
    echo "test services: amtool not found; the Alertmanager config test will skip (or fail under CI=true)" >&2
  fi
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test services: installing Debian's chromium package (the web page's browser test)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
      || echo "test services: could not install chromium; the browser test will skip (or fail under CI=true)" >&2
  else
    echo "test services: /usr/bin/chromium not found; the browser test will skip (or fail under CI=true)" >&2
  fi
fi
exit 0
