# Sourced by ./run and ./test: create .venv with Python 3.11+ and install the package (and dev deps when $1 = dev).
# Re-installs only when pyproject.toml changed since the last install.
py=""
for c in python3.13 python3.12 python3.11 python3; do
  if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then py=$c; break; fi
done
[ -n "$py" ] || { echo "Python 3.11+ is required" >&2; exit 1; }
extra=""; [ "${1:-}" = dev ] && extra="[dev]"
stamp=".venv/.installed$extra"
if [ ! -x .venv/bin/python ]; then "$py" -m venv .venv; fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c 'import vibest_pty, msgpack' || { echo "install failed" >&2; exit 1; }
  touch "$stamp"
fi
