"""Simulators, load generators and benchmark harnesses; never imported by the gateway."""
