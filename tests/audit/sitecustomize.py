"""Loaded by every Python process started with this folder on PYTHONPATH (tests/test_no_network.py):
records each socket connection or name lookup whose target is not this machine, one JSON line per
attempt in $ASSISTANT_AUDIT_OUT, and makes the attempt fail. Child processes inherit it."""

import ipaddress
import json
import os
import sys

_OUT = os.environ.get("ASSISTANT_AUDIT_OUT")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
           "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg", "socket.getnameinfo"}


def _local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%")[0].lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _target(event: str, args: tuple):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1] if len(args) > 1 else None
        if isinstance(address, str | bytes) or address is None:  # AF_UNIX path / abstract socket
            return None
        return address[0] if isinstance(address, tuple) and address else address
    if event == "socket.getnameinfo":
        return args[0][0] if args and isinstance(args[0], tuple) else args[0]
    return args[0] if args else None


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS:
        return
    host = _target(event, args)
    if _local(host):
        return
    with open(_OUT, "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), "event": event, "target": repr(host),
                            "argv": sys.argv[:3]}) + "\n")
    raise OSError(f"audit: {event} to {host!r} refused (nothing may leave the machine)")


if _OUT:
    sys.addaudithook(_hook)
