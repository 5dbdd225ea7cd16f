"""The service's persistence core: settings, database, storage, ledger and audit log.

Workers import this package (they update job rows and charge the ledger); it never
imports ``workers`` or ``service.api``.
"""
