"""Audit of issue #12's defrag follower (actors/store/defrag.py, the syncer's start in
actors/syncer/service.py): each test is named after the bug it pins down; unfixed bugs are
strict xfails for their owner."""
from __future__ import annotations

import multiprocessing

from zwatch.actors.store import Store, defrag


def _syncer_like_reader(path, q_in, q_out):
    """The syncer's start, step by step (Syncer.run): the store opened under the shared swap
    lock, the lock released, then the Follower built; then one read through the follower."""
    with defrag.swap_lock(path, exclusive=False):
        store = Store(path)
    q_out.put(("opened", store.current_revision()))
    assert q_in.get(timeout=60) == "go"          # a defrag swaps the files in this gap
    follower = defrag.Follower(store)
    with follower.reading():
        q_out.put(("read", store.current_revision()))
    store.close()


def test_syncer_started_during_a_defrag_swap_follows_the_new_file(tmp_path):
    path = str(tmp_path)
    writer = Store(path)
    writer.apply_batch([("put", {"key": b"before", "value": b"x" * 1000})])
    ctx = multiprocessing.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_syncer_like_reader, args=(path, q_in, q_out))
    p.start()
    try:
        assert q_out.get(timeout=60) == ("opened", writer.current_revision())
        defrag.defrag(writer)                                           # the swap lands in the gap
        writer.apply_batch([("put", {"key": b"after", "value": b"y"})])  # only in the new file
        q_in.put("go")
        assert q_out.get(timeout=60) == ("read", writer.current_revision())
    finally:
        p.join(60)
        writer.close()
