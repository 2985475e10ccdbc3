# Sourced by the scripts that print a directory of a project's source module (hack/keda-crds.sh,
# hack/prometheus-operator-crds.sh): `go mod download` of one pinned module into the Go module cache, through
# the Go module proxy, retried, and its directory printed. Nothing is built. The caller defines die().

# go_module_dir TAG MODULE VERSION: prints the module's directory in the cache (downloads it when missing).
go_module_dir() {
  local tag=$1 module=$2 version=$3 json="" dir="" attempt
  command -v go >/dev/null \
    || die "'go' is not on PATH (the files come through the Go module proxy); install Go and retry."
  for attempt in 1 2 3; do
    # Outside any module (a go.mod here would change what `go mod download` means). -modcacherw: files it
    # extracts stay writable, so removing ~/go/pkg/mod by hand works (`go clean -modcache` works either way).
    if json=$(cd / && GOFLAGS="${GOFLAGS:-} -modcacherw" go mod download -json "$module@$version"); then
      dir=$(printf '%s' "$json" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
      [ -n "$dir" ] || die "go mod download $module@$version named no directory."
      echo "$dir"
      return 0
    fi
    printf '%s\n' "${json:-}" | sed -nE "s/^[[:space:]]*\"Error\": \"(.*)\",?\$/$tag: \\1/p" >&2
    [ "$attempt" = 3 ] && die "go mod download $module@$version failed 3 times; check \$GOPROXY ($(go env GOPROXY))."
    sleep $((attempt * 5))
  done
}
