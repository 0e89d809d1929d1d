"""End-to-end fixtures: milterd as a real process, a private Postfix on loopback, SMTP clients.

Adapted from the team's proven shell harness (postfix-harness.sh), in Python so the tests own
it. The Postfix instance is **private**: its own config, queue and data directories under a
fresh ``/tmp/milterd-e2e.*`` directory, listening on 127.0.0.1 only, delivering the test
domain to a Maildir inside that directory, and never touching ``/etc/postfix``. It is
started once per session; tests that need a different milter or ``milter_default_action``
use another smtpd service of the same instance (one ``master.cf`` line each, with ``-o``
overrides), so no test restarts Postfix. milterd is restarted (same port) when a test
wants a different configuration.

Pitfalls handled (each cost a debugging session in the shell harness):

* the temp dir must be 0755, or the ``postfix`` user cannot traverse it;
* no syslog in a sandbox: ``maillog_file`` under ``maillog_file_prefixes`` (else every
  postfix command exits 1 silently);
* our own ``master.cf`` with ``chroot=n`` and no outbound transports at all;
* every postfix command gets ``-c CONF``, or it talks to the system instance;
* virtual(8) refuses regexp ``$1`` maps, hence a ``texthash`` catch-all per domain;
* readiness is read from ``/proc/net/tcp``: a probing TCP connect would open a milter
  session and leave "lost connection after CONNECT" noise.

The tests claim a public-looking client address with XCLIENT, because real filters treat
127.0.0.1 as trusted and skip checks for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import email.parser
import email.policy
import functools
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from email.message import Message

    import pytest

T = TypeVar("T")

CLIENT_IP = "203.0.113.5"  # TEST-NET-3: public-looking, never routed
CLIENT_HELO = "mail.sender.test"
DOMAIN = "example.test"
RCPT = f"rcpt@{DOMAIN}"
SENDER = "alice@sender.test"
WAIT = 15.0  # seconds: upper bound for anything an external process must do
GTUBE_TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"

# -- small helpers ----------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """Poll ``probe`` (an external process's state) until it returns a value, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, without connecting to it."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":  # 0A = LISTEN
            return True
    return False


def message(
    subject: str = "lunch on friday",
    body: str = "shall we have lunch on friday?",
    *,
    extra_headers: str = "",
    msgid: str | None = None,
) -> bytes:
    """A small, clean RFC 5322 message with CRLF line ends."""
    msgid = msgid or f"<{time.monotonic_ns()}@sender.test>"
    text = (
        f"From: Alice <{SENDER}>\n"
        f"To: {RCPT}\n"
        f"Subject: {subject}\n"
        "Date: Mon, 17 Nov 2025 10:00:00 +0000\n"
        f"Message-ID: {msgid}\n"
        f"{extra_headers}"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        f"Hello,\n\n{body}\n\nAlice\n"
    )
    return text.replace("\n", "\r\n").encode()


def gtube(letter: str, subject: str = "test message") -> bytes:
    """A message carrying the GTUBE string that starts with ``letter`` (X, Y, Z or A)."""
    return message(subject, f"This is a test.\n{letter}{GTUBE_TAIL}\n")


def dump_logs(request: pytest.FixtureRequest, tmp_path: Path, logs: dict[str, str]) -> None:
    """Keep the logs of a failed test: written under tmp_path and printed (tail)."""
    for name, text in logs.items():
        path = tmp_path / name
        path.write_text(text)
        lines = text.splitlines()
        print(f"==== {name}: {len(lines)} lines, saved to {path}; last 80: ====")
        print("\n".join(lines[-80:]))


# -- milterd ----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the test process dies without its teardown."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Milterd:
    """``milterd run`` as a child process on a fixed 127.0.0.1 port, restartable with new config."""

    def __init__(
        self, workdir: Path, port: int, *, dns: str | None = None, http: bool = False
    ) -> None:
        """``dns``: the nameserver (host:port) milterd asks; ``http``: keep the scan API and
        controller listeners the config names (off by default: their defaults are fixed
        ports, and several daemons run at once)."""
        self.workdir = workdir
        self.port = port
        self.dns = dns
        self.http = http
        self.address = f"127.0.0.1:{port}"
        self.log_path = workdir / "milterd.log"
        self.log_path.touch()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: str | None = None
        self.exit_problems: list[str] = []
        self.extra_listen: list[str] = []
        self._starts = 0

    def add_listen(self, address: str) -> None:
        """Listen on ``address`` too (``unix:/path``), from the next start on."""
        self.extra_listen.append(address)
        self.stop()

    def use(self, config: str) -> Milterd:
        """Make sure milterd runs with ``config`` (TOML for milterd.toml); restart if it differs."""
        if self.proc is not None and self.proc.poll() is None and config == self.config:
            return self
        self.stop()
        self._starts += 1
        config_dir = self.workdir / f"config-{self._starts}"
        config_dir.mkdir()
        (config_dir / "milterd.toml").write_text(config)
        offset = self.log_offset()
        env = {**os.environ, "MILTERD_DATA_DIR": str(self.workdir / "data")}
        if self.dns is not None and "[dns]" not in config:
            # The variable outranks milterd.toml: a test that names its own server wins.
            env["MILTERD_DNS_NAMESERVERS"] = self.dns
        env.pop("MILTERD_MILTER_LISTEN", None)
        with self.log_path.open("ab") as log:
            log.write(f"---- milterd start #{self._starts} with config:\n{config}----\n".encode())
            log.flush()
            listen = [arg for a in (self.address, *self.extra_listen) for arg in ("--listen", a)]
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "milterd",
                    "run",
                    "--config-dir",
                    str(config_dir),
                    *listen,
                    *([] if self.http else ["--http-listen", "off", "--controller-listen", "off"]),
                    "--log-level",
                    "info",
                ],
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # one FFI call in the child: no locks taken
                stdout=log,
                stderr=log,
                env=env,
            )
        self.config = config
        ready = [f"milter listening on {a}" for a in (self.address, *self.extra_listen)]

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"milterd exited with {self.proc.returncode} at start:\n"
                    + self.log_text(offset)
                )
            text = self.log_text(offset)
            return all(line in text for line in ready)

        wait_for(f"milterd to print {ready!r}", up)
        return self

    def stop(self) -> None:
        """SIGTERM (drain) and wait; a non-zero exit is recorded as a problem."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            self.exit_problems.append(f"milterd died on its own with status {proc.returncode}")
            return
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait(timeout=WAIT)
            self.exit_problems.append("milterd did not exit within 15 s of SIGTERM")
        if status != 0:
            self.exit_problems.append(f"milterd exited with status {status} after SIGTERM")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_text(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern: str, offset: int = 0) -> re.Match[str]:
        return wait_for(
            f"milterd log line /{pattern}/", lambda: re.search(pattern, self.log_text(offset))
        )


def error_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


# -- Postfix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the SMTP client saw: the decisive reply (the first failure, or the DATA answer)."""

    code: int
    text: str
    queue_id: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def _decode(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.splitlines())


