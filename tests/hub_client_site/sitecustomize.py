"""Start-up code of every Hub-client subprocess in tests/test_hub.py (this folder comes first on their PYTHONPATH).

- Any network access to a host other than the loopback test server fails loudly (and is reported on stderr, which the
  tests check), so no test can reach the real Hub or anything else.
- `import hf_xet` fails: uploads and downloads against the test server must not need it.
"""

import sys

sys.modules["hf_xet"] = None

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _guard(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    if isinstance(host, bytes):
        host = host.decode()
    if host is not None and host not in _LOOPBACK:
        sys.stderr.write(f"NON-LOOPBACK NETWORK ACCESS: {event} {host!r}\n")
        raise PermissionError(f"the Hub tests allow 127.0.0.1 only, not {host!r}")


sys.addaudithook(_guard)
