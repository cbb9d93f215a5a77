"""Connector scripts shipped with actorflow, and the library they are written with.

Each script runs beside a worker: ``python -m actorflow.connectors.<name>
--application-module APP --connector NAME --NAME-<param> value ...``.
"""
