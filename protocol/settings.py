"""Every environment variable zwatch reads, declared once: name, type, default, readers, meaning.

The actors' ``from_env``, the client's endpoint list, the CLI, ``.env.example`` and the
"Environment variables" table of docs/operations.md all come from ``SETTINGS`` below
(``python -m zwatch.tools.gendocs`` writes the last two; tests/unit/test_settings.py checks
that nothing drifted).  It lives in the protocol package because the client reads
``ZWATCH_ENDPOINTS``; it imports neither the client nor the actors.

    settings.get("ZWATCH_RING_REVISIONS")       # -> 20000, or the typed value from the env
    settings.actor_kwargs("syncer")              # -> the Syncer constructor's keywords

An empty value counts as unset.  A malformed value raises ``SettingError`` with a one-line
message naming the variable; ``zwatch writer|syncer|fanout`` checks every variable of the actor
before it starts (``check``), so a typo ends the process with that line, not a traceback.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from .limits import (DEFAULT_MIN_LEASE_TTL, MAX_LEASE_TTL, MAX_PENDING_REQUESTS_PER_SESSION, MAX_SESSIONS_PER_FANOUT,
                     MAX_WATCHES_PER_SESSION)

# Who reads a variable.  The three actors take theirs as constructor keywords; the others read
# it themselves (client, CLI), or are not Python at all (deploy/ units).
ACTORS = ("writer", "syncer", "fanout")
READER_NAMES = {"writer": "writer", "syncer": "syncer", "fanout": "fan-out", "client": "clients, CLI",
                "deploy": "`deploy/` units only", "bench": "`zwatch.tools.bench`"}


class SettingError(ValueError):
    """A malformed value in the environment; the message is one line and names the variable."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: type                       # str, int, float, bool or list (comma-separated strings)
    default: Any                     # None: unset (no value at all)
    read_by: Mapping[str, str | None]  # reader -> its constructor keyword (None: read elsewhere)
    doc: str                         # one line: the "Meaning" column and the .env.example comment
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    env_example: bool = True         # listed in .env.example (PORT and bench knobs are not)
    section: str = field(default="", compare=False)

    def parse(self, raw: str) -> Any:
        """The typed value of a non-empty string; SettingError (one line) if malformed."""
        text = raw.strip()
        try:
            if self.type is bool:
                lowered = text.lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if self.type is list:
                return [item.strip() for item in text.split(",") if item.strip()]
            value = self.type(text)
        except ValueError:
            kind = {int: "an integer", float: "a number", bool: "a boolean (1/0, true/false, yes/no, on/off)"}
            raise SettingError(f"{self.name}={raw!r} is not {kind.get(self.type, 'valid')}: {self.doc}") from None
        if self.choices:
            value = value.lower()
            if value not in self.choices:
                raise SettingError(f"{self.name}={raw!r} is not one of {', '.join(self.choices)}")
        if self.min is not None and value < self.min:
            raise SettingError(f"{self.name}={raw!r} is below its minimum {_render(self.min)}: {self.doc}")
        if self.max is not None and value > self.max:
            raise SettingError(f"{self.name}={raw!r} is above its maximum {_render(self.max)}: {self.doc}")
        return value

    def render_default(self) -> str:
        """The default as it is written in .env.example ('' when unset)."""
        return "" if self.default is None else _render(self.default)

    def render_read_by(self) -> str:
        if all(actor in self.read_by for actor in ACTORS):
            return "all"
        return ", ".join(READER_NAMES[r] for r in self.read_by)


