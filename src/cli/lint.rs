//! `ingest-gateway lint [ROUTE...]` (also `check-config --lint`, and after `import-openapi`):
//! each route's request templates rendered against generated requests and checked against
//! what the route's service accepts (see [`crate::lint`]). Exit status 1 when a route has
//! findings. It never calls AWS.

use std::path::Path;

use serde_json::Value as Json;

use crate::cli::render::{Outcome, facts_of, render_with};
use crate::config::{self, Config};
use crate::lint::{self, Finding, Subject};

/// Lints the configuration's routes (or those named, as `"METHOD /path"`) and prints the
/// findings; whether there were none.
pub fn run(config_path: &Path, routes: &[String]) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for wanted in routes {
        if !config.routes.iter().any(|r| matches(&r.name(), wanted)) {
            anyhow::bail!("no route {wanted:?} in {}", config_path.display());
        }
    }
    let report = lint_config(&config, routes)?;
    print!("{}", report.text);
    Ok(report.findings == 0)
}

/// What a lint found, as printed.
pub struct Report {
    pub text: String,
    pub findings: usize,
    pub templates: usize,
}

fn matches(name: &str, wanted: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    norm(name).eq_ignore_ascii_case(&norm(wanted))
}

/// Lints every route (or those `only` names) of a loaded configuration.
pub fn lint_config(config: &Config, only: &[String]) -> anyhow::Result<Report> {
    let mut text = String::new();
    let (mut findings, mut templates) = (0, 0);
    for route in &config.routes {
        let name = route.name();
        if !only.is_empty() && !only.iter().any(|w| matches(&name, w)) {
            continue;
        }
        if route.integration.proxy {
            continue;
        }
        let model: Option<Json> = match &route.request_model {
            Some(p) => Some(serde_json::from_str(&std::fs::read_to_string(p)?)?),
            None => None,
        };
        let validator = model
            .as_ref()
            .and_then(|m| jsonschema::validator_for(m).ok());
        let accepts = |body: &Json| validator.as_ref().is_none_or(|v| v.is_valid(body));
        let facts = facts_of(config, route);
        for (media, file) in &route.request_templates {
            let source = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            templates += 1;
            let shown = file
                .strip_prefix(&config.base_dir)
                .unwrap_or(file)
                .display()
                .to_string();
            let subject = Subject {
                source: &source,
                expect: lint::expect(route.action),
                accepts: Some(&accepts),
                model: model.as_ref(),
            };
            let mut render =
                |request: &Json| match render_with(&shown, &source, request, media, Some(&facts)) {
                    Ok(Outcome::Rendered(out)) => Ok(out),
                    Ok(Outcome::TemplateError(e)) => Err(e),
                    Err(e) => Err(format!("{e:#}")),
                };
            for f in lint::lint(&subject, &mut render) {
                findings += 1;
                text.push_str(&describe(&name, &shown, media, &f));
            }
        }
    }
    if findings == 0 {
        text.push_str(&format!("lint: no findings ({templates} templates)\n"));
    } else {
        text.push_str(&format!(
            "lint: {findings} finding{} in {templates} templates\n",
            if findings == 1 { "" } else { "s" }
        ));
    }
    Ok(Report {
        text,
        findings,
        templates,
    })
}

fn describe(route: &str, file: &str, media: &str, f: &Finding) -> String {
    let (why, fix) = f.pitfall.explain();
    let mut out = format!("{route} ({file}, {media}): {}\n", f.pitfall.name());
    out.push_str(&format!("  {why}\n"));
    out.push_str(&format!(
        "  input body: {}\n",
        f.input["body"].as_str().unwrap_or("")
    ));
    let params = &f.input["params"]["querystring"];
    if params.as_object().is_some_and(|p| !p.is_empty()) {
        out.push_str(&format!("  parameters: {params}\n"));
    }
    out.push_str(&format!("  {}\n", f.detail));
    if !f.excerpt.is_empty() {
        let pad: String = f.excerpt.chars().take(f.caret).map(|_| ' ').collect();
        out.push_str(&format!("  output: {}\n          {pad}^\n", f.excerpt));
    }
    out.push_str(&format!("  fix: {fix}\n\n"));
    out
}
