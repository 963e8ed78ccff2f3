#!/usr/bin/env bash
# Generates docs/ from the provider schema, templates/ and examples/ with
# tfplugindocs. With --check it renders into a temporary directory and fails if
# docs/ differs (stale docs). Needs bin/terraform-provider-agentlab and
# .tools/bin/terraform (make build tools).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# tfplugindocs looks the schema up as registry.terraform.io/hashicorp/<name>.
cat > "$tmp/tf.rc" <<RC
provider_installation {
  dev_overrides {
    "registry.terraform.io/hashicorp/agentlab" = "$root/bin"
  }
  direct {}
}
RC
printf 'terraform {\n  required_providers {\n    agentlab = { source = "hashicorp/agentlab" }\n  }\n}\n' > "$tmp/main.tf"
(cd "$tmp" && TF_CLI_CONFIG_FILE="$tmp/tf.rc" "$root/.tools/bin/terraform" providers schema -json > schema.json 2> schema.err) ||
  { cat "$tmp/schema.err"; exit 1; }
out=docs
if [ "${1:-}" = "--check" ]; then
  # tfplugindocs resolves --rendered-website-dir against the provider directory,
  # so the scratch copy must be a relative path inside the repository.
  out=.docs-check
  rm -rf "$out"
  trap 'rm -rf "$tmp" "$root/.docs-check"' EXIT
fi
go run github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs@v0.25.0 generate \
  --provider-name agentlab --providers-schema "$tmp/schema.json" --rendered-website-dir "$out" > "$tmp/gen.log" 2>&1 ||
  { cat "$tmp/gen.log"; exit 1; }
if [ "${1:-}" = "--check" ]; then
  if ! diff -ru docs "$out"; then
    echo "docs/ is stale: run 'make docs' and commit the result" >&2
    exit 1
  fi
fi
