#!/bin/sh
# Container entrypoint: create the node in $IDR_DATA/node on first start (from IDR_PREFIX and
# IDR_ADMIN_SECRET, or IDR_ADMIN_SECRET_FILE), then serve it in the foreground. Arguments are
# passed to `idr serve` (e.g. --workers 2). Listen addresses: IDR_HTTPS, IDR_HTTP, IDR_NATIVE.
set -eu
node="${IDR_DATA:?}/node"
if [ ! -f "$node/idr.toml" ]; then
  : "${IDR_PREFIX:?first start: set IDR_PREFIX (the prefix this node is home to)}"
  if [ -n "${IDR_ADMIN_SECRET_FILE:-}" ]; then
    IDR_ADMIN_SECRET=$(cat "$IDR_ADMIN_SECRET_FILE")
  fi
  : "${IDR_ADMIN_SECRET:?first start: set IDR_ADMIN_SECRET or IDR_ADMIN_SECRET_FILE}"
  idr init --data "$node" --prefix "$IDR_PREFIX" --admin-secret "$IDR_ADMIN_SECRET" \
    --https "${IDR_HTTPS:-0.0.0.0:8443}" --http "${IDR_HTTP:-0.0.0.0:8000}" \
    --native "${IDR_NATIVE:-0.0.0.0:2641}"
fi
exec idr serve --data "$node" "$@"
