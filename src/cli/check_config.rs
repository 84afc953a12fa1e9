//! `ingest-gateway check-config`: the same validation `serve` runs, printing every problem
//! as `file:line:col: message`.

use std::path::Path;

use crate::config;
use crate::pipeline;

/// Returns whether the configuration is valid.
pub fn run(path: &Path) -> bool {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return false;
        }
    };
    if let Err(errors) = crate::respond::gateway::GatewayResponses::compile(&config) {
        for e in errors {
            eprintln!("{e}");
        }
        return false;
    }
    match pipeline::compile_templates(&config) {
        Ok(compiled) => {
            let templates: usize = compiled
                .iter()
                .map(|c| c.request_templates.len() + usize::from(c.responses.default.is_some()))
                .sum();
            println!(
                "{}: ok ({} routes, {templates} templates)",
                path.display(),
                config.routes.len()
            );
            true
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            false
        }
    }
}
