"""Field-device simulators: pymodbus slaves per site type, run in-process or as a subprocess."""
