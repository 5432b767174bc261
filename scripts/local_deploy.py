#!/usr/bin/env python3
"""Deploy fedprune on this machine as on real ones: a SuperLink and N SuperNodes.

    python scripts/local_deploy.py --nodes 3                       # insecure
    python scripts/local_deploy.py --nodes 3 --tls --auth           # TLS + SuperNode auth
    python scripts/local_deploy.py --nodes 3 --tls --auth \\
        --run-config "strategy='fedprune' num-server-rounds=2"

Every process is a Flower 1.41 Deployment Engine process on 127.0.0.1, in the
same topology as docker/compose.yaml: ``flower-superlink --isolation process``
(Fleet, Control and Runtime APIs on one port) with the ServerApp's
``flower-superexec``, and per client a ``flower-supernode --isolation process
--node-config "partition-id=i num-partitions=N"`` with its ClientApp
``flower-superexec``. With ``--tls`` a CA and a
server certificate (SANs localhost, 127.0.0.1) are made with openssl
(docker/make-certs.sh); with ``--auth`` (needs TLS) each node gets an ECDSA
key pair, its public key is registered with ``flwr supernode register``, and
the SuperLink only accepts registered nodes. The run is submitted with
``flwr run <app> local-deploy --stream``; its real status is read with
``flwr ls`` (``flwr run`` exits 0 even on failure). Every process started
here is stopped by PID at the end (SuperNodes first), also on failure.

Exit code 0 only if the run finished as ``finished:completed``.
``--unregistered-probe`` starts one extra node whose key was never
registered and checks that the SuperLink refuses it (the node exits and logs
Flower's exit code 305).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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
        self.work, self.tls, self.auth, self.isolation = work, tls, auth, isolation
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.port = free_port()
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
        order = ("superexec", "supernode", "superlink")
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

    def superlink(self) -> None:
        cmd = [tool("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
               "--database", str(self.work / "state.db"),
               "--disable-runtime-dependency-installation"]
        if self.tls:
            c = self.certs
            cmd += ["--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile",
                    str(c / "server.pem"), "--ssl-keyfile", str(c / "server.key")]
        else:
            cmd += ["--insecure"]
        if self.auth:
            cmd += ["--enable-supernode-auth"]
        cmd += ["--isolation", self.isolation]
        self.start("superlink", cmd)
        conn = {"address": f"127.0.0.1:{self.port}"}
        if self.tls:
            conn["root-certificates"] = str(self.certs / "ca.crt")
        else:
            conn["insecure"] = True
        lines = ["[superlink]", 'default = "local-deploy"', "", "[superlink.local-deploy]"]
        for k, v in conn.items():
            lines.append(f"{k} = {json.dumps(v)}")
        (self.work / "flwr-home" / "config.toml").write_text("\n".join(lines) + "\n")
        self.wait_ready()
        if self.isolation == "process":
            # the ServerApp's SuperExec, attached to the SuperLink's Runtime API
            tls = ["--root-certificates", str(self.certs / "ca.crt")] if self.tls else ["--insecure"]
            self.start("superexec-serverapp", [tool("flower-superexec"), "--runtime-api-address",
                                               f"127.0.0.1:{self.port}", *tls])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    time.sleep(1.0)
                    return
            if self.procs[0][1].poll() is not None:
                raise SystemExit(f"SuperLink exited; see {self.work / 'logs' / 'superlink.log'}")
            time.sleep(0.5)
        raise SystemExit("SuperLink did not open its port in time")

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

    def supernode(self, i: int, n: int, register: bool = True) -> subprocess.Popen[bytes]:
        """Start node ``i`` of ``n`` (with ``--auth``: with its key; ``register=False``: a
        key the SuperLink never saw, and no ClientApp SuperExec)."""
        name = f"supernode-{i}"
        port = free_port()
        cmd = [tool("flower-supernode"), "--superlink", f"127.0.0.1:{self.port}", "--port",
               str(port), "--node-config", f"partition-id={i} num-partitions={n}",
               "--max-retries", "3", "--max-wait-time", "30", "--isolation", self.isolation]
        cmd += ["--root-certificates", str(self.certs / "ca.crt")] if self.tls else ["--insecure"]
        if self.auth:
            key = self.work / "keys" / name
            if not register:
                key = self.keypair(name)
            elif not key.exists():
                raise RuntimeError(f"{name}: call register() before starting it")
            cmd += ["--auth-supernode-private-key", str(key)]
        proc = self.start(name, cmd)
        if self.isolation == "process" and register:
            # the node's ClientApp SuperExec, attached to the node's Runtime API
            self.start(f"superexec-clientapp-{i}", [tool("flower-superexec"), "--insecure",
                                                     "--runtime-api-address", f"127.0.0.1:{port}"])
        return proc

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
    p.add_argument("--tls", action="store_true")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (needs --tls)")
    p.add_argument("--run-config", default="", help='e.g. "strategy=\'fedprune\' num-server-rounds=2"')
    p.add_argument("--workdir", type=Path, help="keep certificates, keys, logs, db here")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the run")
    p.add_argument("--isolation", choices=("process", "subprocess"), default="process",
                   help="process: SuperExec processes beside SuperLink/SuperNodes, as in "
                        "docker/compose.yaml (default); subprocess: each starts its own apps")
    p.add_argument("--unregistered-probe", action="store_true",
                   help="also check that a node with an unregistered key is refused (needs --auth)")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fedprune-deploy-"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    dep = Deployment(work, args.tls, args.auth, args.isolation)
    status = "none"
    refused = None
    try:
        if args.tls:
            dep.certs = dep.certificates()
        dep.superlink()
        probe = None
        if args.unregistered_probe:
            if not args.auth:
                raise SystemExit("--unregistered-probe needs --auth")
            # the node with a key nobody registered tries to connect while the others'
            # keys are being registered; its verdict is read before the run
            probe = dep.supernode(args.nodes, args.nodes + 1, register=False)
        if args.auth:
            dep.register([f"supernode-{i}" for i in range(args.nodes)])
        for i in range(args.nodes):
            dep.supernode(i, args.nodes)
        if probe is not None:
            try:
                code = probe.wait(timeout=120)
            except subprocess.TimeoutExpired:
                code = None
            # Flower reports the refusal of an unregistered node as exit code 305
            text = (work / "logs" / f"supernode-{args.nodes}.log").read_text(errors="replace")
            refused = code is not None and code != 0 and "Exit Code: 305" in text
            print(f"[deploy] unregistered node exited ({code}): "
                  f"{'refused by the SuperLink (305)' if refused else 'NOT refused'}", flush=True)
            if not refused:
                raise SystemExit("the SuperLink did not refuse the unregistered node")
        status = dep.run(args.run_config, args.timeout)
    finally:
        dep.stop_all()
    print(f"[deploy] run status: {status}; logs in {work / 'logs'}", flush=True)
    ok = status == "finished:completed" and refused in (None, True)
    if not args.workdir and ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
