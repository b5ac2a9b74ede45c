//! STUB: test harness being written.
