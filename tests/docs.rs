//! The documentation's configuration snippets are configuration: every ```toml block of the
//! README and of `docs/` passes `check-config` (with the files it names present), so the
//! reference cannot drift from what the gateway accepts.

mod support;

use std::path::{Path, PathBuf};

/// Every ```toml block of a Markdown file, with the line it starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// The relative files a snippet names (templates, models, definitions).
fn named_files(snippet: &str) -> Vec<String> {
    snippet
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.contains("://") && !s.starts_with('/'))
        .filter(|s| s.ends_with(".vtl") || s.ends_with(".json"))
        .map(str::to_string)
        .collect()
}

/// The certificate (`.pem`) and key (`.key`) files a snippet names.
fn tls_files(snippet: &str) -> (Vec<String>, Vec<String>) {
    let quoted: Vec<String> = snippet
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let pems = quoted
        .iter()
        .filter(|s| s.ends_with(".pem"))
        .cloned()
        .collect();
    let keys = quoted
        .iter()
        .filter(|s| s.ends_with(".key"))
        .cloned()
        .collect();
    (pems, keys)
}

fn pages() -> Vec<PathBuf> {
    let root = support::repo();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.push(root.join("README.md"));
    pages
}

fn check(page: &Path, line: usize, snippet: &str) {
    let p = support::Project::custom("docs", snippet, &[]);
    for file in named_files(snippet) {
        let path = p.dir.join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "{}").unwrap();
    }
    // TLS snippets name certificates and keys: one self-signed pair serves for all.
    let (pems, keys) = tls_files(snippet);
    if !pems.is_empty() || !keys.is_empty() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        for (files, text) in [(pems, cert.pem()), (keys, key.serialize_pem())] {
            for file in files {
                let path = p.dir.join(&file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, &text).unwrap();
            }
        }
    }
    let out = p.cli(&["check-config"]);
    assert!(
        out.status.success(),
        "{}:{line}: the snippet does not pass check-config:\n{}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_configuration_snippet_passes_check_config() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (line, snippet) in toml_blocks(&text) {
            check(&page, line, &snippet);
            checked += 1;
        }
    }
    assert!(checked >= 2, "{checked} snippets");
}
