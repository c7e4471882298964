//! What every demo binary shares: the command-line flags ([`DemoArgs`]), provenance of every
//! number ([`provenance`]), and the two output modes (text, JSON).

pub mod alloc_meter;
pub mod args;
pub mod chat;
pub mod exit;
pub mod progress;
pub mod provenance;
pub mod replays;
pub mod report;

pub use args::{DemoArgs, ModelArgs, OutputMode, WorkloadArgs};
pub use provenance::Provenance;
pub use report::{Column, Report, Table};
