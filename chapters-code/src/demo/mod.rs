//! What every demo binary shares: the command-line flags ([`DemoArgs`]), provenance of every
//! number ([`provenance`]), and the three output modes (text, JSON, terminal view).

pub mod args;
pub mod exit;
pub mod progress;
pub mod provenance;
pub mod replays;
pub mod report;
pub mod tui;

pub use args::{DemoArgs, ModelArgs, OutputMode, WorkloadArgs};
pub use provenance::Provenance;
pub use report::{Column, Report, Table};
