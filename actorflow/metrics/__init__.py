"""Metrics: the report format workers send (:mod:`actorflow.metrics.report`) and the hub
that receives the reports, aggregates them and serves a live page, a Prometheus
endpoint and JSON (:mod:`actorflow.metrics.hub`, ``actorflow metrics``)."""
