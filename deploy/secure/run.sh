#!/bin/sh
# A local zwatch with CURVE + ZAP on every socket, for a fresh clone:
#
#   deploy/secure/run.sh [WORKDIR [PORT]]       (default ./zwatch-secure and 2379)
#
# 1. writes the keys once (`zwatch keygen --cluster WORKDIR/curve --client root`),
# 2. writes WORKDIR/.env (honcho reads it: ZWATCH_CURVE_DIR, ZWATCH_DATA_DIR, endpoints) and
#    WORKDIR/client.env (what a client needs: `. WORKDIR/client.env; zwatch put foo bar`),
# 3. runs writer, syncer and one fan-out on 127.0.0.1:PORT through honcho (Ctrl-C stops them).
#
# Needs the zwatch package and honcho importable by $PYTHON (default: the `python` on
# PATH, e.g. after `. .venv/bin/activate`).  The internal endpoints default to 2480-2482;
# ZWATCH_WRITER_ENDPOINT / ZWATCH_PUB_ENDPOINT / ZWATCH_SYNCER_ENDPOINT in the environment win.
# ZWATCH_CURVE_CLIENTS=known admits only the client keys in WORKDIR/curve/clients/.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:-$PWD/zwatch-secure}
PORT=${2:-2379}
PY=${PYTHON:-python}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
KEYS=$WORK/curve
if [ ! -e "$KEYS/fanout.key_secret" ]; then
    "$PY" -m zwatch.cli keygen --cluster "$KEYS" --client root
fi
cat > "$WORK/.env" <<ENV
PYTHON=$PY
ZWATCH_CURVE_DIR=$KEYS
ZWATCH_CURVE_CLIENTS=${ZWATCH_CURVE_CLIENTS:-any}
ZWATCH_DATA_DIR=$WORK/data
ZWATCH_WRITER_ENDPOINT=${ZWATCH_WRITER_ENDPOINT:-tcp://127.0.0.1:2480}
ZWATCH_PUB_ENDPOINT=${ZWATCH_PUB_ENDPOINT:-tcp://127.0.0.1:2481}
ZWATCH_SYNCER_ENDPOINT=${ZWATCH_SYNCER_ENDPOINT:-tcp://127.0.0.1:2482}
ENV
cat > "$WORK/client.env" <<ENV
export ZWATCH_ENDPOINTS=127.0.0.1:$PORT
export ZWATCH_CURVE_SERVER_KEY=$KEYS/client-root/fanout.key
export ZWATCH_CURVE_CLIENT_KEY=$KEYS/client-root/root.key_secret
ENV
cat <<MSG
zwatch with CURVE on: keys in $KEYS, data in $WORK/data, fan-out on 127.0.0.1:$PORT.
In another shell:
    . $WORK/client.env
    zwatch put foo bar && zwatch get foo
Users and roles (etcdctl's verbs; see docs/operations.md):
    zwatch user add root            # prompts for the password
    zwatch auth enable
    zwatch --user root get foo      # prompts; or ZWATCH_USER=root:PASSWORD
A client without the fan-out's key (or, with ZWATCH_CURVE_CLIENTS=known, without a key in
$KEYS/clients/) gets no answer at all.
MSG
exec "$PY" -m honcho -f "$HERE/Procfile" -d "$WORK" -e "$WORK/.env" start -p "$PORT" -c fanout=1,writer=1,syncer=1
