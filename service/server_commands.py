"""``dpsynth serve|worker|migrate|admin``: commands that run the service itself."""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import getpass
import logging
import os
import signal
import subprocess
import sys

from sqlalchemy.orm import Session

from service.core import audit
from service.core.config import get_settings
from service.core.datasets import erase_expired
from service.core.db import make_engine, make_sessionmaker, transaction
from service.core.errors import InvalidRequestError
from service.core.migrate import upgrade
from service.core.orm import Role, Tenant
from service.core.security import (
    check_new_password,
    create_key,
    create_tenant,
    create_user,
    generate_password,
)
from service.core.storage import Storage


def migrate(_args: argparse.Namespace) -> int:
    """Bring the database to the newest schema."""
    settings = get_settings()
    upgrade(settings.database)
    print(f"database at {settings.database} is up to date")
    return 0


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the parent dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def serve(args: argparse.Namespace) -> int:
    """Migrate, start an embedded worker process, then serve the API until interrupted."""
    import uvicorn

    from service.api.main import create_app
    from workers.app import celery_app, declare_queues, prepare_broker
    from workers.reconciler import Reconciler

    settings = get_settings()
    settings.check_production()
    upgrade(settings.database)
    prepare_broker(settings)
    declare_queues(celery_app)
    # Sweeps expired leases even when no worker is left alive to do it, and ended retention periods.
    sessions = make_sessionmaker(make_engine(settings.database))
    storage = Storage(settings.storage)
    reconciler = Reconciler(
        sessions,
        settings.reconcile_seconds,
        celery_app,
        settings.resend_seconds,
        on_sweep=lambda: erase_expired(sessions, storage),
    )
    reconciler.start()
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"],
            env=os.environ.copy(),
            preexec_fn=_die_with_parent,
        )
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it runs the
    # finally below (stopping the worker) instead of killing this process on the spot.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(
        f"dpsynth: API on http://{args.host}:{args.port} (docs at /docs), data in {settings.data_dir}",
        flush=True,
    )
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    finally:
        reconciler.stop()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def worker(args: argparse.Namespace) -> int:
    """A Celery worker that trains one job at a time, plus the lease reconciler.

    It reports its device and queues in the workers table (refreshed every sweep), and
    serves its queues preferred first; see ``workers.profile``.
    """
    from service.core import worker_registry
    from workers.app import broker_queue, celery_app, declare_queues, prepare_broker
    from workers.reconciler import Reconciler
    from workers.tasks import profile, worker_identity

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    me, mine = worker_identity(), profile()
    sessions = make_sessionmaker(make_engine(settings.database))
    with transaction(sessions) as session:
        worker_registry.register(session, me, device=mine.description, queues=mine.queues)
    prepare_broker(settings)
    declare_queues(celery_app)

    storage = Storage(settings.storage)

    def housekeeping() -> None:
        with transaction(sessions) as session:
            worker_registry.seen(session, me)
        erase_expired(sessions, storage)

    reconciler = Reconciler(
        sessions, settings.reconcile_seconds, celery_app, settings.resend_seconds, on_sweep=housekeeping
    )
    reconciler.start()
    print(f"dpsynth worker {me}: {mine.description}, queues {','.join(mine.queues)}", flush=True)
    try:
        celery_app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                f"--queues={','.join(broker_queue(queue) for queue in mine.queues)}",
                f"--hostname=dpsynth-{me.replace(':', '-')}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        reconciler.stop()
        with contextlib.suppress(Exception), transaction(sessions) as session:
            worker_registry.stopped(session, me)
    return 0


def _operator_tenant(session: Session, name: str) -> Tenant:
    """A new tenant made by the operator, audited."""
    tenant = create_tenant(session, name)
    audit.append(
        session,
        action="tenant.created",
        actor="operator",
        tenant_id=tenant.id,
        object_type="tenant",
        object_id=tenant.id,
    )
    return tenant


def admin_create_tenant(args: argparse.Namespace) -> int:
    """Create a tenant (directly in the database; the operator's bootstrap step)."""
    settings = get_settings()
    upgrade(settings.database)
    with transaction(make_sessionmaker(make_engine(settings.database))) as session:
        tenant = _operator_tenant(session, args.name)
    print(tenant.id)
    return 0


