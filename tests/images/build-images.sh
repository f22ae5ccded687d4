#!/usr/bin/env bash
# build-images.sh — builds the Docker images that dtx's tests run.
#
# Why this script exists: the machines this project runs on (developers' and
# CI's) have a Docker engine but reach no container registry, so not a single
# image can be pulled. Every image the tests need is therefore made here from
# Debian packages: mmdebstrap builds a root filesystem from the Debian mirror
# that apt on this machine already uses, and `docker import` turns the tarball
# into an image. We never use `docker build FROM ...`, because BuildKit may try
# to reach a registry even for a local base image.
#
# What it builds:
#   dtx-postgres:15   PostgreSQL 15 from Debian bookworm, for the PostgreSQL
#                     store, the SDK's barrier and the 2PC participant helper
#                     (max_prepared_transactions=64, fsync on).
#   dtx-patroni:15    PostgreSQL 15 made highly available with Debian's
#                     packages: Patroni (with python3-etcd, which its etcd3
#                     client builds on), etcd-server and HAProxy, for the
#                     harness's replicated PostgreSQL
#                     (tests/src/harness/postgres_ha.rs). One image, three
#                     roles: the entrypoint's argument (`patroni`, `etcd` or
#                     `haproxy`) picks the program. The server settings of
#                     dtx-postgres, plus synchronous replication.
#   dtx-runtime:bookworm  Debian bookworm with what dtx's own binaries need at
#                     run time in a container (CA certificates) and what the
#                     fault-injection harness uses inside it (iproute2 for
#                     `tc netem`). It holds no dtx binary: the harness copies
#                     the ones cargo built on this (bookworm) host into each
#                     container when it creates it.
#
# Every image gets two tags: `NAME:TAG-<hash>` where <hash> is a short hash of
# the shell functions that make that image, and the stable `NAME:TAG` that the
# tests use, pointing at the newest build. Running the script again is cheap:
# an image whose hashed tag already exists is reused, and a changed recipe
# gets a new hash and so is rebuilt.
#
# Adding an image: write a `build_<name>_image` function that calls
# `ensure_image NAME TAG <recipe-functions...>`, and call it from `main`.
#
# Usage: bash tests/images/build-images.sh
# Environment:
#   DTX_DEBIAN_MIRROR  override the Debian mirror URI (default: read from apt)
#   DTX_REBUILD=1      rebuild even when the hashed tag already exists

# The mmdebstrap hooks below are single-quoted on purpose: mmdebstrap runs
# them with "$1" set to the root filesystem being built.
# shellcheck disable=SC2016
set -euo pipefail

SUITE=bookworm

log() { printf '[build-images] %s\n' "$*" >&2; }
die() {
    printf '[build-images] error: %s\n' "$*" >&2
    exit 1
}

# --- prerequisites ---------------------------------------------------------

require_docker() {
    command -v docker >/dev/null 2>&1 ||
        die "the docker command is missing; install Docker Engine (apt-get install docker.io) and start the daemon"
    docker info >/dev/null 2>&1 ||
        die "docker is installed but the daemon does not answer (is it running, and may this user use /var/run/docker.sock?)"
}

# mmdebstrap is what turns Debian packages into a root filesystem. A fresh
# machine lacks it, so install it from apt rather than asking the user to.
ensure_mmdebstrap() {
    command -v mmdebstrap >/dev/null 2>&1 && return 0
    log "mmdebstrap is missing; installing it with apt-get"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    # uidmap and fakechroot let mmdebstrap also run as a normal user.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mmdebstrap uidmap debian-archive-keyring
    command -v mmdebstrap >/dev/null 2>&1 || die "apt-get did not install mmdebstrap"
}

# --- the Debian mirror ---------------------------------------------------------

# Prints the URI of the Debian mirror that apt on this machine uses for the
# main archive (not debian-security, not third-party repositories). The host
# name is never written into the repository: every machine may have its own.
debian_mirror() {
    if [ -n "${DTX_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$DTX_DEBIAN_MIRROR"
        return 0
    fi
    local uri
    # deb822 files: one paragraph per source. Take a paragraph whose Types
    # include "deb", whose Suites include the plain suite (bookworm), that is
    # not disabled, and whose URI is not the security archive.
    uri=$(awk -v suite="$SUITE" '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") &&
                enabled != "no" && uris != "" && uris !~ /security/ && found == "") {
                split(uris, u, " "); found = u[1]
            }
            types = ""; suites = ""; uris = ""; enabled = ""
        }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        tolower($1) == "types:"   { $1 = ""; types = $0 }
        tolower($1) == "suites:"  { $1 = ""; suites = $0 }
        tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
        tolower($1) == "enabled:" { enabled = tolower($2) }
        END { flush(); if (found != "") print found }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
    if [ -z "$uri" ]; then
        # One-line format: "deb [options] URI SUITE COMPONENTS...".
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v suite="$SUITE" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite && $i !~ /security/) { print $i; exit }
                }' || true)
    fi
    [ -n "$uri" ] || die "found no Debian $SUITE mirror in /etc/apt/sources.list{,.d}; set DTX_DEBIAN_MIRROR=<uri of a Debian mirror>"
    printf '%s\n' "${uri%/}"
}

