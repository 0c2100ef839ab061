"""`zwatch up`'s restart back-off (actors/supervise.py), without processes."""
from zwatch.actors.supervise import Backoff


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_run():
    b = Backoff()
    assert [b.died(0.5) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert b.died(10.0) == 0.1          # it stayed up 10 s: a fresh start
    assert b.died(1.0) == 0.2


def test_fanout_k_gets_the_metrics_port_setting_plus_k(monkeypatch):
    from zwatch.actors.supervise import children
    monkeypatch.setenv("ZWATCH_FANOUT_METRICS_PORT", "9379")
    kids = {k.name: k.env for k in children(3, 2379)}
    assert [kids[f"fanout.{k}"]["ZWATCH_FANOUT_METRICS_PORT"] for k in (1, 2, 3)] == ["9379", "9380", "9381"]
    assert [kids[f"fanout.{k}"]["PORT"] for k in (1, 2, 3)] == ["2379", "2380", "2381"]
    monkeypatch.delenv("ZWATCH_FANOUT_METRICS_PORT")
    assert all("ZWATCH_FANOUT_METRICS_PORT" not in k.env for k in children(2, 2379))


def test_a_child_exiting_2_is_not_restarted_and_the_others_keep_running():
    """Real child processes: exit code 2 is a configuration error (a port in use...): restarting
    it would only loop.  Another child that dies (code 1) is still restarted."""
    import io
    import signal
    import sys
    import threading
    import time
    from zwatch.actors.supervise import Child, Supervisor
    env = {"PATH": "/usr/bin:/bin"}
    bad = Child("bad", [sys.executable, "-c", "import sys; sys.exit(2)"], env)
    flaky = Child("flaky", [sys.executable, "-c", "import sys; sys.exit(1)"], env)
    good = Child("good", [sys.executable, "-c", "import time; time.sleep(60)"], env)
    out = io.StringIO()
    sup = Supervisor([bad, flaky, good], out=out)

    def stop_when_seen():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (bad.gave_up and flaky.restarts >= 2):
            time.sleep(0.02)
        time.sleep(0.3)                    # a restart of bad, if any, would show by now (back-off 0.1 s)
        sup._signal(signal.SIGTERM, None)

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    threading.Thread(target=stop_when_seen, daemon=True).start()
    try:
        assert sup.run() == 0
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    print(out.getvalue())
    assert bad.gave_up and bad.restarts == 0
    assert out.getvalue().count("bad started") == 1 and out.getvalue().count("not restarted") == 1
    assert flaky.restarts >= 2 and not flaky.gave_up
    assert good.restarts == 0 and good.proc.returncode == -signal.SIGTERM
