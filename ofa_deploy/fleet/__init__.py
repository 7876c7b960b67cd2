"""Working with many devices at once: deploying a bundle to a fleet, profiling one latency table in
shards over identical devices, and sending that work to device hosts through a Ray cluster.
See docs/fleet.md."""
