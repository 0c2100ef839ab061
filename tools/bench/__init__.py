"""zwatch's benchmark suite, optionally side by side with etcd: ``python -m zwatch.tools.bench``.

Workloads (defaults are the performance issue's parameters; ``--quick`` shrinks them):

* put_seq        sequential puts from one client: puts/s, latency percentiles
* put_conc       puts from N client processes, one request in flight each (group commit)
* watch_latency  W watchers on one key over C connections in P processes, puts at a fixed rate;
                 latency from the put being sent to the watcher's application code getting it
* fanout         W watchers on one prefix, puts as fast as N writers go: deliveries/s, CPU
* catchup        R revisions over K keys, then 1 / 100 / 1000 watchers from the first revision
                 on a prefix matching 10%: time until every watcher has every event
* memory         RSS growth of all server processes per watcher at 10k and 50k watchers

Each workload starts its own zwatch (``zwatch.tools.cluster``) on a temp dir (or uses
``--endpoints``) and, with ``--against-etcd``, its own etcd; clients are separate processes.
Output: one JSON line per workload variant on stdout, then a table (see docs/performance.md).
Bench-only dependencies (optional extra ``bench``): grpcio, grpcio-tools, psutil.
"""
