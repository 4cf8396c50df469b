"""The gateway daemon: config, poll scheduler, readings, rules, store and the main task tree."""
