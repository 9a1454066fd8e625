"""Workload: arrival processes, length distributions, trace readers, request streams."""
