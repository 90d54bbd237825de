#!/usr/bin/env bash
# Installs packed tarballs into an empty npm project (no workspace, no
# monorepo conditions; dependencies from the npm registry) and runs the smoke
# programs there. Prints the install size and package count of a client-only
# (identity + transport) install first.
#   scripts/release/smoke/run.sh <tarball-dir>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tarballs="$(cd "$1" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/weave-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
npm_install() { npm install --no-audit --no-fund --loglevel=error "$@"; }

# 1. identity + transport only: what a client-only user installs.
mkdir "$work/client" && cd "$work/client"
echo '{ "name": "weave-smoke-client", "private": true, "type": "module" }' > package.json
npm_install "$tarballs"/weave-identity-*.tgz "$tarballs"/weave-transport-*.tgz
count="$(npm ls --all --parseable | tail -n +2 | sort -u | wc -l)"
echo "client-only install (identity + transport): $(du -sh node_modules | cut -f1) in node_modules, $count packages"
if [ -e node_modules/fastify ]; then echo "FAIL: a client-only install brought fastify" >&2; exit 1; fi
cp "$here/identity-transport.mjs" . && node identity-transport.mjs

# 1b. an A2A client: identity, authz, transport and a2a only. The package's main entry holds the
#     server too, so fastify is a peer npm must install (an optional one left it out: the import failed).
mkdir "$work/a2a-client" && cd "$work/a2a-client"
echo '{ "name": "weave-smoke-a2a-client", "private": true, "type": "module" }' > package.json
npm_install "$tarballs"/weave-identity-*.tgz "$tarballs"/weave-authz-*.tgz "$tarballs"/weave-transport-*.tgz "$tarballs"/weave-a2a-*.tgz
node --input-type=module -e 'const m = await import("@weave/a2a");
  if (typeof m.A2AClient !== "function") { console.error("FAIL: @weave/a2a has no A2AClient"); process.exit(1); }
  console.log("ok: @weave/a2a loads from an install of its own dependencies and peers")'

# 2. all five packages: two agents with a policy.
mkdir "$work/agents" && cd "$work/agents"
echo '{ "name": "weave-smoke-agents", "private": true, "type": "module" }' > package.json
npm_install "$tarballs"/weave-*.tgz zod
cp "$here/two-agents.mjs" . && node two-agents.mjs
# One command line tool, `weave` (from @weave/cli); the libraries install none.
node -e 'for (const p of ["identity", "authz", "transport", "a2a", "agent"]) { const b = require(`@weave/${p}/package.json`).bin;
  if (b) { console.error(`FAIL: @weave/${p} installs a command: ${JSON.stringify(b)}`); process.exit(1); } }'

# 2b. the packages' declarations as a TypeScript consumer compiles them: strict, exact optional
#     properties, no skipLibCheck, under nodenext and bundler resolution (TypeScript and Node's
#     types at the versions the repository builds with).
ts_version="$(node -p 'require("'"$here"'/../../../node_modules/typescript/package.json").version')"
types_node_version="$(node -p 'require("'"$here"'/../../../node_modules/@types/node/package.json").version')"
npm_install --save-dev "typescript@$ts_version" "@types/node@$types_node_version"
mkdir src && cp "$here/consumer-types.ts" src/
for resolution in nodenext bundler; do
  module="$([ "$resolution" = nodenext ] && echo nodenext || echo preserve)"
  printf '{ "compilerOptions": { "target": "ES2022", "module": "%s", "moduleResolution": "%s", "strict": true, "exactOptionalPropertyTypes": true, "noUncheckedIndexedAccess": true, "verbatimModuleSyntax": true, "skipLibCheck": false, "noEmit": true, "types": ["node"] }, "include": ["src"] }\n' "$module" "$resolution" > "tsconfig.$resolution.json"
  npx --no-install tsc -p "tsconfig.$resolution.json" || { echo "FAIL: the packages' declarations do not compile for a consumer with moduleResolution $resolution" >&2; exit 1; }
done
echo "ok: the declarations compile for a strict TypeScript $ts_version consumer (nodenext and bundler)"

# 3. the weave CLI from its tarball: --version, and the README's exit codes.
want="$(node -p 'require("@weave/cli/package.json").version')"
got="$(npx --no-install weave --version)"
[ "$got" = "$want" ] || { echo "FAIL: weave --version printed '$got', want '$want'" >&2; exit 1; }
printf 'version: 2\n' > bad-policy.yaml
printf 'name: smoke\nauthz: { policyFile: bad-policy.yaml }\n' > agent.yaml
set +e; npx --no-install weave validate agent.yaml 2> validate.err; code=$?; set -e
[ "$code" = 2 ] || { echo "FAIL: weave validate on a bad policy file exited $code, want 2" >&2; cat validate.err >&2; exit 1; }
echo "ok: weave --version is $got; weave validate on a bad policy file exits 2 ($(head -c 60 validate.err)…)"

# 4. the README's five-minute tutorial, run from its own code blocks in an empty folder.
mkdir "$work/tutorial"
node "$here/tutorial.mjs" "$tarballs" "$work/tutorial"

# 5. the README's "Securing an existing @a2a-js/sdk agent", the same way: an SDK agent behind
#    @weave/a2a/a2a-sdk, called by an allowed and a denied skill.
mkdir "$work/sdk-agent"
node "$here/tutorial.mjs" "$tarballs" "$work/sdk-agent" '## Securing an existing @a2a-js/sdk agent'
echo "smoke: ok"
