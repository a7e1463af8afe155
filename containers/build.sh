#!/usr/bin/env bash
# Build tunegate's CPU or GPU image with podman (or docker).
#
#   containers/build.sh cpu [options]    # data steps, evaluation, merge (torch CPU build)
#   containers/build.sh gpu [options]    # training (torch CUDA build, from the PyTorch index)
#
# Options:
#   --base IMAGE         base image (default: the Dockerfile's; CI: localhost/debian-min:bookworm,
#                        made by containers/podman-env.sh)
#   --tag NAME:TAG       image tag (default: localhost/tunegate-KIND:VERSION, VERSION from
#                        pyproject.toml; also tagged VERSION-GITSHA when in a git checkout)
#   --engine E           podman (default when installed) or docker
#   --extras LIST        pyproject extras to install (default: every extra except dev)
#   --uid N              uid/gid of the image's non-root user (default 1000)
#   --wheels DIR         where the torch wheel lies (cpu default: pip's find-links, e.g. /opt/wheels);
#                        for gpu, optional: wheels to install instead of downloading them
#   --torch-index URL    gpu only: PyPI-style index of the CUDA torch build (default
#                        https://download.pytorch.org/whl/cu128); "" for none (wheels from --wheels)
#   --torch-variant V    gpu only: torch's local version label (default: the index URL's last part)
#   --ca FILE            CA bundle passed to pip as the build secret `hostca`, never stored in the
#                        image (default: $PIP_CERT, pip's `cert` setting, else the system bundle)
#   -- ARGS              passed on to `podman build` / `docker build`
# On Debian 12 CI hosts, run `eval "$(containers/podman-env.sh --no-service)"` first (runc, ulimits).
# Prints the image tag as the last line of stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
die() { echo "build.sh: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}" >&2; exit "${1:-0}"; }

kind=${1:-}
case $kind in cpu|gpu) shift ;; -h|--help) usage 0 ;; *) usage 2 ;; esac
base="" tag="" engine="" extras="-" uid=1000 wheels="" ca="" torch_index=https://download.pytorch.org/whl/cu128 torch_variant=""
extra_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift ;;
    --tag) tag=$2; shift ;;
    --engine) engine=$2; shift ;;
    --extras) extras=$2; shift ;;
    --uid) uid=$2; shift ;;
    --wheels) wheels=$2; shift ;;
    --torch-index) torch_index=$2; shift ;;
    --torch-variant) torch_variant=$2; shift ;;
    --ca) ca=$2; shift ;;
    --) shift; extra_args=("$@"); break ;;
    -h|--help) usage 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman; elif command -v docker >/dev/null; then engine=docker
  else die "neither podman nor docker found; on Debian: apt-get install -y podman runc debootstrap"; fi
fi
command -v "$engine" >/dev/null || die "$engine not found"

# Version, extras and the torch pin come from the repo's own files: nothing to keep in sync here.
read -r version all_extras < <(python3 - "$repo/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(project["version"], ",".join(x for x in project.get("optional-dependencies", {}) if x != "dev") or "-")
EOF
)
[ "$extras" = "-" ] && extras=$all_extras
[ "$extras" = "-" ] && extras=""
torch_version=$(sed -n 's/^torch==//p' "$repo/constraints.txt")
[ -n "$torch_version" ] || die "constraints.txt pins no torch version (expected a line torch==X.Y.Z)"
revision=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
also_tag=""
if [ -z "$tag" ]; then
  tag="localhost/tunegate-$kind:$version"
  [ "$revision" != unknown ] && also_tag="localhost/tunegate-$kind:$version-${revision%-dirty}"
fi

# The torch wheel goes into the build context (build/ is git-ignored; .dockerignore lets only
# build/containers/wheels in). Hard links when possible: the CPU wheel is ~180 MB.
ctx_wheels="$repo/build/containers/wheels"
rm -rf "$ctx_wheels" && mkdir -p "$ctx_wheels"
put_wheel() { ln -f "$1" "$ctx_wheels/" 2>/dev/null || cp -f "$1" "$ctx_wheels/"; }
if [ "$kind" = cpu ]; then
  if [ -z "$wheels" ]; then
    wheels=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
  fi
  found=0
  for dir in $wheels; do
    for whl in "${dir#file://}"/torch-"$torch_version"+cpu-*.whl; do
      [ -f "$whl" ] && { put_wheel "$whl"; found=1; }
    done
  done
  [ "$found" = 1 ] || die "no torch-$torch_version+cpu wheel in '${wheels:-<none>}'; pass --wheels DIR, e.g. after
  pip download --no-deps torch==$torch_version+cpu --index-url https://download.pytorch.org/whl/cpu -d DIR"
elif [ -n "$wheels" ]; then
  for whl in "$wheels"/*.whl; do [ -f "$whl" ] && put_wheel "$whl"; done
fi

if [ -z "$ca" ]; then
  ca=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
  [ -n "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
fi
args=(build --network=host -f "$here/Dockerfile.$kind" -t "$tag"
      --build-arg "VERSION=$version" --build-arg "GIT_REVISION=$revision"
      --build-arg "EXTRAS=$extras" --build-arg "APP_UID=$uid")
[ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")
[ -f "$ca" ] && args+=(--secret "id=hostca,src=$ca")
[ -n "$also_tag" ] && args+=(-t "$also_tag")
if [ "$kind" = gpu ]; then
  [ -n "$torch_variant" ] || torch_variant=$(basename "${torch_index:-cu128}")
  args+=(--build-arg "TORCH_INDEX_URL=$torch_index" --build-arg "TORCH_VARIANT=$torch_variant")
fi
[ "$engine" = docker ] && export DOCKER_BUILDKIT=1  # build secrets and cache mounts need BuildKit

echo "build.sh: $engine ${args[*]} ${extra_args[*]} $repo" >&2
start=$(date +%s)
if ! "$engine" "${args[@]}" "${extra_args[@]}" "$repo" >&2; then
  if [ "$engine" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
    echo "build.sh: on Debian 12 CI hosts run \`eval \"\$(containers/podman-env.sh --no-service)\"\` first (runc, ulimits)" >&2
  fi
  exit 1
fi
size=$("$engine" image inspect --format '{{.Size}}' "$tag" 2>/dev/null || echo 0)
echo "build.sh: built $tag in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
echo "$tag"
