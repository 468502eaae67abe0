#!/usr/bin/env python3
"""A PostgreSQL password rotated on disk is used without a restart (issue 13): eqs and ekv on a
PostgreSQL server of this run's own (initdb, SCRAM password authentication over TCP — the
machine's server trusts every local connection, so it cannot tell a wrong password), with
`password: file:…`. The role's password changes, its sessions are ended; until the file has
the new password new connections are refused, once it has, the proxies connect and serve again.

Run by scripts/test (as root it runs the server as the `postgres` user):
  db_rotation.py --bin-dir DIR --work DIR
"""

import argparse
import base64
import glob
import os
import shutil
import subprocess
import time

from harness import check, failures, free_port, request, start_proxy, until


def postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("initdb not found: the PostgreSQL server package is needed (apt install postgresql)")
    return os.path.dirname(found[-1])


class Server:
    """A throw-away PostgreSQL cluster on a free loopback port."""

    def __init__(self, work):
        self.bin = postgres_bin()
        self.dir = os.path.join(work, "pg")
        self.socket = os.path.join(work, "pgsock")
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        for path in (self.dir, self.socket):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            if self.as_postgres:
                shutil.chown(path, "postgres", "postgres")
        if self.as_postgres:
            shutil.chown(work, "postgres", "postgres")
        self.run("initdb", "-D", self.dir, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256")
        self.run("pg_ctl", "-D", self.dir, "-l", os.path.join(self.dir, "server.log"), "-w", "start", "-o",
                 f"-p {self.port} -k {self.socket} -c listen_addresses=127.0.0.1 -c fsync=off")

    def run(self, tool, *args):
        command = [os.path.join(self.bin, tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def sql(self, statement, database="postgres"):
        command = ["psql", "-h", self.socket, "-p", str(self.port), "-U", "postgres", "-d", database,
                   "-v", "ON_ERROR_STOP=1", "-Atc", statement]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def stop(self):
        self.run("pg_ctl", "-D", self.dir, "-m", "immediate", "stop")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    work = os.path.abspath(args.work)
    server = Server(work)
    procs = []
    try:
        server.sql("CREATE ROLE exo LOGIN PASSWORD 'first-password'")
        server.sql("CREATE DATABASE exo OWNER exo")
        secret = os.path.join(work, "pg-password")
        with open(secret, "w") as f:
            f.write("first-password\n")
        url = f"postgres://exo@127.0.0.1:{server.port}/exo"
        urls = {}
        for proxy, section in (("eqs", "kind: postgres"), ("ekv", "kind: postgres")):
            config = os.path.join(work, f"{proxy}.yaml")
            with open(config, "w") as f:
                f.write(f"backend:\n  {section}\n  url: {url}\n  password: file:{secret}\n  schema: rot_{proxy}\n"
                        f"  connections: 2\n")
            proc, base = start_proxy(os.path.join(args.bin_dir, f"{proxy}-proxy"), config,
                                     os.path.join(work, f"{proxy}.log"))
            procs.append(proc)
            urls[proxy] = base
        eqs, ekv = urls["eqs"], urls["ekv"]
        body = base64.b64encode(b"v").decode()

        def send():
            return request("POST", f"{eqs}/api/v1/queues/rotating/messages", {"message": {"body": body}})[0] == 200

        def put():
            return request("PUT", f"{ekv}/api/v1/tables/rotating/entries/k", {"value": body})[0] == 200

        check(request("POST", f"{eqs}/api/v1/queues", {"name": "rotating"})[0] in (200, 201), "eqs makes a queue")
        check(request("POST", f"{ekv}/api/v1/tables", {"name": "rotating"})[0] in (200, 201), "ekv makes a table")
        check(send() and put(), "with the first password: eqs sends, ekv puts")

        print("the role's password changed, its sessions ended, the file not yet changed")
        server.sql("ALTER ROLE exo PASSWORD 'second-password'")
        server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'exo'")
        time.sleep(6)  # past the proxies' 5 s re-read interval: the file is read again, unchanged
        check(not until(lambda: send() or put(), 3), "new connections with the old password are refused")
        log = open(os.path.join(work, "ekv.log")).read() + open(os.path.join(work, "eqs.log")).read()
        check("password authentication failed" in log, "and the proxies say why (password authentication failed)")

        print("the file gets the new password")
        started = time.monotonic()
        with open(secret + ".new", "w") as f:
            f.write("second-password\n")
        os.replace(secret + ".new", secret)
        back = until(lambda: send() and put(), 15)
        check(back, f"eqs and ekv serve again with the new password without a restart "
                    f"(after {time.monotonic() - started:.1f} s)")
        check(all(p.poll() is None for p in procs), "neither proxy restarted")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        server.stop()
    if failures:
        raise SystemExit(f"db_rotation: {len(failures)} check(s) failed")
    print("db_rotation: every check passed")


if __name__ == "__main__":
    main()
