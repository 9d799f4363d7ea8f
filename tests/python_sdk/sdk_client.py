"""Drives the PyPI `python-discovery-client` SDK, unchanged, against a node.

Usage: sdk_client.py HOST:PORT
Exits 0 and prints "python sdk ok" when register, fetch, renew and watch
(long polls with comma-joined appid/latest_timestamp) all behave.
"""
import os
import sys
import threading
import time

from discovery import Client, Config


def wait_for(what, check, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for " + what)


def main():
    domain = sys.argv[1]
    one = Client(Config(domain=domain, region="sh", zone="sh001", env="dev", host="py-host-1"), timeout=10)
    two = Client(Config(domain=domain, region="sh", zone="sh001", env="dev", host="py-host-2"), timeout=10)

    # register sends addrs comma-joined; they come back as a list.
    one.register("py.app", ["http://127.0.0.1:8080", "grpc://127.0.0.1:9090"])
    zones = one.fetch("py.app")
    got = zones["sh001"][0]
    assert got["hostname"] == "py-host-1", got
    assert got["addrs"] == ["http://127.0.0.1:8080", "grpc://127.0.0.1:9090"], got["addrs"]

    # renew goes through the SDK's own request.
    one._send(one._renew_req("py.app"))

    # watch: the SDK's daemon long-polls; the first poll answers at once.
    seen = []
    lock = threading.Lock()

    def on_change(instances):
        with lock:
            seen.append(instances)

    one.watch("py.app", on_change)
    wait_for("the first watch callback", lambda: len(seen) >= 1)

    # Another client registers: the held poll wakes and the watcher sees it.
    two.register("py.app", ["http://127.0.0.1:8081"])

    def sees_both():
        with lock:
            return any(len(z.get("sh001", [])) == 2 for z in seen)

    wait_for("the second instance in a watch callback", sees_both)
    print("python sdk ok")
    sys.stdout.flush()
    # The SDK's crontab threads do not stop on their own.
    os._exit(0)


if __name__ == "__main__":
    main()