def tenant_named(session: Session, name_or_id: str) -> Tenant:
    """The tenant with this name or id.

    Raises:
        InvalidRequestError: there is none.
    """
    tenant = (
        session.get(Tenant, name_or_id) or session.query(Tenant).filter(Tenant.name == name_or_id).first()
    )
    if tenant is None:
        raise InvalidRequestError(f"no tenant {name_or_id!r}; create it with dpsynth admin create-tenant")
    return tenant


def _operator_key(session: Session, tenant_id: str, role: Role, name: str) -> str:
    """A new API key made by the operator, audited; returns its token."""
    key, token = create_key(session, tenant_id=tenant_id, role=role, name=name)
    audit.append(
        session,
        action="key.created",
        actor="operator",
        tenant_id=tenant_id,
        object_type="api_key",
        object_id=key.id,
        details={"role": role.value},
    )
    return token


def admin_create_key(args: argparse.Namespace) -> int:
    """Create an API key for a tenant (by name or id) and print its token once."""
    settings = get_settings()
    upgrade(settings.database)
    with transaction(make_sessionmaker(make_engine(settings.database))) as session:
        tenant = tenant_named(session, args.tenant)
        token = _operator_key(session, tenant.id, Role(args.role), args.name or args.role)
    print(token)
    return 0


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set and whether it was generated (and must be printed)."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.generate_password or not sys.stdin.isatty():
        return generate_password(), True
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise InvalidRequestError("the two passwords differ")
    check_new_password(password)
    return password, False


def _audit_user(session: Session, user_id: str, tenant_id: str, role: Role) -> None:
    audit.append(
        session,
        action="user.created",
        actor="operator",
        tenant_id=tenant_id,
        object_type="user",
        object_id=user_id,
        details={"role": role.value},
    )


def admin_create_user(args: argparse.Namespace) -> int:
    """Create a web user in a tenant; the password comes from stdin, a prompt, or is generated.

    A generated password is printed once (stdin not a terminal, or ``--generate-password``).
    """
    password, generated = _new_password(args)
    settings = get_settings()
    upgrade(settings.database)
    with transaction(make_sessionmaker(make_engine(settings.database))) as session:
        tenant = tenant_named(session, args.tenant)
        user = create_user(
            session, tenant_id=tenant.id, role=Role(args.role), name=args.name, password=password
        )
        _audit_user(session, user.id, tenant.id, user.role)
    print(f"created {user.role.value} {user.name!r} in tenant {tenant.name!r}")
    if generated:
        print(f"password (shown once): {password}")
    return 0


BOOTSTRAP_FILE = "bootstrap-keys.txt"


def admin_bootstrap(_args: argparse.Namespace) -> int:
    """First run only: tenant "default", a key and a web user per role, printed and kept in data_dir (0600).

    Later runs find the tenant and only say where the keys are.
    """
    settings = get_settings()
    upgrade(settings.database)
    keys_file = settings.data_dir / BOOTSTRAP_FILE
    with transaction(make_sessionmaker(make_engine(settings.database))) as session:
        if session.query(Tenant).first() is not None:
            print(f"dpsynth: already set up; first-run keys are in {keys_file} (if nobody removed it)")
            return 0
        tenant = _operator_tenant(session, "default")
        lines = []
        for role in Role:
            token = _operator_key(session, tenant.id, role, f"first-run {role.value}")
            lines.append(f"{role.value:10} {token}")
        for role in Role:
            password = generate_password()
            user = create_user(session, tenant_id=tenant.id, role=role, name=role.value, password=password)
            _audit_user(session, user.id, tenant.id, role)
            lines.append(f"{role.value:10} web login {role.value!r}, password {password}")
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(
        "dpsynth: created tenant 'default' with one API key and one web login (http://HOST:PORT/ui/) "
        f"per role (shown once; also in {keys_file}):"
    )
    for line in lines:
        print(f"  {line}")
    return 0


def admin_new_key(_args: argparse.Namespace) -> int:
    """Print a fresh value for DPSYNTH_ENCRYPTION_KEY, DPSYNTH_SIGNING_KEY or DPSYNTH_SESSION_SECRET."""
    print(base64.b64encode(os.urandom(32)).decode())
    return 0


def health(_args: argparse.Namespace) -> int:
    """Exit 0 when the database and the broker answer, 1 with the reason otherwise.

    Container health checks run this; it never creates the database or its directory.
    """
    from sqlalchemy import text

    from workers.app import celery_app

    settings = get_settings()
    engine = make_engine(settings.database)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        with celery_app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"unhealthy: {reason}")
        return 1
    finally:
        engine.dispose()
    print("ok: database and broker answer")
    return 0
