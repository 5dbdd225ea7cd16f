"""``dpsynth admin set-tenant|workers``: the operator's view of the queue and its workers."""

from __future__ import annotations

import argparse

from service.core import audit, worker_registry
from service.core.config import get_settings
from service.core.db import make_engine, make_sessionmaker, transaction
from service.server_commands import tenant_named


def admin_set_tenant(args: argparse.Namespace) -> int:
    """Set a tenant's priority and running-jobs limit (operator only: tenants share the workers)."""
    if args.priority is None and args.max_running_jobs is None:
        print("nothing to change: give --priority and/or --max-running-jobs")
        return 2
    settings = get_settings()
    with transaction(make_sessionmaker(make_engine(settings.database))) as session:
        tenant = tenant_named(session, args.tenant)
        if args.priority is not None:
            tenant.priority = args.priority
        if args.max_running_jobs is not None:
            tenant.max_running_jobs = None if args.max_running_jobs == "default" else args.max_running_jobs
        audit.append(
            session,
            action="tenant.queue_settings",
            actor="operator",
            tenant_id=tenant.id,
            object_type="tenant",
            object_id=tenant.id,
            details={"priority": tenant.priority, "max_running_jobs": tenant.max_running_jobs},
        )
        limit = tenant.max_running_jobs or settings.tenant_max_running_jobs
        print(
            f"tenant {tenant.name}: priority {tenant.priority}, "
            f"at most {limit if limit is not None else 'unlimited'} running jobs"
        )
    return 0


def admin_workers(_args: argparse.Namespace) -> int:
    """List workers with their device and queues; alive = seen within three reconcile sweeps."""
    settings = get_settings()
    with transaction(make_sessionmaker(make_engine(settings.database))) as session:
        workers = worker_registry.listing(session, alive_within=3 * settings.reconcile_seconds)
    if not workers:
        print("no worker has started yet")
        return 0
    for w in workers:
        state = "alive" if w.alive else "gone"
        print(
            f"{w.name}  {state}  {w.device}  queues {w.queues}  running {w.running_jobs}  "
            f"last seen {w.seen_at:%Y-%m-%d %H:%M:%S}"
        )
    return 0
