#!/bin/sh
# Type-checks dashboards/*.json against @grafana/schema's Dashboard type, then the project rules
# of lint.mjs. Needs node (>= 18) and npm; installs the pinned packages of package-lock.json.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
node generate.mjs
node lint.mjs
./node_modules/.bin/tsc -p tsconfig.json
echo "schema-check: dashboards ok"
