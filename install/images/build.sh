#!/usr/bin/env bash
# Builds a root filesystem tarball from Debian's packages (no image registry needed), once: a
# tarball that exists is left as it is.
#
#   build.sh debian OUT.tar PACKAGES   debootstrap --variant=minbase --include=PACKAGES bookworm
#   build.sh busybox OUT.tar           busybox-static with its applets and a root user
#
# With --import TAG after the arguments, the tarball is also `docker import`ed as TAG (when the
# docker client can reach a daemon).
set -euo pipefail
kind=$1 out=$2
shift 2
packages=""
if [ "$kind" = debian ]; then packages=$1; shift; fi
tag=""
if [ "${1:-}" = --import ]; then tag=$2; fi

need() { # need PACKAGE...: installs what is missing
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

if ! [ -s "$out" ]; then
    mkdir -p "$(dirname "$out")"
    tmp=$(mktemp -d /var/tmp/lodge-image.XXXXXX)
    case "$kind" in
        debian)
            need debootstrap
            echo "== building $out (debootstrap --variant=minbase --include=$packages bookworm; a few minutes)"
            mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
            debootstrap --variant=minbase --include="$packages" bookworm "$tmp" \
                "${mirror:-http://deb.debian.org/debian}" >/dev/null
            ;;
        busybox)
            need busybox-static
            echo "== building $out (busybox-static)"
            mkdir -p "$tmp"/{bin,etc,proc,sys,dev,tmp,root}
            cp /bin/busybox "$tmp/bin/busybox"
            for applet in $(/bin/busybox --list); do
                [ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"
            done
            echo "root:x:0:0:root:/root:/bin/sh" > "$tmp/etc/passwd"
            echo "root:x:0:" > "$tmp/etc/group"
            ;;
        *) echo "build.sh: unknown kind $kind (debian or busybox)" >&2; exit 2 ;;
    esac
    chmod 755 "$tmp" # mktemp's 0700 would become the image's /
    tar -C "$tmp" -cf "$out.tmp" .
    mv "$out.tmp" "$out"
    rm -rf --one-file-system "$tmp"
fi
[ -s "$out" ] && [ -z "${tmp:-}" ] && echo "== $out (built before)"
if [ -n "$tag" ] && docker info >/dev/null 2>&1; then
    docker image inspect "$tag" >/dev/null 2>&1 || docker import "$out" "$tag" >/dev/null
    echo "== $out imported into Docker as $tag"
fi
