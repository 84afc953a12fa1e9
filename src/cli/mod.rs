//! Command-line adapters over the library modules. They parse files and flags, call the
//! same code the server runs, and format the outcome for a terminal.

pub mod check_config;
pub mod iam_policy;
pub mod keys;
pub mod lint;
pub mod openapi;
pub mod provision;
pub mod reload;
pub mod render;
pub mod sdk;
pub mod serve;
pub mod spool;
