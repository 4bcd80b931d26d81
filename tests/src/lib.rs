//! wisp-tests: the lab and the end-to-end scenarios.
