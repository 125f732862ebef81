"""peer_python.py: N sequential create_or_update upserts with a requests.Session (one kept-alive
connection), each with a distinct email, the answer decoded as the module decodes it. Users are
built before the clock starts.
   python3 bench/peer_python.py URL N [PREFIX]   (prints "requests N seconds S rps R")
"""
import sys
import time

import requests


def main():
    if len(sys.argv) < 3 or int(sys.argv[2]) < 1:
        sys.stderr.write("usage: peer_python.py URL N [PREFIX]\n")
        return 2
    url, n = sys.argv[1], int(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else "py"
    endpoint = url + "/api/v2/users/create_or_update.json"
    session = requests.Session()
    session.auth = ("admin@example.com/token", "stand-in-token")
    session.headers.update({"Accept": "application/json"})
    users = [{"user": {"email": "%s-%d@example.com" % (prefix, i), "name": "Bench User %d" % i}}
             for i in range(1, n + 1)]
    failed = 0
    t0 = time.monotonic()
    for i, body in enumerate(users):
        try:
            r = session.post(endpoint, json=body)
            if r.status_code not in (200, 201) or "id" not in r.json()["user"]:
                raise RuntimeError("HTTP %d" % r.status_code)
        except Exception as e:  # noqa: BLE001 - report the first failure, count the rest
            if failed == 0:
                sys.stderr.write("peer_python: request %d: %s\n" % (i + 1, e))
            failed += 1
    s = time.monotonic() - t0
    print("requests %d seconds %.6f rps %.1f failed %d" % (n, s, n / s, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
