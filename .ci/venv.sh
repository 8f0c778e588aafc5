# Sourced by CI scripts: the shared Python venv (the same one .ci/schemathesis.sh uses), with
# the packages a script needs installed on first use. `ci_venv PKG...` sets $py.
venv="${CI_CACHE:-$HOME/.cache/finpass-gateway-ci}/venv"
py="$venv/bin/python"
ci_venv() {
  [ -x "$py" ] || python3 -m venv "$venv"
  local missing=()
  for pkg in "$@"; do "$venv/bin/pip" show -q "$pkg" > /dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    timeout 600 "$venv/bin/pip" install --quiet "${missing[@]}"
  fi
}
