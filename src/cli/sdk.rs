//! `ingest-gateway sdk --lang typescript|python [--out DIR]`: writes a client package for
//! the configured routes (see `sdk`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config;

pub fn run(config_path: &Path, lang: &str, out: Option<&Path>) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files = crate::sdk::generate(&config, lang).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = out.map_or_else(|| PathBuf::from(format!("sdk-{lang}")), Path::to_path_buf);
    for (path, text) in &files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    let build = match lang {
        "typescript" => "npx tsc -p",
        _ => "pip install",
    };
    eprintln!(
        "wrote the {lang} client for {} routes to {} (build: {build} {})",
        config.routes.len(),
        dir.display(),
        dir.display()
    );
    Ok(true)
}
