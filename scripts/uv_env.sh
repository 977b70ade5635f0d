# Sourced by setup.sh, lock.sh and latest.sh: the pinned uv installer, and this machine's pip
# package sources handed to it (uv does not read pip's configuration; local wheel mirrors, such
# as the one holding the pinned torch/torchvision builds, are found through it).
UV_VERSION=0.13.9

uv_bootstrap() {  # uv_bootstrap DIR: install uv into DIR (once) and set $UV
  local dir=$1 python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null 2>&1 || python=python3
  UV="$dir/bin/uv"
  if [ ! -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    "$python" -m pip install --quiet --disable-pip-version-check --target "$dir" "uv==$UV_VERSION" \
      2>&1 | grep -v -e "^WARNING: Location" -e "Running pip as the 'root' user" || true
  fi
  [ -x "$UV" ] || { UV=""; return 1; }
  local extra links
  extra=$("$python" -m pip config get global.extra-index-url 2>/dev/null || true)
  links=${PIP_FIND_LINKS:-$("$python" -m pip config get global.find-links 2>/dev/null || true)}
  # space-separated lists, as pip keeps them; uv takes the same
  [ -n "$extra" ] && export UV_EXTRA_INDEX_URL="${UV_EXTRA_INDEX_URL:-$extra}"
  [ -n "$links" ] && export UV_FIND_LINKS="${UV_FIND_LINKS:-$links}"
  export UV_INDEX_STRATEGY=${UV_INDEX_STRATEGY:-unsafe-best-match}
  export UV_PYTHON_DOWNLOADS=never
  return 0
}
