"""``zwatch``: an etcdctl (v3.4) look-alike over the zwatch client (``zwatch = "zwatch.cli:main"``).

    args.py      flags shared by the verbs and the request lines of a txn
    format.py    etcdctl's output: the simple printer (--hex) and ``-w json``
    printers.py  the -w printer of put/get/del/txn/watch: simple, json, fields, table (refused, exit 4)
    watchcmd.py  watch [-- CMD], watch -i, progress notifications, etcdctl's exit 5
    txnparse.py  etcdctl's txn input (compares, success and failure requests)
    leasecmd.py  lease grant|revoke|timetolive|list|keep-alive, lock and elect (etcdctl's rules)
    main.py      the verbs, their dispatch and ``main()``; writer|syncer|fanout go to zwatch.actors
"""
from .args import SORT_TARGETS, UsageError, get_kwargs, parse_duration, range_args
from .format import (go_quote, humanize_bytes, j_del, j_header, j_kv, j_put, j_range, j_txn, j_watch, print_del,
                     print_get, print_put, print_txn, print_watch)
from .main import ACTORS, COMMANDS, VERBS, build_parser, main, run_actor, split_exec  # noqa: F811 (main: the function)
from .txnparse import argify, go_unquote, parse_compare, parse_op, read_txn

__all__ = ["main", "build_parser", "split_exec", "run_actor", "ACTORS", "VERBS", "COMMANDS", "SORT_TARGETS",
           "UsageError", "parse_duration", "range_args", "get_kwargs", "go_quote", "humanize_bytes", "j_header",
           "j_kv", "j_range", "j_put", "j_del", "j_txn", "j_watch", "print_get", "print_put", "print_del",
           "print_txn", "print_watch", "go_unquote", "parse_compare", "argify", "parse_op", "read_txn"]