def _render(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(value)
    return str(value)


def _declare(section: str, *settings: Setting) -> list[Setting]:
    return [replace(s, section=section) for s in settings]


_STATS_KWARGS = {"writer": "stats_s", "syncer": "stats_s", "fanout": "stats_s"}
_LOGGING = {"writer": None, "syncer": None, "fanout": None}

# Clients talk to fan-outs on 2379 (etcd's client port) and up; the internal endpoints sit beside it.
SETTINGS: tuple[Setting, ...] = (
    *_declare(
        "shared by the actors",
        Setting("ZWATCH_DATA_DIR", str, "default.zwatch", {"writer": "data_dir", "syncer": "data_dir"},
                "LMDB directory (`data.mdb`, `lock.mdb`) shared by writer and syncer, relative to the working directory"),
        Setting("ZWATCH_WRITER_ENDPOINT", str, "tcp://127.0.0.1:2480",
                {"writer": "endpoint", "fanout": "writer_endpoint"},
                "writer ROUTER (the writer binds, fan-outs connect): write requests and `status`"),
        Setting("ZWATCH_WRITER_CLIENT_ENDPOINT", str, "tcp://127.0.0.1:2483",
                {"writer": "client_endpoint", "fanout": "direct_endpoint"},
                "the writer's ROUTER for clients' writes (`put`, `delete_range`, `txn`) sent straight to it, one "
                "process hop less than through a fan-out; fan-outs tell it to clients in the hello reply (a loopback "
                "address only to a fan-out's clients if the fan-out listens on loopback too). The address must "
                "reach this writer from the clients' hosts. Empty: off. Off with CURVE and while auth is enabled "
                "(then every request goes through the fan-outs)"),
        Setting("ZWATCH_PUB_ENDPOINT", str, "tcp://127.0.0.1:2481",
                {"writer": "pub_endpoint", "fanout": "pub_endpoint"},
                "writer PUB (the writer binds, fan-outs connect): the stream of committed revisions"),
        Setting("ZWATCH_SYNCER_ENDPOINT", str, "tcp://127.0.0.1:2482",
                {"syncer": "endpoint", "fanout": "syncer_endpoint"},
                "syncer ROUTER (the syncer binds, fan-outs connect): reads and catching-up watchers"),
        Setting("ZWATCH_STATS_S", float, 10.0, _STATS_KWARGS, "seconds between `*.stats` log lines, at wall-clock multiples of it (lines of every actor "
                "join on their `at`)", min=0.001),
        Setting("ZWATCH_LOG_LEVEL", str, "info", _LOGGING, "`debug`, `info`, `warning` or `error`",
                choices=("debug", "info", "warning", "error")),
        Setting("ZWATCH_LOG_FORMAT", str, "auto", _LOGGING,
                "`json` forces JSON lines; `console`: readable lines (structlog's console renderer, colors only "
                "on a TTY; for honcho); `auto`: console rendering on a TTY, JSON when not a TTY",
                choices=("auto", "json", "console")),
        Setting("ZWATCH_CURVE_DIR", str, None, {"writer": None, "syncer": None, "fanout": None},
                "CURVE + ZAP on every socket: the key directory written by `zwatch keygen --cluster DIR` "
                "(each actor reads its own `NAME.key_secret`, the peers' public keys, `internal/`, `clients/`); "
                "empty: no encryption, no authentication of peers"),
    ),
    *_declare(
        "fan-out",
        Setting("ZWATCH_FANOUT_ENDPOINT", str, "tcp://127.0.0.1:2379", {"fanout": "endpoint"},
                "client endpoint, when neither `zwatch fanout --listen` nor `PORT` is given"),
        Setting("ZWATCH_FANOUT_ADVERTISE", str, None, {"fanout": "advertise"},
                "the client endpoint this fan-out names in `member list` and `endpoint status` (what clients on "
                "other hosts should dial); unset: the listen endpoint, with 0.0.0.0 or * replaced by the host name"),
        Setting("PORT", int, None, {"fanout": None},
                "not a zwatch variable: set by honcho; a fan-out without `--listen` binds `tcp://127.0.0.1:$PORT` "
                "(never put it in `.env`: it overrides `honcho -p`)", min=1, max=65535, env_example=False),
        Setting("ZWATCH_FANOUT_HOST", str, "127.0.0.1", {"deploy": None},
                "host part of the fan-out's `--listen` in the systemd and supervisord units (`0.0.0.0`: all interfaces)"),
        Setting("ZWATCH_DRAIN_S", float, 10.0, {"fanout": "drain_s"},
                "on SIGTERM a fan-out drains: refuses new sessions, tells its clients to move (goaway) and "
                "exits once they left or after this many seconds (a second SIGTERM, or SIGINT: at once)", min=0),
        Setting("ZWATCH_DRAIN_CREATES_PER_100MS", int, 250, {"fanout": "drain_creates_per_100ms"},
                "draining: watch creates per 100 ms the moving clients may bring to the other fan-outs; sets the "
                "goaway's delay_ms (watches x 100 / this, at most ZWATCH_DRAIN_S / 2); 0: no spreading", min=0),
        Setting("ZWATCH_UPSTREAM_TIMEOUT_S", float, 3.0, {"fanout": "upstream_timeout_s"},
                "a fan-out that hears nothing on the publish stream (not even the writer's heartbeat) and no "
                "answer from the syncer this long (the syncer: at least 3 s, it is pinged every second) is cut off "
                "from the writer's host: it logs `fanout.upstream_lost`, sends its clients elsewhere (goaway), refuses new sessions "
                "(`UNAVAILABLE`, reason `UPSTREAM_LOST`) and is not ready until the stream is back; keep it above "
                "2 x ZWATCH_HEARTBEAT_S", min=0.1),
        Setting("ZWATCH_IDLE_TIMEOUT_S", float, 10.0, {"fanout": "idle_timeout_s"},
                "a client session silent this long (seconds) is closed", min=0),
        Setting("ZWATCH_PROGRESS_INTERVAL_S", float, 600.0, {"fanout": "progress_interval_s"},
                "period of progress notifications for watches with `progress_notify` (at least 0.1)", min=0),
        Setting("ZWATCH_RING_REVISIONS", int, 20_000, {"fanout": "ring_revisions"},
                "recent revisions kept in memory for watchers catching up", min=0),
        Setting("ZWATCH_RING_BYTES", int, 67_108_864, {"fanout": "ring_bytes"},
                "bytes of recent revisions kept in memory for watchers catching up (keys, values and previous "
                "values); with ZWATCH_RING_REVISIONS, whichever is reached first", min=0),
        Setting("ZWATCH_MAX_SESSIONS", int, MAX_SESSIONS_PER_FANOUT, {"fanout": "max_sessions"},
                "client sessions per fan-out (`RESOURCE_EXHAUSTED` beyond)", min=1),
        Setting("ZWATCH_MAX_WATCHES_PER_SESSION", int, MAX_WATCHES_PER_SESSION, {"fanout": "max_watches"},
                "watches per session (`RESOURCE_EXHAUSTED` beyond)", min=1),
        Setting("ZWATCH_MAX_PENDING_REQUESTS", int, MAX_PENDING_REQUESTS_PER_SESSION, {"fanout": "max_pending"},
                "requests of one session forwarded to the writer or syncer and not answered yet "
                "(a keep-alive counts 1 + IDs/64); `RESOURCE_EXHAUSTED` beyond, so one flooding client "
                "cannot queue ahead of everyone else's writes", min=1),
        Setting("ZWATCH_SESSION_HWM", int, 1000, {"fanout": "session_hwm"},
                "frames ZeroMQ may queue towards one client (ROUTER send high-water mark), "
                "a hard backstop behind the window below", min=0),
        Setting("ZWATCH_SESSION_WINDOW_BYTES", int, 8 << 20, {"fanout": "session_window"},
                "unacknowledged bytes of watch frames per session (flow control); more waits", min=1),
        Setting("ZWATCH_STALL_S", float, 2.0, {"fanout": "stall_s"},
                "how long a session's frames may wait for credit before its watches become victims "
                "(they catch up later)", min=0),
        Setting("ZWATCH_STUCK_SESSION_S", float, 60.0, {"fanout": "stuck_session_s"},
                "a session with unacknowledged watch output and no ack progress for this long is closed "
                "(session.close reason `stuck`)", min=0.001),
        Setting("ZWATCH_CURVE_CLIENTS", str, "any", {"fanout": None},
                "with ZWATCH_CURVE_DIR: `any` admits every client key (users log in with a password), "
                "`known` only the keys in `clients/` (a key `clients/NAME.key` is user NAME)",
                choices=("any", "known")),
    ),
    *_declare(
        "writer",
        Setting("ZWATCH_WRITER_MAX_BATCH", int, 4096, {"writer": "max_batch"},
                "write requests committed in one LMDB transaction at most", min=1),
        Setting("ZWATCH_HEARTBEAT_S", float, 1.0, {"writer": "heartbeat_s"},
                "interval of the empty heartbeat publish when idle", min=0.001),
        Setting("ZWATCH_MAP_SIZE", int, 1 << 30, {"writer": "map_size"},
                "initial LMDB map size in bytes; the writer doubles it when full, up to ZWATCH_MAX_MAP_SIZE", min=1),
        Setting("ZWATCH_MAX_MAP_SIZE", int, 1 << 40, {"writer": "max_map_size"},
                "the largest the map may grow to; writes beyond fail with `NO_SPACE` "
                "(cap it below the disk to keep headroom)", min=1),
        Setting("ZWATCH_LEASE_MIN_TTL", int, DEFAULT_MIN_LEASE_TTL, {"writer": "lease_min_ttl"},
                "seconds: a lease granted with a smaller TTL gets this one; keep it above a client's "
                "failover time (3 heartbeats plus a reconnect) so a fan-out's death never expires a lease",
                min=1, max=MAX_LEASE_TTL),
        Setting("ZWATCH_LEASE_REVOKE_BATCH", int, 100, {"writer": "lease_revoke_batch"},
                "expired leases revoked per group commit at most (each is one revision), so a mass expiry "
                "is spread over commits instead of holding writes back", min=1),
        Setting("ZWATCH_AUTO_COMPACTION_MODE", str, "periodic", {"writer": "auto_compaction_mode"},
                "etcd's `--auto-compaction-mode`: `periodic` keeps a time window of history, `revision` "
                "the last N revisions", choices=("periodic", "revision")),
        Setting("ZWATCH_AUTO_COMPACTION_RETENTION", str, "1h", {"writer": "auto_compaction_retention"},
                "etcd's `--auto-compaction-retention`: periodic: a duration (`1h`, `30m`, `90s`, `1h30m`) or an "
                "integer number of HOURS; revision: the number of revisions kept; `0`: no automatic compaction"),
        Setting("ZWATCH_AUTO_COMPACTION_INTERVAL_S", float, 300.0, {"writer": "auto_compaction_interval_s"},
                "revision mode: seconds between checks (etcd: 5 minutes); periodic mode samples every "
                "retention/10 (at most 6 minutes)", min=0.001),
        Setting("ZWATCH_COMPACTION_BATCH_LIMIT", int, 1000, {"writer": "compaction_batch_limit"},
                "etcd's `--experimental-compaction-batch-limit`: keys visited plus records removed per physical "
                "compaction chunk (one durable txn, between batches of writes)", min=1),
        Setting("ZWATCH_QUOTA_BACKEND_BYTES", int, 2 << 30, {"writer": "quota_backend_bytes"},
                "etcd's `--quota-backend-bytes`: at this LMDB file size the NOSPACE alarm is raised and writes "
                "that grow the store fail `NO_SPACE` until `zwatch alarm disarm`; `0`: the default (2 GiB), "
                "negative: no quota; etcd advises at most 8 GiB.  Never above ZWATCH_MAX_MAP_SIZE less an eighth "
                "(at most 1 GiB less): at a full map even deletes and compaction could not commit"),
    ),
    *_declare(
        "syncer",
        Setting("ZWATCH_SYNC_BATCH", int, 512, {"syncer": "batch_size"},
                "catching-up watchers served by one history scan", min=1),
        Setting("ZWATCH_SYNC_QUIET_S", float, 0.01, {"syncer": "quiet_s"},
                "a batch of catching-up watchers starts once registrations pause this long...", min=0),
        Setting("ZWATCH_SYNC_BATCH_DELAY_S", float, 0.1, {"syncer": "batch_delay_s"},
                "...or at the latest this long after the first one, so that watchers created together share a scan",
                min=0),
        Setting("ZWATCH_SYNC_CHUNK_REVISIONS", int, 2000, {"syncer": "chunk_revisions"},
                "revisions read per chunk (and at most 4x this many records)", min=1),
        Setting("ZWATCH_SYNC_CHUNK_BYTES", int, 1 << 20, {"syncer": "chunk_bytes"},
                "bytes read per chunk (capped at 1.5 MiB); one revision is always read whole", min=1),
        Setting("ZWATCH_SYNC_KEY_INDEX_MAX_KEYS", int, 64, {"syncer": "key_index_max_keys"},
                "a batch whose watchers cover at most this many keys reads their records through the key index "
                "instead of scanning the whole history, when that is cheaper by its estimate (docs/design.md, "
                "\"Reading through the key index\"); 0: always scan", min=0),
        Setting("ZWATCH_SYNC_KEY_READ_COST", float, 4.0, {"syncer": "key_read_cost"},
                "what one record read through the key index costs, in records of a sequential scan: the key "
                "index is taken when the keys' records times this are fewer than the revisions left to scan",
                min=0),
        Setting("ZWATCH_SNAPSHOT_DIR", str, None, {"syncer": "snapshot_dir"},
                "where the syncer writes the snapshot copies `zwatch snapshot save` pulls (one full compacted "
                "copy each, removed once read or after 60 s idle); empty: `DATA_DIR/snapshots`"),
    ),
    *_declare(
        "metrics (Prometheus `/metrics`; needs `pip install 'zwatch[metrics]'`)",
        Setting("ZWATCH_WRITER_METRICS_PORT", int, None, {"writer": "metrics_port"},
                "the writer serves Prometheus `/metrics` on this port; empty: off", min=1, max=65535),
        Setting("ZWATCH_SYNCER_METRICS_PORT", int, None, {"syncer": "metrics_port"},
                "the syncer serves Prometheus `/metrics` on this port; empty: off", min=1, max=65535),
        Setting("ZWATCH_FANOUT_METRICS_PORT", int, None, {"fanout": "metrics_port"},
                "a fan-out serves Prometheus `/metrics` on this port; empty: off.  Each fan-out of a host "
                "needs its own: `zwatch fanout --metrics-port N` wins over it", min=1, max=65535),
        Setting("ZWATCH_METRICS_HOST", str, "127.0.0.1",
                {"writer": "metrics_host", "syncer": "metrics_host", "fanout": "metrics_host"},
                "address the `/metrics` servers bind (`0.0.0.0`: all interfaces; they have no authentication)"),
    ),
    *_declare(
        "clients (zwatch CLI, zwatch.Client)",
        Setting("ZWATCH_ENDPOINTS", list, ["tcp://127.0.0.1:2379"], {"client": None},
                "fan-outs to try, in order, comma-separated (`host:port` means `tcp://host:port`)"),
        Setting("ZWATCH_CURVE_SERVER_KEY", str, None, {"client": None},
                "CURVE on: path of the fan-outs' public key file (`fanout.key` of the key directory); "
                "empty: plain connection"),
        Setting("ZWATCH_CURVE_CLIENT_KEY", str, None, {"client": None},
                "with ZWATCH_CURVE_SERVER_KEY: path of this client's secret key file (`NAME.key_secret`); "
                "empty: a fresh key pair per client"),
        Setting("ZWATCH_USER", str, None, {"client": None},
                "`NAME` or `NAME:PASSWORD`: the user the client logs in as (like `--user`); empty: anonymous"),
        Setting("ZWATCH_PASSWORD", str, None, {"client": None},
                "the password of ZWATCH_USER when it has none (like `--password`); never logged"),
    ),
    *_declare(
        "benchmarks",
        Setting("ZWATCH_BENCH_PROFILE_CLIENTS", str, None, {"bench": None},
                "a directory: every bench client process writes a profile of its threads there",
                env_example=False),
        Setting("ZWATCH_BENCH_ETCD_PROTO_ROOT", str, None, {"bench": None},
                "where to look first for etcd's `.proto` files when building the etcd client stubs",
                env_example=False),
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
assert len(BY_NAME) == len(SETTINGS), "a variable is declared twice"


def declaration(name: str) -> Setting:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not declared in zwatch.settings.SETTINGS") from None


def default(name: str) -> Any:
    value = declaration(name).default
    return list(value) if isinstance(value, list) else value


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The typed value of `name` from the environment, or its default when unset or empty."""
    setting = declaration(name)
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return default(name)
    return setting.parse(raw)


def for_reader(reader: str) -> list[Setting]:
    return [s for s in SETTINGS if reader in s.read_by]


def check(reader: str, environ: Mapping[str, str] | None = None) -> None:
    """Parse every variable `reader` reads; SettingError on the first malformed one."""
    for setting in for_reader(reader):
        get(setting.name, environ)


def actor_kwargs(actor: str, accepts: Callable | None = None, environ: Mapping[str, str] | None = None,
                 **overrides) -> dict[str, Any]:
    """The constructor keywords of `actor` ("writer", "syncer", "fanout") from the environment.

    `overrides` that are not None win (the fan-out's --listen).  With `accepts` (the class), a
    declared keyword that its constructor does not take yet is left out, so a variable can be
    declared before the actor uses it; tests/unit/test_settings.py reports every such gap.
    """
    params = inspect.signature(accepts).parameters if accepts is not None else None
    kwargs = {}
    for setting in for_reader(actor):
        keyword = setting.read_by[actor]
        if keyword is None or (params is not None and keyword not in params):
            continue
        kwargs[keyword] = get(setting.name, environ)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs
