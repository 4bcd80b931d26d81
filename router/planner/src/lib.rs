//! wisp-planner: the pure consolidation planner (no I/O, no clock).
