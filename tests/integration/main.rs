//! Integration tests: one test binary that drives the real `wirechat` executable over real
//! sockets on loopback, with ephemeral ports and event-driven waits (never sleeps).
//!
//! They assume a Unix system (signals, process groups, terminals through tmux); on Windows
//! only the library's unit tests are built.
#![cfg(unix)]

mod room;
mod util;

mod demo;
mod errors;
mod tcp;
mod terminal;
mod trace;
mod udp;