class Postfix:
    """A private Postfix instance: ``up`` once, ``down`` at the end; see the module docstring."""

    MASTER_SERVICES = """\
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
virtual    unix  - n n -    - virtual
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

    def __init__(self, milter: str, services: dict[str, dict[str, str]]) -> None:
        """``milter``: main.cf ``smtpd_milters``; ``services``: name → ``-o`` overrides.

        Service ``"main"`` (no overrides) is always there.
        """
        self.milter = milter
        self.services = {"main": {}, **services}
        self.ports = {name: free_port() for name in self.services}
        self.dir: Path | None = None

    @property
    def conf(self) -> str:
        assert self.dir is not None
        return str(self.dir / "etc")

    @property
    def maildir(self) -> Path:
        assert self.dir is not None
        return self.dir / "mail" / DOMAIN / "new"

    @property
    def milter_socket(self) -> Path:
        assert self.dir is not None
        return self.dir / "spool" / "milterd" / "milter.sock"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "log" / "maillog"

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", self.conf, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            env={**os.environ, "PATH": SBIN},
        )

    def up(self) -> None:
        reap_stale_instances()
        d = Path(tempfile.mkdtemp(prefix=INSTANCE_PREFIX, dir="/tmp"))
        self.dir = d
        d.chmod(0o755)  # the postfix user must traverse it
        (d / "owner.pid").write_text(f"{os.getpid()}\n")
        for sub in ("etc", "spool", "data", "mail", "log"):
            (d / sub).mkdir()
        shutil.chown(d / "data", "postfix", "postfix")
        shutil.chown(d / "mail", "nobody", "nogroup")  # virtual(8) delivers as 65534
        (d / "etc" / "vmailbox").write_text(f"@{DOMAIN}  {DOMAIN}/\n")
        (d / "etc" / "main.cf").write_text(f"""\
