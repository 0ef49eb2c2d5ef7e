# venv REQUIREMENTS: a virtualenv per requirements file, under the cache directory, rebuilt when
# the file changes; prints its path. Sourced by dev/install.sh and dev/package.sh (after
# dev/versions.sh, for CACHE_DIR).
venv() {
  local req=$1 hash dir
  hash=$(sha256sum "$req" 2>/dev/null | cut -c1-12 || shasum -a 256 "$req" | cut -c1-12)
  dir=$CACHE_DIR/venv-$(basename "$req" .txt)-$hash
  if [ ! -x "$dir/bin/python" ] || [ ! -f "$dir/.complete" ]; then
    echo "install: python tools from $req into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$CACHE_DIR"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    touch "$dir/.complete"
  fi
  echo "$dir"
}
