"""The dpsynth service: API, web form, CLI, database, ledger, audit and storage."""
