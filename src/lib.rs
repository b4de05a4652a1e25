//! # wirechat
//!
//! Talk to, test and learn TCP and UDP from one binary: the conversations of netcat, the text,
//! hex and GBK of a network assistant, a chat room, and the handshake ladder of a packet analyser.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap derive) and its translation into checked options.
//! - [`exit`]: the stable exit statuses and the mapping from errors to them.
//! - [`codec`]: bytes <-> text: encodings (encoding_rs), bounded line framing, hex in and out,
//!   sanitising of control characters for terminals, taking telnet commands out.
//! - [`transport`]: address specs, listeners and sockets (socket2 options), and on Linux the
//!   zero-copy pass-through (splice, sendfile) and batched UDP receive (recvmmsg).
//! - [`session`]: the conversation pump. Terminal input -> codec -> socket and socket -> codec ->
//!   terminal output run at once; events (listening, connected, peer closed) go to an event sink.
//!   The terminal side is a parameter: a pipe, an interactive line editor, or (in tests and the
//!   demo) in-memory streams.
//! - [`room`]: `wirechat room`, a chat room over TCP for many clients: a listener task, one
//!   task per client with a bounded send queue, shared state, commands and limits.
//! - [`trace`]: `wirechat trace`: capture (live AF_PACKET on Linux, or a pcap file), decode with
//!   etherparse, follow each TCP connection's states and print it as a ladder, layers or JSON.
//! - [`demo`]: the narrated walkthrough of the tutorial's conversations, built on the above.
//!
//! Data flows `stdin -> Outbound (hex parse | UTF-8 -> wire encoding | pass-through) -> socket`
//! and `socket -> Inbound (hexdump | wire encoding -> UTF-8 | sanitise) -> stdout`; events and
//! errors go to stderr so that stdout carries only data.

pub mod cli;
pub mod codec;
pub mod demo;
pub mod exit;
pub mod room;
pub mod session;
pub mod trace;
pub mod transport;

pub use cli::run;
pub use exit::Status;
