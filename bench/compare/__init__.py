"""Side by side with ThingsBoard IoT Gateway: `python -m bench.compare` (see __main__.py)."""
