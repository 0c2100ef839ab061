"""zwatch's benchmark suite, optionally side by side with etcd: ``python -m zwatch.tools.bench``.

Workloads (defaults are the performance issue's parameters; ``--quick`` shrinks them):

* put_seq        sequential puts from one client: puts/s, latency percentiles
* put_conc       puts from N client processes, one request in flight each (group commit)
* watch_latency  W watchers on one key over C connections in P processes, puts at a fixed rate;
                 latency from the put being sent to the watcher's application code getting it
* watch_latency_distinct  the same, but every watcher with its OWN spec that still matches every
                 put: watcher k of connection c watches [K, K + 0xff + c (4 bytes) + k (4 bytes)),
                 K being the one key written (no two specs equal, nothing shareable by spec)
* fanout         W watchers on one prefix, puts as fast as N writers go: deliveries/s, CPU
* catchup        R revisions over K keys, then 1 / 100 / 1000 watchers from the first revision
                 on a prefix matching 10%: time until every watcher has every event
* memory         RSS growth of all server processes per watcher at 10k / 50k / 100k watchers
* startup, history_single_key (zwatch only, bigstore.py)  on a cached 1M-revision store: launch
                 to first served request; one key watched from revision 1 (time, records read,
                 the syncer's RssAnon / RssFile after)
* lease_keepalive, lease_expiry (zwatch only, lease_workloads.py)

Every workload reports client and server CPU per unit of work (put, event, delivery, watcher).
With --against-etcd, etcd runs through grpc.aio (one event loop per client process; see
drivers.py); --repeat N alternates the systems (zwatch #1, etcd #1, zwatch #2, ...) and the
tables show medians with [min..max].  The run ends with issue #15's table (report.py).

Each workload starts its own zwatch (``zwatch.tools.cluster``) on a temp dir (or uses
``--endpoints``) and, with ``--against-etcd``, its own etcd; clients are separate processes.
Output: one JSON line per workload variant on stdout, then a table (see docs/performance.md).
Bench-only dependencies (optional extra ``bench``): grpcio, grpcio-tools, psutil.
"""
