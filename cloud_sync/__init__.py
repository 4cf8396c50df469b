"""Uplink to the backend: signed SenML-CBOR batches over MQTT, and the backend's checks."""