# private e2e instance, generated by tests/e2e/conftest.py
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.e2e.test
mydomain = e2e.test
myorigin = $myhostname
biff = no
append_dot_mydomain = no
readme_directory = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled in e2e tests
default_transport = error:5.7.1 outbound delivery disabled in e2e tests
relay_transport = error:5.7.1 outbound delivery disabled in e2e tests
alias_maps =
alias_database =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = texthash:{d}/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
# the milter under test; macros are left at Postfix's defaults: milterd asks for its own
smtpd_milters = {self.milter}
non_smtpd_milters =
milter_protocol = 6
milter_default_action = tempfail
milter_connect_timeout = 5s
milter_command_timeout = 10s
milter_content_timeout = 30s
maillog_file = {d}/log/maillog
maillog_file_prefixes = /var, /dev/stdout, {d}/log
""")
        lines = []
        for name, overrides in self.services.items():
            opts = "".join(f" -o {k}={v}" for k, v in overrides.items())
            lines += [f"# {name}", f"127.0.0.1:{self.ports[name]} inet n - n - - smtpd{opts}"]
        (d / "etc" / "master.cf").write_text("\n".join(lines) + "\n" + self.MASTER_SERVICES)
        # a home for milterd's unix socket inside the queue directory, where chrooted and
        # unchrooted Postfix daemons alike find it as "milterd/milter.sock" (they chdir
        # there); setgid group postfix, so the socket milterd creates is group postfix
        (d / "spool" / "milterd").mkdir(parents=True)
        shutil.chown(d / "spool" / "milterd", "root", "postfix")
        (d / "spool" / "milterd").chmod(0o2750)
        try:
            self._postfix("check")
            self._postfix("start")
            for name, port in self.ports.items():
                wait_for(
                    f"smtpd service {name!r} to listen on 127.0.0.1:{port}",
                    functools.partial(is_listening, port),
                )
        except BaseException:
            print(self.log_text())
            self.down()
            raise

    def down(self) -> None:
        if self.dir is not None:
            stop_instance(self.dir)
            self.dir = None

    # -- looking at the instance --

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, offset: int = 0) -> re.Match[str]:
        return wait_for(
            f"Postfix log line /{pattern}/", lambda: re.search(pattern, self.log_text(offset))
        )

    def postconf(self, name: str) -> str:
        out = subprocess.run(
            ["postconf", "-c", self.conf, "-h", name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env={**os.environ, "PATH": SBIN},
        )
        return out.stdout.strip()

    def queue(self) -> dict[str, str]:
        """queue id → queue name (``hold``, ``deferred``, ``active``, ``incoming``)."""
        out = subprocess.run(
            ["postqueue", "-c", self.conf, "-j"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env={**os.environ, "PATH": SBIN},
        )
        entries = (json.loads(line) for line in out.stdout.splitlines() if line.strip())
        return {e["queue_id"]: e["queue_name"] for e in entries}

    def queued_headers(self, queue_id: str) -> Message:
        out = subprocess.run(
            ["postcat", "-c", self.conf, "-h", "-q", queue_id],
            capture_output=True,
            check=True,
            timeout=30,
            env={**os.environ, "PATH": SBIN},
        )
        return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(out.stdout)

    def find_delivered(self, queue_id: str) -> Path | None:
        """The delivered copy whose Received: header names ``queue_id``, if any yet."""
        needle = re.compile(rb"\sid " + re.escape(queue_id.encode()) + rb"[;\s]")
        if not self.maildir.is_dir():
            return None
        for path in self.maildir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if needle.search(path.read_bytes()):
                    return path
        return None

    def delivered(self, queue_id: str) -> Message:
        """Wait (bounded) for the delivered copy of ``queue_id`` and parse it."""
        path = wait_for(
            f"delivery of {queue_id} to {self.maildir}", lambda: self.find_delivered(queue_id)
        )
        return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(path.read_bytes())

    # -- talking to it --

    def _greet(
        self, smtp: smtplib.SMTP, service: str, client_ip: str | None, helo: str
    ) -> Reply | None:
        """Connect, EHLO and (with ``client_ip``) XCLIENT + EHLO; the failing reply, if any."""
        code, text = smtp.connect("127.0.0.1", self.ports[service])
        if code != 220:
            return Reply(code, _decode(text))
        code, text = smtp.ehlo(helo)
        if code != 250:
            return Reply(code, _decode(text))
        if client_ip is None:
            return None
        if not smtp.has_extn("xclient"):
            raise AssertionError("XCLIENT not offered (smtpd_authorized_xclient_hosts)")
        # NAME= is the verified reverse name the milter sees; the real one would be localhost
        code, text = smtp.docmd("XCLIENT", f"ADDR={client_ip} NAME={helo} HELO={helo}")
        if code != 220:
            return Reply(code, _decode(text))
        smtp.ehlo_resp = None
        code, text = smtp.ehlo(helo)  # XCLIENT resets the session: EHLO again
        return None if code == 250 else Reply(code, _decode(text))

    @contextlib.contextmanager
    def session(
        self, service: str = "main", *, client_ip: str | None = CLIENT_IP, helo: str = CLIENT_HELO
    ) -> Iterator[smtplib.SMTP]:
        """An SMTP session past EHLO (and XCLIENT), ready for MAIL FROM."""
        smtp = smtplib.SMTP(timeout=WAIT + 30)
        try:
            failed = self._greet(smtp, service, client_ip, helo)
            assert failed is None, f"SMTP session setup refused: {failed}"
            yield smtp
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            smtp.close()

    def send(
        self,
        data: bytes,
        service: str = "main",
        *,
        client_ip: str | None = CLIENT_IP,
        sender: str = SENDER,
        rcpt: str = RCPT,
    ) -> Reply:
        """One message in a new SMTP session; returns the decisive reply."""
        smtp = smtplib.SMTP(timeout=WAIT + 30)
        try:
            failed = self._greet(smtp, service, client_ip, CLIENT_HELO)
            if failed is not None:
                return failed
            return transaction(smtp, data, sender=sender, rcpt=rcpt)
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            smtp.close()


def transaction(
    smtp: smtplib.SMTP, data: bytes, *, sender: str = SENDER, rcpt: str = RCPT
) -> Reply:
    """MAIL, RCPT, DATA on an open session; the first failing reply, or the answer to DATA.

    After a failure the session is RSET, so another transaction may follow.
    """
    code, text = smtp.mail(sender)
    if code == 250:
        code, text = smtp.rcpt(rcpt)
    if code != 250:
        smtp.rset()
        return Reply(code, _decode(text))
    try:
        code, text = smtp.data(data)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
        smtp.rset()
        return Reply(exc.smtp_code, _decode(exc.smtp_error))
    reply = _decode(text)
    found = re.search(r"queued as ([0-9A-Za-z]+)", reply)
    return Reply(code, reply, found.group(1) if found and code == 250 else None)


INSTANCE_PREFIX = "milterd-e2e."


def stop_instance(d: Path) -> None:
    """Stop the Postfix instance living in ``d`` and remove ``d``."""
    conf = str(d / "etc")
    pid_file = d / "spool" / "pid" / "master.pid"
    try:
        pid = int(pid_file.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    env = {**os.environ, "PATH": SBIN}
    subprocess.run(["postfix", "-c", conf, "stop"], capture_output=True, timeout=60, env=env)
    if pid and not _wait_gone(pid, 10.0):
        subprocess.run(["postfix", "-c", conf, "abort"], capture_output=True, timeout=60, env=env)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # any child of this instance that outlived the master carries MAIL_CONFIG=<its etc dir>
    marker = f"MAIL_CONFIG={conf}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGTERM)
    shutil.rmtree(d, ignore_errors=True)


def reap_stale_instances() -> None:
    """Stop instances left by test runs that were killed before their teardown ran."""
    for d in Path("/tmp").glob(INSTANCE_PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not _pid_alive(owner):
            stop_instance(d)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def postfix_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the Postfix master runs as root and virtual(8) switches users"
    if shutil.which("postfix", path=SBIN) is None:
        return "Postfix is not installed (`make test-deps` installs it on Debian)"
    for user in ("postfix", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"user {user!r} missing (the postfix package creates 'postfix')"
    return None


class GarbageMilter:
    """A 'milter' that accepts connections and answers with bytes that are no milter packet."""

    REPLY = b"HTTP/1.0 400 Bad Request\r\n\r\n"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="garbage-milter", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(4096)  # the MTA's OPTNEG
                    conn.sendall(self.REPLY)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@dataclass
class MilterEndpoints:
    """Milter addresses other than milterd: one refusing connections, one speaking garbage."""

    dead_port: int
    garbage: GarbageMilter
