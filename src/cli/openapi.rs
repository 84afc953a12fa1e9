//! `ingest-gateway import-openapi FILE [--out DIR]` and `ingest-gateway export-openapi`.

use std::path::Path;

use crate::config;
use crate::openapi::{export, import};

/// Writes the imported gateway into `out` and prints the report; false (exit status 2) when
/// nothing could be imported.
pub fn import(file: &Path, out: &Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let doc = import::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let source = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let imported =
        import::import(&doc, &source).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let config = out.join("gateway.toml");
    if config.exists() {
        anyhow::bail!(
            "{} exists; choose another --out directory",
            config.display()
        );
    }
    std::fs::create_dir_all(out)?;
    for (name, text) in &imported.files {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
    }
    std::fs::write(&config, &imported.config)?;
    println!(
        "imported {} routes into {} ({} files)",
        imported.routes,
        config.display(),
        imported.files.len()
    );
    if !imported.notes.is_empty() {
        println!("\nnotes:");
        for n in &imported.notes {
            println!("  - {n}");
        }
    }
    if imported.untranslated.is_empty() {
        println!("\neverything in the document was translated");
    } else {
        println!("\nnot translated ({}):", imported.untranslated.len());
        for u in &imported.untranslated {
            println!("  - {u}");
        }
    }
    // The result must load as it will be served.
    match config::load(&config) {
        Ok(loaded) => {
            if let Err(errors) = crate::pipeline::compile_templates(&loaded) {
                println!("\nthe imported templates do not compile:");
                for e in errors {
                    println!("  {e}");
                }
                return Ok(false);
            }
            // What API Gateway would only say at request time, with a 500.
            match crate::cli::lint::lint_config(&loaded, &[]) {
                Ok(r) if r.findings > 0 => {
                    println!(
                        "\nthe imported templates break on some inputs (`ingest-gateway lint`):\n"
                    );
                    print!("{}", r.text);
                }
                Ok(r) => print!("\n{}", r.text),
                Err(e) => println!("\nlint could not run: {e:#}"),
            }
        }
        Err(e) => {
            println!("\nthe imported configuration does not load:\n{e}");
            return Ok(false);
        }
    }
    Ok(imported.routes > 0)
}

/// Prints the configuration's OpenAPI document, as `GET /openapi.json` serves it.
pub fn export(config_path: &Path) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let doc = export::document(&config, true).map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(true)
}
