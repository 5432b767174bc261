#!/usr/bin/env python3
"""Deploy fedprune on this machine as on real ones: a SuperLink and N SuperNodes.

    python scripts/local_deploy.py --nodes 3                       # insecure
    python scripts/local_deploy.py --nodes 3 --tls                  # the secure variant
    python scripts/local_deploy.py --nodes 3 --tls --security-probes \
        --run-config "strategy='fedprune' num-server-rounds=2"

Every process is a Flower 1.41 Deployment Engine process on 127.0.0.1, in the
same topology as docker/compose.yaml: ``flower-superlink --isolation process``
(Fleet, Control and Runtime APIs on one port) with the ServerApp's
``flower-superexec``, and per client a ``flower-supernode --isolation process
--node-config "partition-id=i num-partitions=N"`` with its ClientApp
``flower-superexec``.

``--tls`` is the secure variant (docs/deployment.md): a CA and a server
certificate (SANs localhost, 127.0.0.1) made with openssl
(docker/make-certs.sh); SuperNode authentication (each node gets an ECDSA key
pair whose public key is registered with ``flwr supernode register``; the
SuperLink accepts registered nodes only); SuperExec authentication (one
shared secret for the SuperLink, the SuperNodes and every SuperExec); and the
SuperLink on 127.0.0.1 only, reached by the SuperNodes through the Fleet-only
gateway (scripts/fleet_gateway.py), the one port other machines would reach.
The Control API (``flwr``) is used on the SuperLink's own port, from this
host. (``--auth`` is accepted and implied by ``--tls``.)

The run is submitted with ``flwr run <app> local-deploy --stream``; its real
status is read with ``flwr ls`` (``flwr run`` exits 0 even on failure). Every
process started here is stopped by PID at the end (SuperNodes first), also on
failure. Exit code 0 only if the run finished as ``finished:completed`` (and,
with ``--security-probes``, every probe was refused: a node with an
unregistered key, a node without TLS, a node trusting another CA, a SuperExec
without the shared secret, and Control calls on the Fleet address).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """A Flower command: beside this Python (its virtual environment), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install flwr in this Python's environment")
    return found


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """Processes of one local deployment, stopped by PID on exit."""

    def __init__(self, work: Path, tls: bool, auth: bool, isolation: str = "process") -> None:
        if auth and not tls:
            raise SystemExit("--auth needs --tls (Flower's SuperNode authentication runs over TLS)")
        # the TLS variant is the secure one: SuperNode and SuperExec authentication on,
        # and the SuperLink reached from outside only through the Fleet gateway
        self.work, self.tls, self.auth, self.isolation = work, tls, tls, isolation
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.port = free_port()  # the SuperLink: Fleet, Control and Runtime APIs, 127.0.0.1 only
        # where SuperNodes connect: the Fleet-only gateway with TLS, else the SuperLink
        self.fleet_port = free_port() if tls else self.port
        self.secret: Path | None = None  # the SuperExec shared secret (TLS variant)
        # Flower starts flwr-serverapp / flwr-clientapp by name: put this Python's bin first
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, "FLWR_HOME": str(work / "flwr-home"),
                    "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TQDM_DISABLE": "1"}
        (work / "flwr-home").mkdir(parents=True, exist_ok=True)
        (work / "logs").mkdir(exist_ok=True)

    # -- processes -------------------------------------------------------------
    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / "logs" / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.work, start_new_session=True)
        self.procs.append((name, proc))
        print(f"[deploy] started {name} (pid {proc.pid})", flush=True)
        return proc

    def stop_all(self) -> None:
        """SuperExecs, then SuperNodes, then the SuperLink: each tier gets SIGTERM at once,
        and whatever of it still runs 10 s later gets SIGKILL (its process group)."""
        order = ("superexec", "supernode", "probe", "gateway", "superlink")
        for tier in order:
            live = [(n, p) for n, p in self.procs if n.split("-")[0] == tier and p.poll() is None]
            for _, proc in live:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10.0
            for name, proc in live:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                print(f"[deploy] stopped {name} (pid {proc.pid})", flush=True)

    def flwr(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run([tool("flwr"), *args], env=self.env, check=check, cwd=ROOT,
                              capture_output=capture, text=True)

    # -- set-up ----------------------------------------------------------------
    def certificates(self) -> Path:
        certs = self.work / "certs"
        subprocess.run(["bash", str(ROOT / "docker" / "make-certs.sh"), str(certs)], check=True,
                       capture_output=True)
        return certs

    def superexec_secret(self) -> list[str]:
        """The SuperExec-authentication arguments (TLS variant): one shared secret for the
        SuperLink, the SuperNodes and every SuperExec attached to them."""
        if self.secret is None:
            return []
        return ["--superexec-auth-secret-file", str(self.secret)]

    def superlink(self) -> None:
        cmd = [tool("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
               "--database", str(self.work / "state.db"),
               "--disable-runtime-dependency-installation"]
        if self.tls:
            c = self.certs
            cmd += ["--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile",
                    str(c / "server.pem"), "--ssl-keyfile", str(c / "server.key")]
            self.secret = self.work / "superexec.secret"
            self.secret.write_bytes(secrets.token_hex(32).encode())
            self.secret.chmod(0o600)
        else:
            cmd += ["--insecure"]
        if self.auth:
            cmd += ["--enable-supernode-auth"]
        cmd += ["--isolation", self.isolation, *self.superexec_secret()]
        self.start("superlink", cmd)
        conn = {"address": f"127.0.0.1:{self.port}"}
        if self.tls:
            conn["root-certificates"] = str(self.certs / "ca.crt")
        else:
            conn["insecure"] = True
        lines = ["[superlink]", 'default = "local-deploy"', "", "[superlink.local-deploy]"]
        for k, v in conn.items():
            lines.append(f"{k} = {json.dumps(v)}")
        if self.tls:  # the Fleet address, to show that the Control API is not served there
            lines += ["", "[superlink.fleet-address]", f'address = "127.0.0.1:{self.fleet_port}"',
                      f"root-certificates = {json.dumps(str(self.certs / 'ca.crt'))}"]
        (self.work / "flwr-home" / "config.toml").write_text("\n".join(lines) + "\n")
        self.wait_ready(self.port, "superlink")
        if self.tls:
            c = self.certs
            self.start("gateway", [sys.executable, str(ROOT / "scripts" / "fleet_gateway.py"),
                                   "--listen", f"127.0.0.1:{self.fleet_port}", "--upstream",
                                   f"https://127.0.0.1:{self.port}", "--ca", str(c / "ca.crt"),
                                   "--certfile", str(c / "server.pem"),
                                   "--keyfile", str(c / "server.key")])
            self.wait_ready(self.fleet_port, "gateway")
        if self.isolation == "process":
            # the ServerApp's SuperExec, attached to the SuperLink's Runtime API
            self.start("superexec-serverapp", [tool("flower-superexec"), "--runtime-api-address",
                                               f"127.0.0.1:{self.port}", *self.link_tls(),
                                               *self.superexec_secret()])

    def link_tls(self) -> list[str]:
        return ["--root-certificates", str(self.certs / "ca.crt")] if self.tls else ["--insecure"]

    def wait_ready(self, port: int, name: str, timeout: float = 60.0) -> None:
        proc = dict(self.procs)[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    time.sleep(1.0)
                    return
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited; see {self.work / 'logs' / f'{name}.log'}")
            time.sleep(0.5)
        raise SystemExit(f"{name} did not open its port in time")

    def keypair(self, name: str) -> Path:
        key = self.work / "keys" / name
        key.parent.mkdir(exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(key)],
                       check=True)
        return key

    def register(self, names: list[str]) -> None:
        """Make a key pair per node and register the public keys, all at once."""
        keys = [self.keypair(name) for name in names]
        procs = [subprocess.Popen([tool("flwr"), "supernode", "register", f"{key}.pub",
                                   "local-deploy", "--name", name], env=self.env, cwd=ROOT)
                 for name, key in zip(names, keys, strict=True)]
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=120))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        failed = [name for name, code in zip(names, codes, strict=True) if code != 0]
        if failed:
            raise SystemExit(f"flwr supernode register failed for {', '.join(failed)}")

    def supernode(self, i: int, n: int, probe: str = "") -> subprocess.Popen[bytes]:
        """Start node ``i`` of ``n`` (TLS variant: with its registered key), or a probe
        that the SuperLink must refuse (no ClientApp SuperExec): ``unregistered`` (a key
        the SuperLink never saw), ``insecure`` (no TLS) or ``other-ca`` (a registered key,
        but it trusts another CA than the SuperLink's)."""
        name = f"probe-{probe}" if probe else f"supernode-{i}"
        port = free_port()
        cmd = [tool("flower-supernode"), "--superlink", f"127.0.0.1:{self.fleet_port}", "--port",
               str(port), "--node-config", f"partition-id={i} num-partitions={n}",
               "--max-retries", "3", "--max-wait-time", "30", "--isolation", self.isolation]
        if probe == "insecure":
            cmd += ["--insecure"]
        elif probe == "other-ca":
            other = self.work / "other-ca"
            subprocess.run(["bash", str(ROOT / "docker" / "make-certs.sh"), str(other)],
                           check=True, capture_output=True)
            cmd += ["--root-certificates", str(other / "ca.crt")]
        else:
            cmd += self.link_tls()
        if self.auth and probe != "insecure":
            key = self.work / "keys" / name
            if probe == "unregistered":
                key = self.keypair(name)
            elif not key.exists():
                raise RuntimeError(f"{name}: call register() before starting it")
            cmd += ["--auth-supernode-private-key", str(key)]
        proc = self.start(name, cmd + self.superexec_secret())
        if self.isolation == "process" and not probe:
            # the node's ClientApp SuperExec, attached to the node's Runtime API (127.0.0.1)
            self.start(f"superexec-clientapp-{i}", [tool("flower-superexec"), "--insecure",
                                                     "--runtime-api-address", f"127.0.0.1:{port}",
                                                     *self.superexec_secret()])
        return proc

    def refused(self, name: str, proc: subprocess.Popen[bytes], signs: tuple[str, ...],
                timeout: float = 120.0) -> bool:
        """Whether probe ``name`` was refused: it exited with an error and its log (or the
        SuperLink's) shows one of ``signs``."""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        logs = [(self.work / "logs" / f"{n}.log").read_text(errors="replace")
                for n in (name, "superlink")]
        ok = code is not None and any(sign in text for sign in signs for text in logs)
        print(f"[deploy] probe {name} exited ({code}): {'refused' if ok else 'NOT refused'}",
              flush=True)
        return ok

    def security_probes(self, n: int) -> dict[str, bool]:
        """Start every probe at once; return probe -> refused. Call after register()."""
        nodes = {p: self.supernode(n, n + 1, probe=p) for p in ("unregistered", "insecure",
                                                              "other-ca")}
        # a SuperExec without the shared secret must not attach to the Runtime API (it would
        # run the ServerApp, i.e. code of the operator's choosing, if it could)
        rogue = self.start("probe-superexec", [tool("flower-superexec"), "--runtime-api-address",
                                               f"127.0.0.1:{self.port}", *self.link_tls()])
        verdict = {
            # Flower reports a refused connection as exit code 305
            "unregistered": self.refused("probe-unregistered", nodes["unregistered"],
                                         ("Exit Code: 305",)),
            "insecure": self.refused("probe-insecure", nodes["insecure"],
                                     ("Failed to initialize the connection",)),
            "other-ca": self.refused("probe-other-ca", nodes["other-ca"],
                                     ("CERTIFICATE_VERIFY_FAILED",)),
            "superexec-without-secret": self.refused("probe-superexec", rogue,
                                                     ("SuperExec authentication failed",)),
        }
        # the Control API is not served on the Fleet address: flwr ls fails there, and a
        # Control call gets the gateway's 404 without reaching the SuperLink
        ls = self.flwr("ls", "fleet-address", "--format", "json", check=False, capture=True)
        ca = str(self.certs / "ca.crt")
        ctx = ssl.create_default_context(cafile=ca)
        req = urllib.request.Request(f"https://127.0.0.1:{self.fleet_port}/v1/control/list-runs",
                                     data=b"", method="POST")
        try:
            code = urllib.request.urlopen(req, context=ctx, timeout=30).status
        except urllib.error.HTTPError as exc:
            code = exc.code
        listed = ls.returncode == 0 and '"success": true' in ls.stdout
        verdict["control-on-fleet-address"] = code == 404 and not listed
        print(f"[deploy] Control API on the Fleet address: HTTP {code}, flwr ls there "
              f"{'listed runs' if listed else 'failed'}", flush=True)
        return verdict

    # -- the run ---------------------------------------------------------------
    def run(self, run_config: str, timeout: float) -> str:
        """Submit the app, stream it, and return the run's final status."""
        args = ["run", str(ROOT), "local-deploy", "--stream"]
        if run_config:
            args += ["--run-config", run_config]
        proc = subprocess.run([tool("flwr"), *args], env=self.env, cwd=ROOT, timeout=timeout)
        print(f"[deploy] flwr run exited with {proc.returncode}", flush=True)
        out = self.flwr("ls", "--format", "json", capture=True)
        runs = json.loads(out.stdout).get("runs", [])
        return max(runs, key=lambda r: r["pending-at"])["status"] if runs else "none"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--tls", action="store_true",
                   help="the secure variant: TLS, SuperNode and SuperExec authentication, "
                        "the SuperLink behind the Fleet-only gateway")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (implied by --tls)")
    p.add_argument("--run-config", default="", help='e.g. "strategy=\'fedprune\' num-server-rounds=2"')
    p.add_argument("--workdir", type=Path, help="keep certificates, keys, logs, db here")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the run")
    p.add_argument("--isolation", choices=("process", "subprocess"), default="process",
                   help="process: SuperExec processes beside SuperLink/SuperNodes, as in "
                        "docker/compose.yaml (default); subprocess: each starts its own apps")
    p.add_argument("--security-probes", action="store_true",
                   help="(needs --tls) also check that the SuperLink refuses a node with an "
                        "unregistered key, one without TLS, one trusting another CA and a "
                        "SuperExec without the shared secret, and that the Control API is not "
                        "served on the Fleet address")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fedprune-deploy-"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.security_probes and not args.tls:
        raise SystemExit("--security-probes needs --tls")
    dep = Deployment(work, args.tls, args.auth, args.isolation)
    status = "none"
    verdict: dict[str, bool] = {}
    try:
        if args.tls:
            dep.certs = dep.certificates()
        dep.superlink()
        if dep.auth:
            names = [f"supernode-{i}" for i in range(args.nodes)]
            dep.register(names + (["probe-other-ca"] if args.security_probes else []))
        for i in range(args.nodes):
            dep.supernode(i, args.nodes)
        if args.security_probes:  # while the real nodes start; read before the run
            verdict = dep.security_probes(args.nodes)
            if not all(verdict.values()):
                bad = [k for k, v in verdict.items() if not v]
                raise SystemExit(f"not refused: {', '.join(bad)}")
            print("[deploy] every security probe was refused", flush=True)
        status = dep.run(args.run_config, args.timeout)
    finally:
        dep.stop_all()
    print(f"[deploy] run status: {status}; logs in {work / 'logs'}", flush=True)
    ok = status == "finished:completed" and all(verdict.values())
    if not args.workdir and ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
