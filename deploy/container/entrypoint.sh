#!/bin/sh
# Entry point of the zwatch image (deploy/container/Containerfile); POSIX sh, no bashisms.
#
#   writer | syncer          one actor; settings from the ZWATCH_* environment
#   fanout [--listen EP]     one fan-out; without --listen it binds ZWATCH_FANOUT_ENDPOINT
#                            (the image sets tcp://0.0.0.0:2379)
#   up [-c fanout=N]         writer, syncer and N fan-outs in this one container (`zwatch up`:
#                            restarts a dead child; its fan-outs listen on 127.0.0.1 only, so
#                            this is for a single-host trial, clients inside the container)
#   health                   the image's HEALTHCHECK: see health() below
#   zwatch ARGS... | ARGS... any CLI command: `docker run IMG get foo`, `docker run IMG zwatch get foo`
#                            (another program: `docker run --entrypoint sh IMG`)
#
# Every actor is started with `exec`: it replaces this shell, so the SIGTERM of `docker stop` or
# of the kubelet reaches it directly (a fan-out then drains: its clients move to the others).
set -eu

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

# HEALTHCHECK: one image serves every role, so the check asks each actor this container may run
# for /readyz on its metrics port (ZWATCH_FANOUT_METRICS_PORT, ZWATCH_WRITER_METRICS_PORT,
# ZWATCH_SYNCER_METRICS_PORT; the image sets 9379, 9480, 9482) with `zwatch probe ready`.  An
# actor that answers "not ready" (HTTP 503: a fan-out that has not joined the writer's publish
# stream, or lost it, or is draining) makes the container unhealthy; a port where nothing answers is an actor this container does not run
# (`zwatch probe` prints an HTTP answer on stdout, a connection error on stderr only).
# Healthy: at least one actor answered, and all that answered are ready.
health() {
    host=${ZWATCH_METRICS_HOST:-127.0.0.1}
    case "$host" in
        0.0.0.0|'*') host=127.0.0.1 ;;
        ::|'[::]') host=::1 ;;
    esac
    answered=0
    for port in ${ZWATCH_FANOUT_METRICS_PORT:-} ${ZWATCH_WRITER_METRICS_PORT:-} ${ZWATCH_SYNCER_METRICS_PORT:-}; do
        if out=$(zwatch probe ready --host "$host" --port "$port" --timeout 2 2>/dev/null); then
            echo "$port: $out"
            answered=$((answered + 1))
        elif [ -n "$out" ]; then
            echo "$port: not ready: $out"
            return 1
        fi
    done
    if [ "$answered" -eq 0 ]; then
        echo "no zwatch actor answers on $host, metrics ports:" \
             "${ZWATCH_FANOUT_METRICS_PORT:-} ${ZWATCH_WRITER_METRICS_PORT:-} ${ZWATCH_SYNCER_METRICS_PORT:-}"
        return 1
    fi
    return 0
}

case "${1:-}" in
    writer|syncer|up)
        exec zwatch "$@" ;;
    fanout)
        # Some platforms set PORT for the main process; a fan-out would take it as "listen on
        # 127.0.0.1:$PORT" (the honcho convention), unreachable from outside the container.
        unset PORT
        exec zwatch "$@" ;;
    health)
        health ;;
    zwatch)
        shift
        exec zwatch "$@" ;;
    ''|help|-h|--help)
        usage ;;
    *)
        exec zwatch "$@" ;;
esac
