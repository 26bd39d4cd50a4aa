//! Shared pieces of the benchmark drivers in `src/bin/` (one binary per
//! measurement; `benches/run` calls them). Not a library for users.
