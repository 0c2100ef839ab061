"""``zwatch alarm list|disarm``, as etcdctl 3.4 runs them (etcdctl/ctlv3/command/alarm_command.go,
printer_simple.go / printer_json.go).

Output, checked against etcdctl 3.4.23 (tests/system/test_alarm.py):

* simple: one line per alarm, Go's ``%+v`` of etcd's AlarmMember, trailing space included::

      memberID:5560084228340343511 alarm:NOSPACE 

  nothing at all when no alarm is active (exit 0).
* ``-w json``: ``{"alarms":[{"memberID":5560084228340343511,"alarm":1}]}`` (the alarm as etcd's
  enum number, NOSPACE = 1; etcd 3.4 sends no header here), ``{}`` when none.
* ``disarm`` prints the alarms it disarmed, in the same format.
* An argument: ``Error: alarm list command accepts no arguments``, exit 128; a failed request:
  ``Error: <message>``, exit 1.
* ``-w table``: ``Error: table not supported as output format``, exit 4 (etcdctl's
  ExitBadFeature); ``-w fields`` the same here, where etcdctl 3.4.23 crashes on the missing header.

With auth enabled, listing needs any authenticated user and disarming needs root (etcd 3.4.45's
authMaintenanceServer.Alarm).
"""
from __future__ import annotations

from ..client import Client
from ..errors import ZwatchError
from .args import EXIT_BAD_ARGS, CommandError
from .format import error_text, json_line, write_line

EXIT_BAD_FEATURE = 4                    # etcdctl's ExitBadFeature
# etcd's AlarmType enum (etcdserverpb.AlarmType): what -w json prints.
ALARM_NUMBERS = {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}


def add_alarm(p, add_globals_to):
    sub = p.add_subparsers(dest="alarm_action", required=True, metavar="ACTION")
    for name, help_ in (("list", "Lists all alarms"), ("disarm", "Disarms all alarms")):
        q = sub.add_parser(name, help=help_)
        add_globals_to(q)
        q.add_argument("args", nargs="*")     # etcdctl's own message (and exit 128) for any argument


def print_alarms(a, r):
    if a.write_out == "json":
        json_line({"alarms": [{"memberID": m.member_id, "alarm": ALARM_NUMBERS.get(m.alarm, 0)}
                              for m in r.alarms]} if r.alarms else {})
        return
    for m in r.alarms:
        write_line(f"memberID:{m.member_id} alarm:{m.alarm} ")


def cmd_alarm(a, c: Client):
    action = a.alarm_action
    if a.args:
        raise CommandError(f"alarm {action} command accepts no arguments", EXIT_BAD_ARGS)
    if a.write_out not in ("simple", "json"):
        raise CommandError(f"{a.write_out} not supported as output format", EXIT_BAD_FEATURE)
    try:
        r = c.alarm_list() if action == "list" else c.alarm_disarm()
    except ZwatchError as exc:
        raise CommandError(error_text(exc)) from None
    print_alarms(a, r)
    return 0
