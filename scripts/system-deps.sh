#!/usr/bin/env bash
# Debian packages the test suite needs (real shells, a real terminal, a real browser). Installed only when missing,
# and only when we are root (CI runs as root); otherwise the tests that need a missing program say so and skip.
# Add a package here when a test needs a new program: `command name` -> `package name`.
set -euo pipefail
declare -A need=( [tmux]=tmux [vim]=vim [zsh]=zsh [fish]=fish [chromium]=chromium )
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "system-deps: missing ${missing[*]} (not root: not installing)" >&2; exit 0; fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
