"""The fleet: replica engine loops (SimPy), routers, and the cluster that wires a scenario."""
