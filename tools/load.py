"""Load and verification plumbing that the drain/defrag system tests and tools/bench/drain.py
share: a writer thread putting all along (recording what was acknowledged), reading a watch's
queue up to a final revision, and running tools/checker.py over the store's own history.

Lives in tools/ (not tests/support.py) because the bench tool uses it too, and tools never
import tests."""
from __future__ import annotations

import queue
import threading
import time

from zwatch.tools import checker
from zwatch.tools.checker import AckedWrite, StreamRecord


class PutAllAlong:
    """A daemon thread putting key_of(n), f"v{n}" for n = 0, 1, ... every `interval` seconds until
    stop(); each acknowledged put is in `acked` (for the checker), each error of the `catch`
    classes is counted in `failures` (repr) and the thread goes on: the caller asserts or reports."""

    def __init__(self, client, key_of, interval: float, catch=(Exception,)):
        self.client, self.key_of, self.interval, self.catch = client, key_of, interval, catch
        self.acked: list[AckedWrite] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PutAllAlong:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0):
        self._stop.set()
        self._thread.join(timeout)

    def _run(self):
        n = 0
        while not self._stop.is_set():
            key, value = self.key_of(n), f"v{n}"
            try:
                rev = self.client.put(key, value).header.revision
                self.acked.append(AckedWrite(rev, ((key.encode(), value.encode()),)))
            except self.catch as exc:
                self.failures.append(repr(exc))
            n += 1
            time.sleep(self.interval)


def read_stream(w, rec: StreamRecord, final: int, deadline: float) -> bool:
    """Append what watch `w` delivers to rec.responses until the stream reached `final` or ended
    (the checker then says what is missing). False if time.monotonic() passed `deadline` first."""
    while checker.stream_reached(rec) < final:
        if time.monotonic() >= deadline:
            return False
        try:
            r = w.get(timeout=1.0)
        except queue.Empty:
            continue
        if r is None:
            break
        rec.responses.append(r)
    return True


def check_store_history(data_dir: str, records, *, acked, first: int, final: int) -> checker.CheckResult:
    """Every guarantee over the store's history from `first` to `final` (read from the LMDB file in
    data_dir, so the cluster must be stopped) against the watch streams and acknowledged writes."""
    from zwatch.actors.store import Store
    store = Store(data_dir)
    try:
        with store.reader() as view:
            recs = view.history(first, final, max_records=1 << 30, max_bytes=1 << 40)
    finally:
        store.close()
    return checker.check_all(checker.history_from_store_records(recs), list(records), acked=acked,
                             first_revision=first, final_revision=final)


def take_queued(w, rec: StreamRecord, timeout: float = 0.0) -> int:
    """Append to rec.responses what watch `w` has queued, until nothing more comes for `timeout`
    seconds or the stream ended; returns how many were taken (a reader polling many watches)."""
    n = 0
    while True:
        try:
            r = w.get(timeout=timeout)
        except queue.Empty:
            return n
        if r is None:
            return n
        rec.responses.append(r)
        n += 1
