//! The simulated agent, run as a process and read with the real parser.

mod processes;
mod replays;
mod runs;
mod sessions;
mod sim;
