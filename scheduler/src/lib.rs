//! Berth's scheduler: queue → snapshot → filter/score → bind, an API client like any other.
//! Its hot path does no I/O and takes no global lock. Not yet built: see the scheduler issue.
