#!/usr/bin/env bash
# Set up podman for tunegate's containers and print the environment to use it.
#
#   eval "$(containers/podman-env.sh)"               # exports CONTAINERS_CONF, ..., DOCKER_HOST
#   eval "$(containers/podman-env.sh --no-service)"  # only the podman settings and the base image
#
# What it does (each part is skipped when already done, so a rerun takes ~1 s):
#   1. CONTAINERS_CONF -> containers/containers.conf (runc, ulimits: required on Debian 12 CI hosts);
#      CONTAINERS_STORAGE_CONF -> a storage.conf written from containers/storage.conf whose
#      images live under $TUNEGATE_PODMAN_ROOT (default ~/.cache/tunegate/podman).
#   2. Creates the base image localhost/debian-min:bookworm with debootstrap when it is missing
#      (no registry needed; needs root and http://deb.debian.org; ~35 s). --no-base skips it.
#   3. Starts `podman system service` on a unix socket (Docker-compatible API, for docker-py and
#      Prefect's docker worker) unless one already answers there, and prints DOCKER_HOST.
#      Stop it with: kill "$TUNEGATE_PODMAN_SERVICE_PID" (printed below; never kill podman by name).
# Only `export` lines go to stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${TUNEGATE_PODMAN_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/tunegate/podman}
run_dir=${TUNEGATE_PODMAN_RUNDIR:-${XDG_RUNTIME_DIR:-/tmp}/tunegate-podman-$(id -u)}
base_image=${TUNEGATE_BASE_IMAGE:-localhost/debian-min:bookworm}
suite=${TUNEGATE_DEBIAN_SUITE:-bookworm}
mirror=${TUNEGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
socket=${TUNEGATE_PODMAN_SOCKET:-$run_dir/podman.sock}
service=1 base=1

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}" >&2; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --no-service) service=0 ;;
    --no-base) base=0 ;;
    -h|--help) usage 0 ;;
    *) echo "podman-env.sh: unknown option $1" >&2; usage 2 ;;
  esac
  shift
done
log() { echo "podman-env: $*" >&2; }
command -v podman >/dev/null || { log "podman not found; install it: apt-get install -y podman runc debootstrap"; exit 1; }

# 1. Settings. storage.conf expands no variables, so write a copy with this machine's paths.
mkdir -p "$root/storage" "$run_dir/runroot"
sed -e "s|@GRAPHROOT@|$root/storage|" -e "s|@RUNROOT@|$run_dir/runroot|" "$here/storage.conf" >"$root/storage.conf.tmp"
mv "$root/storage.conf.tmp" "$root/storage.conf"
export CONTAINERS_CONF="$here/containers.conf" CONTAINERS_STORAGE_CONF="$root/storage.conf"
echo "export CONTAINERS_CONF='$CONTAINERS_CONF'"
echo "export CONTAINERS_STORAGE_CONF='$CONTAINERS_STORAGE_CONF'"

# 2. The base image, from Debian's own archive: no container registry is reachable on CI hosts.
if [ "$base" = 1 ] && ! podman image exists "$base_image"; then
  command -v debootstrap >/dev/null || { log "debootstrap not found; apt-get install -y debootstrap"; exit 1; }
  [ "$(id -u)" = 0 ] || { log "creating $base_image needs root (debootstrap); run as root or pass --base to build.sh"; exit 1; }
  log "creating $base_image with debootstrap ($suite from $mirror)..."
  start=$(date +%s)
  rootfs=$(mktemp -d "$root/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 \
    || { log "debootstrap failed; see $root/debootstrap.log"; exit 1; }
  # Same sources as the public debian:<suite>-slim image (point and security updates).
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$suite" >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "created $base_image in $(($(date +%s) - start)) s"
fi

# 3. The Docker-compatible API. It inherits CONTAINERS_CONF from here: API clients send no ulimits.
[ "$service" = 1 ] || exit 0
if podman --url "unix://$socket" version >/dev/null 2>&1; then
  log "reusing the podman service on $socket"
  pid=$(cat "$run_dir/service.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "export TUNEGATE_PODMAN_SERVICE_PID=$pid"; fi
else
  rm -f "$socket"
  # stdout/stderr to a file: `$(...)` around this script would otherwise wait for the service.
  podman system service --time=0 "unix://$socket" >"$root/service.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$run_dir/service.pid"
  for _ in $(seq 100); do
    podman --url "unix://$socket" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { log "podman system service exited; see $root/service.log"; exit 1; }
    sleep 0.2
  done
  log "podman service (pid $pid) on $socket; stop it with: kill $pid"
  echo "export TUNEGATE_PODMAN_SERVICE_PID=$pid"
fi
echo "export DOCKER_HOST='unix://$socket'"