# --- image bookkeeping -------------------------------------------------------

# Temporary directories, removed when the script exits, whether it succeeds or not.
WORKDIRS=()
cleanup() { [ ${#WORKDIRS[@]} -eq 0 ] || rm -rf "${WORKDIRS[@]}"; }
trap cleanup EXIT
# new_workdir VAR: makes a temporary directory and stores its path in VAR.
# (Not `VAR=$(...)`: a subshell would lose the WORKDIRS entry.)
new_workdir() {
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/dtx-image.XXXXXX")
    WORKDIRS+=("$dir")
    printf -v "$1" '%s' "$dir"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Short hash of the bash source of the given functions. Hashing the recipe of
# one image (rather than the whole file) means that adding a second image to
# this script does not force the first one to be rebuilt.
recipe_hash() {
    declare -f "$@" | sha256sum | cut -c1-12
}

# ensure_image NAME TAG BUILD_FN [RECIPE_FN...]
# Makes sure NAME:TAG-<hash> exists (calling BUILD_FN NAME:TAG-<hash> <hash>
# to build it otherwise), points NAME:TAG at it, and removes older hashed tags
# of NAME:TAG so that old builds do not pile up on disk.
ensure_image() {
    local name=$1 tag=$2 build_fn=$3
    shift 3
    local hash
    hash=$(recipe_hash "$build_fn" "$@")
    local hashed="$name:$tag-$hash" stable="$name:$tag"
    local started=$SECONDS
    if image_exists "$hashed" && [ "${DTX_REBUILD:-0}" != 1 ]; then
        log "$hashed already exists; reusing it"
    else
        log "building $hashed"
        "$build_fn" "$hashed" "$hash"
        image_exists "$hashed" || die "building $hashed did not produce the image"
        log "built $hashed in $((SECONDS - started))s"
    fi
    docker tag "$hashed" "$stable"
    local old
    for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$name" | grep -E "^$name:$tag-[0-9a-f]{12}\$" || true); do
        if [ "$old" != "$hashed" ]; then
            # An old image still used by a container cannot be removed; that is fine.
            if docker image rm "$old" >/dev/null 2>&1; then log "removed the older build $old"; fi
        fi
    done
    log "$stable -> $hashed ($(docker image inspect --format '{{.Size}}' "$hashed" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

# Options every mmdebstrap rootfs shares: no recommends, no documentation,
# manual pages or translations, and no apt lists or caches left behind.
mmdebstrap_small_opts() {
    printf '%s\n' \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='APT::Install-Suggests "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/cache/debconf/*-old'
}

# --- dtx-postgres:15 -----------------------------------------------------------

# The image's entrypoint: initialise a data directory on the first start,
# then run the server in the foreground. It runs as the postgres user.
postgres_entrypoint() {
    cat <<'ENTRYPOINT'
#!/bin/sh
# dtx-postgres entrypoint: made by tests/images/build-images.sh.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # First start of this container: create the cluster. The superuser is
    # "postgres" with the password from POSTGRES_PASSWORD (default postgres).
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" >"$pwfile"
    initdb --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    # Clients come from the Docker host through a mapped port, so from any
    # address; they log in with the password.
    echo 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"
    cat >>"$PGDATA/postgresql.conf" <<'CONF'
# --- dtx test settings ---
listen_addresses = '*'
# Debian's default, /var/run/postgresql, does not exist: mmdebstrap empties
# /run. The image sets PGHOST=/tmp so that psql in the container finds it.
unix_socket_directories = '/tmp'
# 2PC participants use PREPARE TRANSACTION, which is off (0) by default.
max_prepared_transactions = 64
# Many test databases share one server; each test opens a small pool.
max_connections = 200
# The image leaves out LLVM, which the JIT needs (see build-images.sh).
jit = off
# Crash and restart tests check durability, so never trade it for speed.
fsync = on
synchronous_commit = on
full_page_writes = on
CONF
    echo "dtx-postgres: initialised a new cluster in $PGDATA" >&2
fi
# exec, so that postgres is PID 1 and receives docker's stop signal itself.
exec postgres -D "$PGDATA" "$@"
ENTRYPOINT
}

# The last touches to the PostgreSQL root filesystem. mmdebstrap runs this
# script with the root filesystem's path as $1, after installing packages.
postgres_customize_hook() {
    cat <<'HOOK'
#!/bin/sh
set -eu
root=$1
# No cluster from the package: the entrypoint makes one in $PGDATA.
rm -rf "$root/etc/postgresql/15/main" "$root/var/lib/postgresql/15/main"
# Leave out the JIT: LLVM and z3 are 130 MB of a 370 MB image, and the tests
# gain nothing from it (the entrypoint sets jit = off). dpkg is told to
# ignore that postgresql-15 depends on them.
jit_packages=$(chroot "$root" dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 'libllvm*' 'libz3-*' |
    awk '$1 == "ii" { print $2 }')
# Word splitting of the package list is intended.
# shellcheck disable=SC2086
[ -z "$jit_packages" ] || chroot "$root" dpkg --purge --force-depends $jit_packages
rm -rf "$root"/usr/lib/postgresql/15/lib/llvmjit* "$root"/usr/lib/postgresql/15/lib/bitcode
HOOK
}

# build_postgres_image_from_debian IMAGE HASH: mmdebstrap a rootfs, docker import it.
build_postgres_image_from_debian() {
    local image=$1 hash=$2
    local mirror workdir
    new_workdir workdir
    mirror=$(debian_mirror)
    log "Debian mirror (from apt's configuration): $mirror"
    postgres_entrypoint >"$workdir/entrypoint"

    postgres_customize_hook >"$workdir/customize"
    chmod 0755 "$workdir/customize"
    local -a opts
    mapfile -t opts < <(mmdebstrap_small_opts)
    mmdebstrap \
        --variant=apt \
        --format=tar \
        --include=postgresql-15 \
        "${opts[@]}" \
        --customize-hook="upload '$workdir/entrypoint' /usr/local/bin/dtx-postgres-entrypoint" \
        --customize-hook='chmod 0755 "$1/usr/local/bin/dtx-postgres-entrypoint"' \
        --customize-hook="$workdir/customize" \
        "$SUITE" "$workdir/rootfs.tar" \
        "deb $mirror $SUITE main" \
        "deb $mirror $SUITE-updates main"

    # No STOPSIGNAL here: Docker 20.10's `import --change` refuses it. The
    # test support's PostgresServer::stop sends SIGINT (PostgreSQL's "fast"
    # shutdown) itself instead; a plain `docker stop` of this image sends
    # SIGTERM, a "smart" shutdown that waits for clients to disconnect.
    docker import \
        --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PGHOST=/tmp' \
        --change 'EXPOSE 5432' \
        --change 'USER postgres' \
        --change 'WORKDIR /var/lib/postgresql' \
        --change "LABEL org.dtx.recipe-hash=$hash org.dtx.built-by=tests/images/build-images.sh" \
        --change 'ENTRYPOINT ["/usr/local/bin/dtx-postgres-entrypoint"]' \
        --message "dtx-postgres 15 from Debian $SUITE (recipe $hash)" \
        "$workdir/rootfs.tar" "$image" >/dev/null
}

build_postgres_image() {
    ensure_image dtx-postgres 15 build_postgres_image_from_debian \
        postgres_entrypoint postgres_customize_hook mmdebstrap_small_opts
}

# --- dtx-patroni:15 ------------------------------------------------------------

# Patroni's configuration. What differs between the containers of one
# cluster comes from the environment, which Patroni reads itself:
# PATRONI_NAME, PATRONI_SCOPE, PATRONI_ETCD3_HOSTS,
# PATRONI_RESTAPI_CONNECT_ADDRESS and PATRONI_POSTGRESQL_CONNECT_ADDRESS.
patroni_config() {
    cat <<'YAML'
# dtx-patroni: made by tests/images/build-images.sh.
restapi:
  listen: 0.0.0.0:8008
etcd3:
  protocol: http
# No /dev/watchdog in a container.
watchdog:
  mode: "off"
bootstrap:
  dcs:
    # Failover after a kill -9 of the primary takes up to ttl + loop_wait:
    # the leader key must expire first. Patroni's documented minimum ttl is
    # 20; 3.0.2 does not enforce it, and 10 keeps a harness run short while
    # keeping loop_wait + 2 * retry_timeout <= ttl, the rule that stops a
    # healthy primary from losing its key between two renewals.
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    # A commit returns only once the synchronous standby has it on disk,
    # and Patroni promotes only the synchronous standby: nothing a client
    # was told is committed is lost by a failover. Not strict: with the
    # standby gone the primary goes on alone (no second copy meanwhile).
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      # A killed primary may hold WAL its successor never got: rewind it
      # to the new timeline when it comes back, or copy it afresh.
      use_pg_rewind: true
      remove_data_directory_on_rewind_failure: true
      remove_data_directory_on_diverged_timelines: true
      use_slots: true
      parameters:
        # The same settings as dtx-postgres (see its entrypoint above).
        max_prepared_transactions: 64
        max_connections: 200
        jit: "off"
        fsync: "on"
        synchronous_commit: "on"
        full_page_writes: "on"
        # A replica that was down a while catches up from the primary's WAL.
        wal_keep_size: 256MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
postgresql:
  listen: 0.0.0.0:5432
  data_dir: /var/lib/postgresql/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    # Debian's default, /var/run/postgresql, does not exist (mmdebstrap
    # empties /run).
    unix_socket_directories: /tmp
  pg_hba:
    - local all all trust
    - host replication replicator all scram-sha-256
    - host all all all scram-sha-256
YAML
}

# HAProxy's configuration: clients connect to port 5432 and reach the node
# whose Patroni answers 200 to /primary (the leader running as primary),
# as Patroni's documentation recommends. The two nodes' host names come
# from DTX_PATRONI_NODE1 and DTX_PATRONI_NODE2.
haproxy_config() {
    cat <<'CFG'
# dtx-patroni: made by tests/images/build-images.sh.
global
    maxconn 1000
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    timeout connect 2s
    # Connection pools keep idle connections for minutes.
    timeout client 1h
    timeout server 1h
    timeout check 1s

# Docker's DNS: a stopped container's name stops resolving, and a container
# started again may get another address, so names are resolved all along.
resolvers docker
    nameserver docker 127.0.0.11:53
    resolve_retries 2
    timeout resolve 500ms
    timeout retry 500ms
    hold valid 1s
    hold obsolete 1s
    hold nx 1s
    hold other 1s
    hold refused 1s
    hold timeout 1s

listen postgres
    bind :5432
    # OPTIONS: Patroni answers it like GET but with the status line alone,
    # which is all a check reads (a GET's body makes Patroni log a
    # "connection reset" for every check).
    option httpchk OPTIONS /primary
    http-check expect status 200
    # Check every second; down after two failures, up after one success.
    # A node marked down (demoted or dead) has its connections cut, so no
    # client keeps writing to a former primary.
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions resolvers docker init-addr last,libc,none
    server node1 "${DTX_PATRONI_NODE1}:5432" check port 8008
    server node2 "${DTX_PATRONI_NODE2}:5432" check port 8008
CFG
}

# The entrypoint: its one argument picks the role of the container.
patroni_entrypoint() {
    cat <<'ENTRYPOINT'
#!/bin/sh
# dtx-patroni entrypoint: made by tests/images/build-images.sh.
# Usage: dtx-patroni-entrypoint patroni|etcd|haproxy
set -eu
case "${1:-}" in
patroni)
    # After a kill -9 the socket's lock file is still there (the container's
    # file system outlives it), and a new process may have the PID it names:
    # PostgreSQL would then refuse to start, once. Nothing runs yet here.
    rm -f /tmp/.s.PGSQL.5432 /tmp/.s.PGSQL.5432.lock
    # Patroni runs PostgreSQL as its child; as PID 1 it also reaps orphans.
    exec patroni /etc/patroni/dtx.yml
    ;;
etcd)
    # One member is enough for the harness: its faults hit PostgreSQL,
    # never the DCS. ETCD_ADVERTISE_CLIENT_URLS (set by the harness) is the
    # address Patroni reaches it at.
    exec etcd --name etcd --data-dir /var/lib/postgresql/etcd \
        --listen-client-urls http://0.0.0.0:2379 \
        --listen-peer-urls http://127.0.0.1:2380 \
        --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster etcd=http://127.0.0.1:2380
    ;;
haproxy)
    exec haproxy -W -db -f /etc/haproxy/dtx.cfg
    ;;
*)
    echo "usage: dtx-patroni-entrypoint patroni|etcd|haproxy" >&2
    exit 2
    ;;
esac
ENTRYPOINT
}

# build_patroni_image_from_debian IMAGE HASH: mmdebstrap a rootfs, docker import it.
build_patroni_image_from_debian() {
    local image=$1 hash=$2
    local mirror workdir
    new_workdir workdir
    mirror=$(debian_mirror)
    log "Debian mirror (from apt's configuration): $mirror"
    patroni_entrypoint >"$workdir/entrypoint"
    patroni_config >"$workdir/patroni.yml"
    haproxy_config >"$workdir/haproxy.cfg"
    # The same last touches as dtx-postgres: no packaged cluster, no JIT.
    postgres_customize_hook >"$workdir/customize"
    chmod 0755 "$workdir/customize"
    local -a opts
    mapfile -t opts < <(mmdebstrap_small_opts)
    # patroni depends on python3-etcd (the first of its DCS alternatives),
    # which its etcd3 client builds on; it talks to etcd's v3 JSON gateway
    # itself, so no other etcd library is needed.
    mmdebstrap \
        --variant=apt \
        --format=tar \
        --include=postgresql-15,patroni,python3-etcd,etcd-server,haproxy \
        "${opts[@]}" \
        --customize-hook="upload '$workdir/entrypoint' /usr/local/bin/dtx-patroni-entrypoint" \
        --customize-hook='chmod 0755 "$1/usr/local/bin/dtx-patroni-entrypoint"' \
        --customize-hook='mkdir -p "$1/etc/patroni"' \
        --customize-hook="upload '$workdir/patroni.yml' /etc/patroni/dtx.yml" \
        --customize-hook="upload '$workdir/haproxy.cfg' /etc/haproxy/dtx.cfg" \
        --customize-hook='chmod 0644 "$1/etc/patroni/dtx.yml" "$1/etc/haproxy/dtx.cfg"' \
        --customize-hook="$workdir/customize" \
        "$SUITE" "$workdir/rootfs.tar" \
        "deb $mirror $SUITE main" \
        "deb $mirror $SUITE-updates main"

    docker import \
        --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PGHOST=/tmp' \
        --change 'EXPOSE 5432 8008 2379' \
        --change 'USER postgres' \
        --change 'WORKDIR /var/lib/postgresql' \
        --change "LABEL org.dtx.recipe-hash=$hash org.dtx.built-by=tests/images/build-images.sh" \
        --change 'ENTRYPOINT ["/usr/local/bin/dtx-patroni-entrypoint"]' \
        --change 'CMD ["patroni"]' \
        --message "dtx-patroni 15 from Debian $SUITE (recipe $hash)" \
        "$workdir/rootfs.tar" "$image" >/dev/null
}

build_patroni_image() {
    ensure_image dtx-patroni 15 build_patroni_image_from_debian \
        patroni_config haproxy_config patroni_entrypoint postgres_customize_hook mmdebstrap_small_opts
}

# --- dtx-runtime:bookworm --------------------------------------------------------

# build_runtime_image_from_debian IMAGE HASH: mmdebstrap a small rootfs with
# the run-time packages, docker import it. The harness chooses the command
# of each container, so the image has no entrypoint of its own.
build_runtime_image_from_debian() {
    local image=$1 hash=$2
    local mirror workdir
    new_workdir workdir
    mirror=$(debian_mirror)
    log "Debian mirror (from apt's configuration): $mirror"
    local -a opts
    mapfile -t opts < <(mmdebstrap_small_opts)
    mmdebstrap \
        --variant=apt \
        --format=tar \
        --include=ca-certificates,iproute2,procps \
        "${opts[@]}" \
        "$SUITE" "$workdir/rootfs.tar" \
        "deb $mirror $SUITE main" \
        "deb $mirror $SUITE-updates main"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'WORKDIR /var/lib/dtx' \
        --change "LABEL org.dtx.recipe-hash=$hash org.dtx.built-by=tests/images/build-images.sh" \
        --change 'CMD ["/bin/sh"]' \
        --message "dtx-runtime from Debian $SUITE (recipe $hash)" \
        "$workdir/rootfs.tar" "$image" >/dev/null
}

build_runtime_image() {
    ensure_image dtx-runtime "$SUITE" build_runtime_image_from_debian mmdebstrap_small_opts
}

# --- main ------------------------------------------------------------------------

main() {
    require_docker
    ensure_mmdebstrap
    build_postgres_image
    build_runtime_image
    build_patroni_image
}

main "$@"
