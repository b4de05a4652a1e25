//! Integration tests: one test binary that drives the real `wirechat` executable over real
//! sockets on loopback, with ephemeral ports and event-driven waits (never sleeps).

mod trace;
// util's `Collected` type trips clippy's type_complexity under -D warnings.
#[allow(clippy::type_complexity)]
mod util;
