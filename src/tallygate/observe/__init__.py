"""Telling people what happened: alerts (thresholds, projections, spikes) and their webhooks,
Prometheus metrics, OpenTelemetry traces and JSON request logs, all as request observers and
services; nothing here runs inside the proxy's request path."""
