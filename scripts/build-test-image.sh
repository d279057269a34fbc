#!/usr/bin/env bash
# Builds berth/busybox:latest, the local image the Docker containerizer's
# tests run (no registry is needed: a FROM scratch image holding the host's
# static busybox with its applet symlinks). Idempotent; prints the image id.
#
# Needs a running Docker daemon and /bin/busybox (a static build; Debian's
# busybox-static package, installed here with apt-get when missing and we are
# root).
set -euo pipefail

IMAGE="${BERTH_TEST_IMAGE:-berth/busybox:latest}"
BUSYBOX=/bin/busybox

if [[ ! -x "$BUSYBOX" ]]; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing busybox-static" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2; }
    else
        echo "error: $BUSYBOX is missing; install the busybox-static package" >&2
        exit 1
    fi
fi

# A FROM scratch image needs a statically linked busybox.
if command -v ldd >/dev/null && ldd "$BUSYBOX" 2>/dev/null | grep -q '=>'; then
    echo "error: $BUSYBOX is dynamically linked; install busybox-static" >&2
    exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$BUSYBOX" "$context/busybox"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "-m", "1777", "/tmp"]
ENV PATH=/bin
CMD ["/bin/sh"]
DOCKERFILE

docker build -q -t "$IMAGE" "$context" >&2
docker image inspect --format '{{.Id}}' "$IMAGE"
