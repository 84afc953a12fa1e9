//! `ingest-gateway check-config`: the same validation `serve` runs, printing every problem
//! of a run once, as `file:line:col: message` with the line and a caret under the column:
//! the configuration's own problems, and those of every template and model that could be
//! read, in one run.

use std::path::Path;

use crate::config::{self, ConfigError};
use crate::pipeline;

/// Returns whether the configuration is valid.
pub fn run(path: &Path) -> bool {
    let (config, errors) = config::load_all(path);
    let mut problems: Vec<String> = errors.iter().map(located).collect();
    let mut summary = None;
    if let Some(config) = config {
        // A file the configuration could not use was reported already.
        let named = |p: &str| errors.iter().any(|e| e.message.contains(p));
        let mut more = Vec::new();
        if let Err(e) = crate::respond::gateway::GatewayResponses::compile(&config) {
            more.extend(e);
        }
        match pipeline::compile_templates(&config) {
            Ok(compiled) => {
                let templates: usize = compiled
                    .iter()
                    .map(|c| c.request_templates.len() + usize::from(c.responses.default.is_some()))
                    .sum();
                summary = Some((config.routes.len(), templates));
            }
            Err(e) => more.extend(e),
        }
        for m in more {
            let file = m.split(':').next().unwrap_or("");
            if !file.is_empty() && named(file) {
                continue;
            }
            problems.push(m);
        }
    }
    // A template two routes use fails once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    if problems.is_empty() {
        let (routes, templates) = summary.unwrap_or_default();
        println!(
            "{}: ok ({routes} routes, {templates} templates)",
            path.display()
        );
        return true;
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!(
        "{}: {} problem{}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    false
}

/// `file:line:col: message`, then the line and a caret under the column.
fn located(e: &ConfigError) -> String {
    let mut out = e.to_string();
    if let Some((line, col)) = e.at
        && let Ok(text) = std::fs::read_to_string(&e.file)
        && let Some(source) = text.lines().nth(line - 1)
    {
        let pad: String = source
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("\n  {source}\n  {pad}^"));
    }
    out
}
